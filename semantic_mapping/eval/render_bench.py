"""render.* figures: Gaussian-splat renders of the map at held-out poses of the benchmark scenes.

Every tenth frame (index 5, 15, ...) is held out of the map. At each held-out pose the benchmark
renders the map and scores the rendered labels against the ground truth, beside the simulated 2D
segmenter's labels of the same (never fused) view and the map's raycast render. View consistency
warps the render of a held-out pose into the next pose of the path (with the rendered depth) and
counts the pixels whose labels agree, the same for the segmenter (with the true depth).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

HOLD_OUT_EVERY = 10
HOLD_OUT_OFFSET = 5
CPU_SIZES = ((320, 240), (640, 480))
GPU_MIN_GAUSSIANS = 1_000_000
_WARP_DEPTH_TOLERANCE = 0.05  # relative depth difference under which a warped pixel is the same surface


def warp_agreement(labels_a: np.ndarray, depth_a_m: np.ndarray, T_world_a: np.ndarray,
                   labels_b: np.ndarray, depth_b_m: np.ndarray, T_world_b: np.ndarray, intrinsics,
                   ignore_id: int = 255) -> tuple[int, int]:
    """(agreeing, compared) pixels when view a's labels [H, W] are warped into view b with a's depth.

    A pixel is compared when it has a label and depth in a, lands inside b, meets the surface b sees
    there (depth within 5 %) and has a label in b.
    """
    from semantic_mapping.geometry.pose import invert_pose

    H, W = labels_a.shape
    v, u = np.nonzero((depth_a_m > 0) & (labels_a != ignore_id))
    z = depth_a_m[v, u]
    points_a = np.stack([(u - intrinsics.cx) / intrinsics.fx * z, (v - intrinsics.cy) / intrinsics.fy * z, z], 1)
    T_b_a = invert_pose(T_world_b) @ T_world_a
    points_b = points_a @ T_b_a[:3, :3].T + T_b_a[:3, 3]
    zb = points_b[:, 2]
    front = zb > 1e-3
    ub = np.round(intrinsics.fx * points_b[:, 0] / np.where(front, zb, 1.0) + intrinsics.cx).astype(np.int64)
    vb = np.round(intrinsics.fy * points_b[:, 1] / np.where(front, zb, 1.0) + intrinsics.cy).astype(np.int64)
    inside = front & (ub >= 0) & (ub < W) & (vb >= 0) & (vb < H)
    ub, vb, zb, la = ub[inside], vb[inside], zb[inside], labels_a[v[inside], u[inside]]
    seen = depth_b_m[vb, ub]
    same = (seen > 0) & (np.abs(seen - zb) <= _WARP_DEPTH_TOLERANCE * zb) & (labels_b[vb, ub] != ignore_id)
    return int((la[same] == labels_b[vb, ub][same]).sum()), int(same.sum())


def _time_renders(scene, intrinsics, poses: list) -> float:
    """Median seconds per render of `scene` at `poses`."""
    seconds = []
    for T in poses:
        t0 = time.perf_counter()
        scene.render(intrinsics, T)
        seconds.append(time.perf_counter() - t0)
    return float(np.median(seconds))


def render_scene(seed: int, num_frames: int, voxel_size_m: float, progress: bool = True) -> dict:
    """Map scene `seed` without its held-out frames, render at them; raw figures."""
    from tqdm import tqdm

    from semantic_mapping.config import FusionConfig, MapperConfig, ObjectsConfig
    from semantic_mapping.eval.metrics import confusion_matrix
    from semantic_mapping.pipeline import Mapper
    from semantic_mapping.sim.sequence import simulate
    from semantic_mapping.splatting.gaussians import GaussianScene

    recording = simulate(seed, num_frames=num_frames)
    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=voxel_size_m, device="cpu"), objects=ObjectsConfig(enabled=False)))
    C, ignore = mapper.label_space.num_classes, mapper.label_space.ignore_id
    held, successor = {}, {}  # index -> frame; held index -> the next frame (segmenter labels, true depth, pose)
    for i in tqdm(range(len(recording)), desc=f"render scene {seed}", unit="frame", file=sys.stderr,
                  disable=not progress):
        frame = recording.frame(i, masks=False)
        if i % HOLD_OUT_EVERY == HOLD_OUT_OFFSET:
            held[i] = frame
            continue
        if i - 1 in held:
            successor[i - 1] = (frame.class_probs.argmax(-1), frame.ground_truth.depth_m, frame.T_world_cam)
        if not mapper.integrate(frame).accepted:
            raise RuntimeError(f"benchmark frame {i} of scene {seed} was rejected")
    t0 = time.perf_counter()
    scene = GaussianScene.from_map(mapper.map, mapper.config.splatting)
    build_s = time.perf_counter() - t0
    confusion = {name: np.zeros((C, C + 1), np.int64) for name in ("render", "segmenter", "raycast")}
    agree = {"raycast": [0, 0], "render": [0, 0], "segmenter": [0, 0]}
    intrinsics = recording.intrinsics
    for i, frame in held.items():
        gt = frame.ground_truth
        rendered = scene.render(intrinsics, frame.T_world_cam)
        segmented = frame.class_probs.argmax(-1)
        raycast = mapper.render(intrinsics, frame.T_world_cam)
        confusion["render"] += confusion_matrix(rendered.labels, gt.labels, C, ignore)
        confusion["segmenter"] += confusion_matrix(segmented, gt.labels, C, ignore)
        confusion["raycast"] += confusion_matrix(raycast.labels, gt.labels, C, ignore)
        both = (rendered.labels != ignore) & (raycast.labels != ignore)
        agree["raycast"][0] += int((rendered.labels[both] == raycast.labels[both]).sum())
        agree["raycast"][1] += int(both.sum())
        if i in successor:
            next_labels, next_depth, T_next = successor[i]
            next_render = scene.render(intrinsics, T_next)
            for name, (la, da, lb, db) in {
                "render": (rendered.labels, rendered.depth_m, next_render.labels, next_render.depth_m),
                "segmenter": (segmented, gt.depth_m, next_labels, next_depth),
            }.items():
                a, n = warp_agreement(la, da, frame.T_world_cam, lb, db, T_next, intrinsics, ignore)
                agree[name][0] += a
                agree[name][1] += n
    poses = [frame.T_world_cam for frame in held.values()]
    fps_cpu = {f"{w}x{h}": 1.0 / _time_renders(scene, intrinsics.scaled(w, h), poses) for w, h in CPU_SIZES}
    out = {
        "seed": seed, "held_out_views": len(held), "gaussians": len(scene), "build_s": build_s,
        "confusion": confusion, "agree": agree, "fps_cpu": fps_cpu, "backend": "cpu",
    }
    gpu = gpu_fps(scene, intrinsics, poses)
    if gpu is not None:
        out["gpu"] = gpu
    return out


def gpu_fps(scene, intrinsics, poses: list):
    """gsplat frames per second at 640x480 with at least a million Gaussians (the scene tiled side by
    side until it has that many); None without CUDA and gsplat."""
    from semantic_mapping.splatting.gaussians import GaussianScene
    from semantic_mapping.splatting.render import gsplat_available

    if not gsplat_available() or len(scene) == 0:
        return None
    big = GaussianScene(scene.num_classes, scene.voxel_size_m, scene.config, device="cuda")
    copies = -(-GPU_MIN_GAUSSIANS // len(scene))
    side = int(np.ceil(np.sqrt(copies)))
    extent = (scene.means_m.max(0).values - scene.means_m.min(0).values).cpu() + 1.0
    offsets = torch.tensor([[ix * float(extent[0]), iy * float(extent[1]), 0.0]
                            for ix in range(side) for iy in range(side)][:copies])
    for name in GaussianScene.FIELDS:
        value = getattr(scene, name).cpu()
        tiled = torch.cat([value + offset for offset in offsets]) if name == "means_m" else value.repeat(
            copies, *([1] * (value.dim() - 1)))
        setattr(big, name, tiled.cuda())
    K = intrinsics.scaled(640, 480)
    for T in poses[:3]:  # warm-up: CUDA context and kernels
        big.render(K, T, backend="gsplat")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    repeats = 0
    for _ in range(5):
        for T in poses:
            big.render(K, T, backend="gsplat")
            repeats += 1
    torch.cuda.synchronize()
    return {"fps_640x480": repeats / (time.perf_counter() - t0), "gaussians": len(big),
            "device": torch.cuda.get_device_name(0)}


def render_figures(seeds: list, num_frames: int, voxel_size_m: float, progress: bool = True) -> list:
    """render.miou_2d_gain_vs_segmenter, render.raycast_agreement, render.view_consistency, render.fps_*."""
    from semantic_mapping.eval.bench import Figure
    from semantic_mapping.eval.metrics import SegmentationScores

    scenes = [render_scene(seed, num_frames, voxel_size_m, progress) for seed in seeds]

    def miou(name):
        return SegmentationScores.from_confusion(sum(s["confusion"][name] for s in scenes)).miou

    def ratio(name):
        agreeing = sum(s["agree"][name][0] for s in scenes)
        return agreeing / max(sum(s["agree"][name][1] for s in scenes), 1)

    views = sum(s["held_out_views"] for s in scenes)
    gaussians = int(np.mean([s["gaussians"] for s in scenes]))
    detail = {"held_out_views": views, "gaussians_per_scene": [s["gaussians"] for s in scenes]}
    figures = [
        Figure("render.miou_2d", miou("render"), "mIoU", seeds, {**detail, "raycast_miou_2d": miou("raycast")}),
        Figure("render.miou_2d_gain_vs_segmenter", 100 * (miou("render") - miou("segmenter")), "points", seeds,
               {"render_miou_2d": miou("render"), "segmenter_miou_2d": miou("segmenter"), **detail}),
        Figure("render.raycast_agreement", ratio("raycast"), "fraction", seeds,
               {"raycast_miou_2d": miou("raycast"), **detail}),
        Figure("render.view_consistency", ratio("render"), "fraction", seeds,
               {"segmenter_view_consistency": ratio("segmenter"), **detail}),
    ]
    for w, h in CPU_SIZES:
        key = f"{w}x{h}"
        figures.append(Figure(f"render.fps_cpu_{key}", float(np.mean([s["fps_cpu"][key] for s in scenes])), "FPS",
                              seeds, {"threads": torch.get_num_threads(), "gaussians": gaussians}))
    gpu = [s["gpu"] for s in scenes if "gpu" in s]
    build_s = float(np.mean([s["build_s"] for s in scenes]))
    if gpu:
        gpu_gaussians = int(np.mean([g["gaussians"] for g in gpu]))
        figures.append(Figure("render.fps_gpu_640x480", float(np.mean([g["fps_640x480"] for g in gpu])), "FPS", seeds,
                              {"gaussians": gpu_gaussians, "device": gpu[0]["device"]}))
        figures.append(Figure("render.gaussians", gpu_gaussians, "Gaussians", seeds,
                              {"on": "gpu", "device": gpu[0]["device"], "scene_gaussians": gaussians,
                               "build_s_per_scene": build_s}))
    else:
        figures.append(Figure("render.gaussians", gaussians, "Gaussians", seeds,
                              {"on": "cpu", "scene_gaussians": gaussians, "build_s_per_scene": build_s}))
    return figures
