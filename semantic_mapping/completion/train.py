"""Training the completion network (SSR-2D §3.6): crops of incomplete scans in, a completed TSDF,
colour and semantics out, supervised by renders into 2D views (Eq. 1, 3, 4) and by the more complete
scan's TSDF (Eq. 2); the total is Eq. 5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from semantic_mapping.completion.data import CompletionScene, IncompleteScanConfig, masked_input, read_crop
from semantic_mapping.completion.network import CompletionNetwork, chunk_inputs
from semantic_mapping.completion.renderer import render_volume
from semantic_mapping.geometry.pose import invert_pose, transform_points
from semantic_mapping.geometry.projection import backproject_depth, project_points


@dataclass
class CompletionTrainConfig:
    """One training run of the completion network."""

    crop_voxels: tuple = (32, 32, 64)
    """Training crop (x, y, z) in voxels; multiples of the network's size multiple."""
    steps: int = 1000
    """Optimisation steps, one crop each."""
    learning_rate: float = 1e-3
    """Adam's step size (SSR-2D uses SGD from 0.01 with 60 GPU hours; Adam converges in our budget)."""
    views_per_step: int = 4
    """Views each crop is rendered into, chosen among those that see its centre."""
    lambda_3d: float = 1.0
    """Weight of the 3D TSDF loss against the complete scan (Eq. 2)."""
    lambda_depth: float = 1.0
    """Weight of the depth loss on real views (Eq. 1), depth in voxels."""
    lambda_color: float = 1.0
    """Weight of the colour loss on real views (Eq. 3)."""
    lambda_semantics: float = 1.0
    """Weight of the cross-entropy against the 2D labels of real and virtual views (Eq. 4)."""
    scan: IncompleteScanConfig = field(default_factory=lambda: IncompleteScanConfig(keep_view_fraction=1.0,
                                                                                     cube_probability=0.2))
    """Cube masks drawn afresh for every crop (SSR-2D §4.2's ScanNet setting: our recordings are video)."""
    seed: int = 0


def crop_views(views: list, origin_m: np.ndarray, size_m: np.ndarray, count: int, rng: np.random.Generator) -> list:
    """Up to `count` views whose image holds the crop's centre in front of the camera."""
    centre = origin_m + 0.5 * size_m
    seeing = []
    for view in views:
        uv, z = project_points(transform_points(invert_pose(view.T_world_cam), centre), view.intrinsics.K)
        K = view.intrinsics
        if z > 0.1 and 0 <= uv[0] < K.width_px and 0 <= uv[1] < K.height_px:
            seeing.append(view)
    pick = rng.permutation(len(seeing))[:count]
    return [seeing[i] for i in pick]


def inside_crop(view, origin_m: np.ndarray, size_m: np.ndarray, voxel_size_m: float) -> np.ndarray:  # [H, W] bool
    """Pixels whose measured surface lies inside the crop (a voxel in from its faces): the pixels the
    crop's render must explain."""
    points = transform_points(view.T_world_cam, backproject_depth(view.depth_m, view.intrinsics.K))  # [H, W, 3] world
    lo, hi = origin_m + voxel_size_m, origin_m + size_m - 2 * voxel_size_m
    return (view.depth_m > 0) & np.all((points >= lo) & (points <= hi), axis=-1)


def crop_loss(net: CompletionNetwork, scene: CompletionScene, origin_index: np.ndarray, config: CompletionTrainConfig,
              ignore_id: int, rng: np.random.Generator, mask_seed: int) -> dict:
    """Eq. 5 on one crop: the losses (tensors) and the number of supervised pixels."""
    vs = scene.voxel_size_m
    shape = np.asarray(config.crop_voxels)
    target = read_crop(scene.complete.map, origin_index, shape)
    source = target if scene.incomplete is scene.complete else read_crop(scene.incomplete.map, origin_index, shape)
    tsdf, observed, color = chunk_inputs(masked_input(source, origin_index, vs, config.scan, mask_seed))
    out = net(tsdf, observed, color)
    seen = torch.from_numpy(target["weight"] > 0)
    losses = {"3d": (out["tsdf"][0][seen] - torch.from_numpy(target["tsdf"])[seen]).abs().mean()
              if seen.any() else out["tsdf"].sum() * 0.0}
    origin_m = origin_index * vs
    size_m = shape * vs
    depth_terms, color_terms, semantic_terms = [], [], []
    pixels = 0  # supervised pixels over all views
    for view in crop_views(scene.views, origin_m, size_m, config.views_per_step, rng):
        explain = torch.from_numpy(inside_crop(view, origin_m, size_m, vs))
        if not explain.any():
            continue
        color_volume = out["color"][0] if "color" in out else None
        render = render_volume(out["tsdf"][0], color_volume, out["semantics"][0], origin_m, vs,
                               view.intrinsics, view.T_world_cam)
        valid = explain & render.hit  # SSR-2D: pixels where the prediction has a surface
        labels = torch.from_numpy(view.labels.astype(np.int64))
        labelled = valid & (labels != ignore_id)
        if labelled.any():
            semantic_terms.append(F.cross_entropy(render.semantics[labelled], labels[labelled], reduction="sum"))
        if not view.is_virtual and valid.any():
            depth = torch.from_numpy(view.depth_m)
            depth_terms.append(((render.depth_m[valid] - depth[valid]).abs() / vs).sum())
            if render.color is not None:
                rgb = torch.from_numpy(view.rgb.astype(np.float32) / 255.0)
                color_terms.append((render.color[valid] - rgb[valid]).abs().sum(-1).sum())
        pixels += int(valid.sum())
    for name, terms in (("depth", depth_terms), ("color", color_terms), ("semantics", semantic_terms)):
        losses[name] = torch.stack(terms).sum() / max(pixels, 1) if terms else out["tsdf"].sum() * 0.0
    losses["total"] = (config.lambda_3d * losses["3d"] + config.lambda_depth * losses["depth"]
                       + config.lambda_color * losses["color"] + config.lambda_semantics * losses["semantics"])
    return losses


def random_crop_origin(surface: np.ndarray, shape: np.ndarray, rng: np.random.Generator) -> np.ndarray:  # [3]
    """A crop placed around a random one of the complete scan's surface voxels [N, 3]."""
    centre = surface[rng.integers(len(surface))]
    return centre - shape // 2 + rng.integers(-(shape // 4), shape // 4 + 1)


def train_steps(net: CompletionNetwork, scenes: list, config: CompletionTrainConfig, ignore_id: int,
                progress: bool = True) -> list:
    """Adam on random crops of `scenes`; returns the per-step losses [{name: float}]."""
    from tqdm import tqdm

    rng = np.random.default_rng(config.seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    shape = np.asarray(config.crop_voxels)
    surfaces = [scene.complete.map.surface_voxel_indices() for scene in scenes]  # [N, 3] each, read once
    history = []
    net.train()
    bar = tqdm(range(config.steps), desc="train completion", unit="step", disable=not progress)
    for step in bar:
        k = rng.integers(len(scenes))
        losses = crop_loss(net, scenes[k], random_crop_origin(surfaces[k], shape, rng), config, ignore_id, rng,
                           mask_seed=config.seed * 100003 + step)
        optimiser.zero_grad()
        losses["total"].backward()
        optimiser.step()
        history.append({name: float(value.detach()) for name, value in losses.items()})
        bar.set_postfix(loss=f"{history[-1]['total']:.3f}")
    net.eval()
    return history
