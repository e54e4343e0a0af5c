"""Completing one chunk of a map with the SSR-2D network.

The network reads the chunk with `context_voxels` of its neighbours on every side (a wall that runs
out of the chunk is continued from what lies beyond its faces) and its prediction is cut back to the
chunk. Outputs are what the map stores beside its observations: the completed TSDF, colour and the
most likely class with its probability.
"""

from __future__ import annotations

import numpy as np
import torch

from semantic_mapping.completion.network import CompletionNetwork, chunk_inputs


def context_shape(net: CompletionNetwork, chunk_shape: np.ndarray, context_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """(margin [3], padded shape [3]): the chunk grown by at least `context_voxels` per side, rounded up so
    that the padded shape is a multiple of the network's size multiple."""
    m = net.size_multiple
    padded = -(-(np.asarray(chunk_shape) + 2 * context_voxels) // m) * m
    margin = (padded - np.asarray(chunk_shape)) // 2
    return margin, padded


@torch.no_grad()
def complete_crop(net: CompletionNetwork, crop: dict) -> dict:
    """The network's prediction for a dense crop (`VoxelMap.read_region` arrays: tsdf, weight, color).

    Returns tsdf [X, Y, Z] float32 truncation-normalised, color [X, Y, Z, 3] uint8, labels [X, Y, Z]
    int32, label_probability [X, Y, Z] float32 (the softmax probability of that label) and observed
    [X, Y, Z] bool (the input's weight > 0).
    """
    device = next(net.parameters()).device
    tsdf, observed, color = chunk_inputs(crop, device)
    out = net(tsdf, observed, color)
    probs = torch.softmax(out["semantics"][0], dim=0)  # [C, X, Y, Z]
    label_probability, labels = probs.max(dim=0)
    result = {"tsdf": out["tsdf"][0].float().cpu().numpy(),
              "labels": labels.to(torch.int32).cpu().numpy(),
              "label_probability": label_probability.float().cpu().numpy(), "observed": crop["weight"] > 0}
    if "color" in out:
        result["color"] = (out["color"][0].permute(1, 2, 3, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    else:
        result["color"] = np.zeros((*result["tsdf"].shape, 3), np.uint8)
    return result


def complete_chunk(net: CompletionNetwork, voxel_map, chunk_index, context_voxels: int = 8, read=None) -> dict:
    """Prediction for map chunk `chunk_index` (arrays as `complete_crop`, cut to the chunk, plus
    origin_index [3] of its voxel [0, 0, 0]).

    `read(origin_index, shape) -> crop dict` reads the input; by default the map itself (`VoxelMap.read_region`).
    """
    chunk_shape = voxel_map.chunk_shape_voxels
    margin, padded = context_shape(net, chunk_shape, context_voxels)
    origin = np.asarray(chunk_index, np.int64) * chunk_shape
    crop = (read or voxel_map.read_region)(origin - margin, padded)
    result = complete_crop(net, crop)
    inside = tuple(slice(int(a), int(a + n)) for a, n in zip(margin, chunk_shape))
    out = {key: value[inside] for key, value in result.items()}
    out["origin_index"] = origin
    return out
