"""Which camera views see a surface point: the SDF visibility test of GNeSF (§4.2, Fig. 2b) on the fused TSDF.

Along the segment from a camera centre to a surface point x the SDF stays positive (free space) until
it crosses zero at x itself; an occluder shows up as negative SDF part-way along. Points and camera
centres are in metres, world frame.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from semantic_mapping.fusion.voxel_map import VoxelMap, pack_indices

_CORNERS = torch.tensor([[i & 1, (i >> 1) & 1, i >> 2] for i in range(8)])  # [8, 3] cell corner offsets


def sample_tsdf(vmap: VoxelMap, points_m) -> tuple[torch.Tensor, torch.Tensor]:
    """Trilinear TSDF at world points [M, 3] (numpy or torch): (sdf_m [M] float32 metres, valid [M] bool).

    A sample is valid where all 8 corners of its cell are allocated and observed (weight > 0);
    elsewhere it is unknown and sdf_m is NaN. Points are grouped by cell, and one `vmap.lookup` fetches
    the 8 corners of every distinct cell. CPU tensors out.
    """
    p = torch.as_tensor(points_m, dtype=torch.float64).reshape(-1, 3) / vmap.voxel_size_m  # [M, 3] voxel units
    base = torch.floor(p).long()  # [M, 3] lower corner of each point's cell
    frac = (p - base).float()  # [M, 3] position inside the cell
    key = torch.from_numpy(pack_indices(base.numpy()))  # [M] cell id
    unique_keys, cell_of = torch.unique(key, return_inverse=True)  # cell_of [M] indexes U distinct cells
    cells = base.new_empty(len(unique_keys), 3)
    cells[cell_of] = base  # [U, 3]
    flat, found = vmap.lookup((cells[:, None, :] + _CORNERS).reshape(-1, 3).numpy())  # U * 8 corners
    tsdf, weight = vmap._flat("tsdf"), vmap._flat("weight")
    index = torch.from_numpy(np.where(found, flat, 0)).to(tsdf.device)
    corner_sdf = (tsdf[index, 0].float().cpu() * vmap.sdf_trunc_m).reshape(-1, 8)  # [U, 8]
    observed = torch.from_numpy(found) & (weight[index, 0].to(torch.int32) > 0).cpu()  # [U * 8]
    valid = observed.reshape(-1, 8).all(dim=1)[cell_of]  # [M]
    wx, wy, wz = torch.stack([1.0 - frac, frac], dim=2).unbind(1)  # [M, 2] each: weights of the low, high corner
    w = (wz[:, :, None, None] * wy[:, None, :, None] * wx[:, None, None, :]).reshape(-1, 8)  # [M, 8], _CORNERS order
    return (w * corner_sdf[cell_of]).sum(dim=1).masked_fill(~valid, float("nan")), valid


def visible_from(
    vmap: VoxelMap,
    points_m,  # [P, 3] surface points, world frame
    cam_centres_m,  # [V, 3] camera centres, world frame
    **kwargs,
) -> torch.Tensor:  # [P, V] bool
    """Whether each point is visible from each camera centre: `visible_pairs` over all P x V pairs."""
    points = torch.as_tensor(points_m, dtype=torch.float64).reshape(-1, 3)
    cams = torch.as_tensor(cam_centres_m, dtype=torch.float64).reshape(-1, 3)
    P, V = len(points), len(cams)
    pairs = visible_pairs(vmap, points[:, None].expand(P, V, 3).reshape(-1, 3), cams[None].expand(P, V, 3).reshape(-1, 3),
                          **kwargs)
    return pairs.reshape(P, V)


def visible_pairs(
    vmap: VoxelMap,
    points_m,  # [K, 3] surface points, world frame
    cam_centres_m,  # [K, 3] the camera centre of each point's view, world frame
    step_m: Optional[float] = None,
    stop_short_m: Optional[float] = None,
    occluder_sdf_m: Optional[float] = None,
    max_samples: int = 1 << 19,
) -> torch.Tensor:  # [K] bool
    """Whether point k is visible from camera centre k, judged on the fused TSDF.

    The segment camera -> point is sampled every `step_m` (default one voxel) from the camera
    centre up to `stop_short_m` (default 1.5 voxels) before the point, which itself lies on a surface.
    The view is occluded iff the voxel holding some sample is observed (weight > 0) with SDF below
    -`occluder_sdf_m` (default half a voxel): the ray went through another surface first. Behind
    an observed surface the SDF stays below that for at least a voxel (up to the truncation), so a
    one-voxel step does not step over it. Unknown voxels (unallocated or unobserved) are not
    occluders, so rays through unmapped space count as visible. Points nearer to the camera than
    `stop_short_m` are visible.

    Cost: about sum(distance) / step_m voxel lookups over the K pairs, processed in chunks of at
    most `max_samples` samples.
    """
    vs = vmap.voxel_size_m
    step_m = vs if step_m is None else float(step_m)
    stop_short_m = 1.5 * vs if stop_short_m is None else float(stop_short_m)
    occluder_sdf_m = 0.5 * vs if occluder_sdf_m is None else float(occluder_sdf_m)
    points = torch.as_tensor(points_m, dtype=torch.float64).reshape(-1, 3)
    origin = torch.as_tensor(cam_centres_m, dtype=torch.float64).reshape(-1, 3)  # [K, 3]
    if origin.shape != points.shape:
        raise ValueError(f"points {tuple(points.shape)} and camera centres {tuple(origin.shape)} must pair up")
    K = len(points)
    ray = points - origin  # [K, 3] camera -> point
    length = ray.norm(dim=1)  # [K]
    count = torch.where(length > stop_short_m, torch.floor((length - stop_short_m) / step_m) + 1, 0.0).long()  # [K]
    direction = ray / length.clamp_min(1e-9)[:, None]  # [K, 3]
    occluded = torch.zeros(K, dtype=torch.bool)
    tsdf, weight = vmap._flat("tsdf"), vmap._flat("weight")
    end = torch.cumsum(count, 0)  # [K] samples up to and including each pair
    start_pair = 0
    while start_pair < K:
        offset = int(end[start_pair - 1]) if start_pair else 0  # samples before this chunk
        stop_pair = max(start_pair + 1, int(torch.searchsorted(end, offset + max_samples, right=True)))
        pair = torch.arange(start_pair, stop_pair)
        n = count[pair]  # [k] samples per pair in this chunk
        sample_pair = torch.repeat_interleave(pair, n)  # [S]
        j = torch.arange(len(sample_pair)) - torch.repeat_interleave(end[pair] - n - offset, n)  # [S] step along its ray
        x = origin[sample_pair] + direction[sample_pair] * (j * step_m)[:, None]  # [S, 3]
        flat, found = vmap.lookup(vmap.voxel_indices(x.numpy()))  # the voxel holding each sample
        index = torch.from_numpy(flat[found]).to(tsdf.device)
        hit = torch.zeros(len(x), dtype=torch.bool)
        hit[torch.from_numpy(found)] = ((weight[index, 0].to(torch.int32) > 0)
                                        & (tsdf[index, 0].float() * vmap.sdf_trunc_m < -occluder_sdf_m)).cpu()
        occluded[sample_pair[hit]] = True
        start_pair = stop_pair
    return ~occluded
