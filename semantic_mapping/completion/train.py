"""Training the completion network (SSR-2D §3.6): crops of incomplete scans in, a completed TSDF,
colour and semantics out, supervised by renders into 2D views (Eq. 1, 3, 4) and by the more complete
scan's TSDF (Eq. 2); the total is Eq. 5.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from semantic_mapping.completion.data import CompletionScene, IncompleteScanConfig, masked_input
from semantic_mapping.completion.network import CompletionNetwork, CompletionNetworkConfig, chunk_inputs
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
    final_learning_rate_fraction: float = 0.1
    """The step size decays along a cosine to this fraction of `learning_rate` at the last step."""
    views_per_step: int = 4
    """Views each crop is rendered into, chosen among those that see its centre."""
    lambda_3d: float = 1.0
    """Weight of the 3D TSDF loss against the complete scan (Eq. 2)."""
    hole_weight: float = 1.0
    """In the 3D loss, voxels the input lacks count this many times as much as those it has (1: Eq. 2's plain mean)."""
    surface_band_weight: float = 1.0
    """In the 3D loss, voxels within half the truncation of the target surface count this many times as much."""
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
    target = scene.complete.map.read_region(origin_index, shape)
    source = target if scene.incomplete is scene.complete else scene.incomplete.map.read_region(origin_index, shape)
    tsdf, observed, color = chunk_inputs(masked_input(source, origin_index, vs, config.scan, mask_seed))
    out = net(tsdf, observed, color)
    seen = torch.from_numpy(target["weight"] > 0)
    target_tsdf = torch.from_numpy(target["tsdf"])
    weight = (1.0 + (config.hole_weight - 1.0) * (~observed[0]).float()) \
        * (1.0 + (config.surface_band_weight - 1.0) * (target_tsdf.abs() < 0.5).float())  # [X, Y, Z]
    losses = {"3d": ((out["tsdf"][0] - target_tsdf).abs() * weight)[seen].sum() / weight[seen].sum()
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
                progress: bool = True, on_step=None) -> list:
    """Adam on random crops of `scenes` with a cosine step-size decay; returns the per-step losses
    [{name: float}]. `on_step(step, losses)` is called after every step (validation, logging)."""
    from tqdm import tqdm

    rng = np.random.default_rng(config.seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    floor = config.final_learning_rate_fraction
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step / max(config.steps, 1), 1.0))))
    shape = np.asarray(config.crop_voxels)
    surfaces = [scene.complete.map.surface_voxel_indices() for scene in scenes]  # [N, 3] each, read once
    history = []
    net.train()
    bar = tqdm(range(config.steps), desc="train completion", unit="step", disable=not progress, file=sys.stderr)
    for step in bar:
        k = rng.integers(len(scenes))
        losses = crop_loss(net, scenes[k], random_crop_origin(surfaces[k], shape, rng), config, ignore_id, rng,
                           mask_seed=config.seed * 100003 + step)
        optimiser.zero_grad()
        losses["total"].backward()
        optimiser.step()
        schedule.step()
        history.append({name: float(value.detach()) for name, value in losses.items()})
        bar.set_postfix(loss=f"{history[-1]['total']:.3f}")
        if on_step is not None:
            on_step(step, history[-1])
            net.train()
    net.eval()
    return history


def validation_loss(net: CompletionNetwork, scenes: list, surfaces: list, config: CompletionTrainConfig,
                    ignore_id: int, crops_per_scene: int = 8) -> dict:
    """Mean Eq. 5 terms on fixed crops, cube masks and views of `scenes` (the same at every call); crops
    sit around the complete scans' surface voxels `surfaces` ([N, 3] per scene)."""
    rng = np.random.default_rng(12345)
    shape = np.asarray(config.crop_voxels)
    sums, count = {}, 0
    net.eval()
    with torch.no_grad():
        for scene, surface in zip(scenes, surfaces):
            for k in range(crops_per_scene):
                losses = crop_loss(net, scene, random_crop_origin(surface, shape, rng), config, ignore_id, rng,
                                   mask_seed=10**9 + scene.seed * 1000 + k)
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + float(value)
                count += 1
    return {name: value / max(count, 1) for name, value in sums.items()}


LOSS_NAMES = ("total", "3d", "depth", "color", "semantics")


def plot_training(history: list, validation: list, path, title: str = "completion training") -> None:
    """Training losses (running mean over 50 steps) and validation losses per term, as a PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from semantic_mapping.io.pictures import write_figure_png

    fig, axes = plt.subplots(1, len(LOSS_NAMES), figsize=(4 * len(LOSS_NAMES), 3.6))
    window = 50
    for ax, name in zip(axes, LOSS_NAMES):
        values = np.array([h[name] for h in history])
        if len(values):
            smooth = np.convolve(values, np.ones(window) / window, mode="valid") if len(values) >= window else values
            ax.plot(np.arange(len(smooth)) + (len(values) - len(smooth)), smooth, label=f"train (mean of {window})")
        if validation:
            ax.plot([v["step"] for v in validation], [v[name] for v in validation], "o-", label="validation")
        ax.set_title({"total": "total (Eq. 5)", "3d": "TSDF L1 (Eq. 2)", "depth": "depth L1, voxels (Eq. 1)",
                      "color": "colour L1 (Eq. 3)", "semantics": "cross-entropy (Eq. 4)"}[name])
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    write_figure_png(fig, path, dpi=90)


def run_training(out_path, train_seeds: list, val_seeds: list, num_frames: int, voxel_size_m: float,
                 net_config: CompletionNetworkConfig, config: CompletionTrainConfig, validate_every: int = 100,
                 view_size_px: tuple = (160, 128), num_virtual: int = 20) -> dict:
    """Make the scenes, train, and write the checkpoint (`out_path`), its loss plot (.png) and its
    history (.json) beside it. Returns the checkpoint's meta."""
    from tqdm import tqdm

    from semantic_mapping.atomic_files import atomic_write_text
    from semantic_mapping.completion.data import make_completion_scene
    from semantic_mapping.completion.network import save_completion_model
    from semantic_mapping.sim.sequence import require_development_seeds

    require_development_seeds(train_seeds + val_seeds)
    out_path = Path(out_path)
    start = time.perf_counter()
    scenes = [make_completion_scene(seed, num_frames, voxel_size_m, config.scan, view_size_px=view_size_px,
                                    num_virtual=num_virtual)
              for seed in tqdm(train_seeds + val_seeds, desc="making scenes", unit="scene", file=sys.stderr)]
    train_scenes, val_scenes = scenes[:len(train_seeds)], scenes[len(train_seeds):]
    ignore_id = train_scenes[0].complete.label_space.ignore_id
    prepare_s = time.perf_counter() - start
    torch.manual_seed(config.seed)
    net = CompletionNetwork(net_config)
    val_surfaces = [scene.complete.map.surface_voxel_indices() for scene in val_scenes]  # [N, 3] each, read once
    validation = [{"step": 0, **validation_loss(net, val_scenes, val_surfaces, config, ignore_id)}]

    def on_step(step: int, losses: dict) -> None:
        if (step + 1) % validate_every == 0 or step + 1 == config.steps:
            validation.append({"step": step + 1, **validation_loss(net, val_scenes, val_surfaces, config, ignore_id)})

    history = train_steps(net, train_scenes, config, ignore_id, on_step=on_step)
    train_s = time.perf_counter() - start - prepare_s
    meta = {
        "voxel_size_m": voxel_size_m, "train_seeds": list(train_seeds), "val_seeds": list(val_seeds),
        "num_frames": num_frames, "view_size_px": list(view_size_px), "num_virtual": num_virtual,
        "train": dataclasses.asdict(config), "network": dataclasses.asdict(net_config),
        "segmenter": "simulated, default SegmenterSimConfig",
        "val_first": validation[0], "val_last": validation[-1],
        "prepare_s": prepare_s, "train_s": train_s, "torch": str(torch.__version__), "threads": torch.get_num_threads(),
    }
    save_completion_model(out_path, net, meta)
    plot_training(history, validation, out_path.with_suffix(".png"),
                  title=f"completion training: {len(train_seeds)} scenes, {config.steps} steps, {train_s / 60:.0f} min")
    atomic_write_text(out_path.with_suffix(".json"),
                      json.dumps({"meta": meta, "history": history, "validation": validation}, indent=1))
    return meta
