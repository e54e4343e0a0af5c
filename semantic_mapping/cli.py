"""`semantic-mapping` command line: demo, generate, run, bench, train-voting, train-completion."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

TRAIN_VOTING_SEEDS = "20-31,40-51,53,57,69,75,76,79,80,83"
"""Scenes the keyframe voting network is trained on by default."""
TRAIN_FRAME_VOTES_SEEDS = "20-27"
"""Scenes the frame-vote weights are trained on by default."""

log = logging.getLogger("semantic_mapping")


def _progress(iterable: Iterable, total: Optional[int], desc: str):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="frame", file=sys.stderr, dynamic_ncols=True,
                disable=None)


# ----------------------------------------------------------------------------- outputs
def write_map_outputs(mapper, out_dir: Path) -> dict:
    """Map file, semantic mesh, labelled voxels and traversability grid into `out_dir`; returns their paths."""
    from semantic_mapping.io.exports import write_grid, write_mesh_ply, write_voxels_ply

    out_dir.mkdir(parents=True, exist_ok=True)
    ls = mapper.label_space
    paths = {"map": out_dir / "map.npz", "mesh": out_dir / "mesh.ply", "voxels": out_dir / "voxels.ply",
             "traversability": out_dir / "traversability.png"}
    mapper.wait_for_completion()  # the predictions of every chunk due (no-op without completion)
    mapper.save(paths["map"])  # extracts the objects too
    voxels = mapper.labelled_voxels()
    write_mesh_ply(paths["mesh"], mapper.mesh(), ls)
    write_voxels_ply(paths["voxels"], voxels, ls)
    write_grid(paths["traversability"], mapper.traversability())
    if mapper.object_slots is not None:
        paths["objects"], paths["objects_picture"] = write_objects(mapper, voxels, out_dir / "objects")
    return {k: str(v) for k, v in paths.items()}


def write_objects(mapper, voxels, stem: Path) -> tuple[Path, Path]:
    """The mapper's last extracted objects as `<stem>.json` and a top-down `<stem>.png`."""
    from semantic_mapping.io.exports import write_json, write_png
    from semantic_mapping.io.pictures import objects_top_down

    objects = sorted(mapper.object_slots.objects, key=lambda o: o.id)
    json_path = write_json(stem.with_suffix(".json"), {"voxel_size_m": mapper.voxel_size_m,
                                                       "objects": [o.summary() for o in objects]})
    png_path = write_png(stem.with_suffix(".png"),
                         objects_top_down(voxels, objects, mapper.label_space, mapper.voxel_size_m))
    return json_path, png_path


def render_comparison(mapper, frames: list, path: Path) -> None:
    """Rows of: true rgb, map rgb, true labels, 2D input labels, map labels (raycast, Gaussian splats) — at
    views not integrated."""
    import cv2

    from semantic_mapping.io.exports import write_png
    from semantic_mapping.io.pictures import grid_of, labelled

    ls = mapper.label_space
    rows = []
    for frame in frames:
        view = mapper.render(frame.intrinsics, frame.T_world_cam)
        noisy = frame.class_probs.argmax(axis=2) if frame.class_probs is not None else frame.labels
        tiles = [(frame.rgb, "camera rgb"), (view.rgb, "map rgb (raycast)")]
        if frame.ground_truth is not None:
            tiles.append((ls.colorize(frame.ground_truth.labels), "true labels"))
        if noisy is not None:
            tiles.append((ls.colorize(noisy), "2D input labels"))
        tiles.append((ls.colorize(view.labels), "map labels (raycast)"))
        tiles.append((ls.colorize(mapper.render_splats(frame.intrinsics, frame.T_world_cam).labels), "map labels (splats)"))
        rows.append([labelled(cv2.resize(img, (320, 240), interpolation=cv2.INTER_NEAREST), text) for img, text in tiles])
    write_png(path, grid_of(rows))


def metrics_table(rows: list) -> str:
    """Markdown table of (name, value, unit) rows."""
    lines = ["| metric | value | unit |", "| --- | --- | --- |"]
    for name, value, unit in rows:
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"| {name} | {shown} | {unit} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- commands
def cmd_demo(args) -> int:
    from semantic_mapping.eval.mapping_eval import FrameSegmentationTally, SurfaceVisibility, evaluate_map
    from semantic_mapping.io.exports import grid_image, write_json, write_png
    from semantic_mapping.io.pictures import frame_contact_sheet
    from semantic_mapping.pipeline import Mapper
    from semantic_mapping.sim.ground_truth import voxelize_surface
    from semantic_mapping.sim.sequence import DEMO_SEED, simulate

    out = Path(args.out)
    start = time.perf_counter()
    recording = simulate(args.seed if args.seed is not None else DEMO_SEED, num_frames=args.frames)
    mapper = Mapper(_load_mapper_config(args))
    tally = FrameSegmentationTally(mapper.label_space.num_classes, mapper.label_space.ignore_id)
    visibility = SurfaceVisibility(voxelize_surface(recording.mesh, mapper.voxel_size_m), mapper.config.fusion.depth_max_m)
    held_out = []
    integrate_s = []
    view_interval = mapper.config.objects.view_interval_frames
    for i in _progress(range(len(recording)), len(recording), "mapping"):
        if i % args.stride:
            continue
        # SAM-like masks (simulated) for the frames the object slots take as views
        frame = recording.frame(i, masks=(i // args.stride) % view_interval == 0)
        tally.add(frame)
        visibility.add(frame)
        result = mapper.integrate(frame)
        integrate_s.append(result.seconds)
    # Show the three held-out views (frames not integrated) that see the most classes.
    candidates = [i for i in np.linspace(1, len(recording) - 1, 16).astype(int) if i % args.stride]
    richness = [len(np.unique(recording.frame(int(i), semantics=False, masks=False).ground_truth.labels))
                for i in candidates]
    for i in sorted(candidates[j] for j in np.argsort(richness)[::-1][:3]):
        held_out.append(recording.frame(int(i), masks=True))
    paths = write_map_outputs(mapper, out)
    write_png(out / "traversability_preview.png", grid_image(mapper.traversability(), scale=4))
    render_comparison(mapper, held_out, out / "renders.png")
    write_png(out / "frames.png", frame_contact_sheet(held_out, mapper.label_space))
    quality = evaluate_map(mapper, recording.mesh, visibility)
    rows = [
        ("frames integrated", mapper.stats.frames_integrated, "frames"),
        ("input 2D mIoU (mean per frame)", tally.mean_miou, ""),
        ("map 3D mIoU (observed surface voxels)", quality["miou_3d"], ""),
        ("gain (points)", 100 * (quality["miou_3d"] - tally.mean_miou), "points"),
        ("surface coverage", quality["coverage"], ""),
        ("surface median error", quality["surface_median_err_m"], "m"),
        ("voxel size", mapper.voxel_size_m, "m"),
        ("integration time (median)", 1000 * float(np.median(integrate_s)), "ms/frame"),
        ("voxels allocated", mapper.map.num_voxels, "voxels"),
        ("wall time", time.perf_counter() - start, "s"),
    ]
    table = metrics_table(rows)
    (out / "metrics.md").write_text(table + "\n")
    write_json(out / "metrics.json", {"quality": quality, "input_miou_2d": tally.mean_miou, "outputs": paths,
                                      "rows": [list(r) for r in rows]})
    print(table)
    print(f"\nwrote {out}/: map.npz mesh.ply voxels.ply traversability.png (+ _preview) objects.json objects.png "
          "renders.png frames.png metrics.md")
    return 0


def cmd_generate(args) -> int:
    from semantic_mapping.io.bag import BagWriter
    from semantic_mapping.io.dataset_folder import DatasetWriter
    from semantic_mapping.io.exports import write_json, write_png
    from semantic_mapping.io.pictures import frame_contact_sheet
    from semantic_mapping.semantics.label_space import default_label_space
    from semantic_mapping.sim.ground_truth import save_scene_mesh
    from semantic_mapping.sim.scene import scene_statistics
    from semantic_mapping.sim.segmenter import labels_and_confidence
    from semantic_mapping.sim.sequence import simulate

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; choose a new --out folder")
    recording = simulate(args.seed, num_frames=args.frames)
    ls = default_label_space()
    stats = scene_statistics(recording.spec)
    meta = {"generator": "semantic_mapping.sim", "seed": args.seed, "scene": stats,
            "sim_config": dataclasses.asdict(recording.config)}
    start = time.perf_counter()
    sheet_frames = []
    sheet_at = set(np.linspace(0, len(recording) - 1, 4).astype(int).tolist())
    bag = BagWriter(out / "bag", storage=args.bag_storage) if not args.no_bag else None
    with DatasetWriter(out / "dataset", recording.intrinsics, meta=meta) as writer:
        recording.spec.save(writer.ground_truth_dir / "scene.json")
        save_scene_mesh(recording.mesh, writer.ground_truth_dir / "mesh.npz")
        for i in _progress(range(len(recording)), len(recording), "generating"):
            frame = recording.frame(i)
            if not args.probabilities:
                frame.labels, frame.label_confidence = labels_and_confidence(frame.class_probs)
                frame.class_probs = None
            writer.write(frame)
            if bag is not None:
                bag.write(frame)
            if i in sheet_at:
                sheet_frames.append(frame)
    if bag is not None:
        bag.close()
    seconds = time.perf_counter() - start
    write_png(out / "frames.png", frame_contact_sheet(sheet_frames, ls))
    summary = {"seed": args.seed, "frames": len(recording), "seconds": seconds,
               "seconds_per_frame": seconds / max(len(recording), 1), "scene": stats,
               "dataset": str(out / "dataset"), "bag": None if args.no_bag else str(out / "bag")}
    write_json(out / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_run(args) -> int:
    from semantic_mapping.io import BagTopics, open_dataset
    from semantic_mapping.io.exports import write_json
    from semantic_mapping.io.public_datasets import detect_layout
    from semantic_mapping.pipeline import Mapper

    path = Path(args.input)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    kwargs = {}
    layout = detect_layout(path)
    if layout == "rosbag2":
        topics = BagTopics(**{f.name: getattr(args, "topic_" + f.name) or f.default for f in dataclasses.fields(BagTopics)})
        kwargs["topics"] = topics
    source = open_dataset(path, **kwargs)
    mapper = Mapper(_load_mapper_config(args))
    total = len(source)
    if args.max_frames:
        total = min(total, args.max_frames)
    without_semantics = 0
    for i, frame in enumerate(_progress(source, total, f"mapping ({layout})")):
        if args.max_frames and i >= args.max_frames:
            break
        if i % args.stride:
            continue
        without_semantics += not frame.has_semantics
        mapper.integrate(frame)
    paths = write_map_outputs(mapper, Path(args.out))
    stats = mapper.stats
    summary = {
        "input": str(path), "layout": layout, "frames_integrated": stats.frames_integrated,
        "frames_rejected": dict(stats.frames_rejected), "pixels_cleaned": dict(stats.pixels_cleaned),
        "frames_without_semantics": without_semantics, "voxel_size_m": mapper.voxel_size_m, "outputs": paths,
    }
    write_json(Path(args.out) / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    if without_semantics:
        print(f"note: {without_semantics} frames had no 2D semantics; their geometry and colour were fused, labels unknown")
    return 0


def cmd_bench(args) -> int:
    from semantic_mapping.eval.bench import STAGES, run_benchmark
    from semantic_mapping.sim.sequence import DEVELOPMENT_SEEDS, parse_seeds

    only = tuple(args.only) if args.only else STAGES
    seeds = None
    if args.seeds:
        seeds = parse_seeds(args.seeds)
        outside = [s for s in seeds if s not in DEVELOPMENT_SEEDS]
        if outside:
            raise ValueError(f"--seeds: {outside} are not development seeds ({DEVELOPMENT_SEEDS.start}-"
                             f"{DEVELOPMENT_SEEDS.stop - 1}); the benchmark seeds run without --seeds")
    return run_benchmark(json_path=args.json, quick=args.quick, only=only, seeds=seeds)


def cmd_train_voting(args) -> int:
    import torch

    from semantic_mapping.semantics.voting_data import TrainingDataConfig
    from semantic_mapping.semantics.voting_train import TrainConfig, run_training
    from semantic_mapping.sim.sequence import parse_seeds

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.frame_votes:
        return _train_frame_votes(args)
    meta = run_training(
        args.out, parse_seeds(args.seeds or TRAIN_VOTING_SEEDS), parse_seeds(args.val_seeds),
        TrainingDataConfig(num_frames=args.frames), TrainConfig(steps=args.steps or 600, seed=args.seed),
        vote_space=args.vote_space,
    )
    out = Path(args.out)
    print(f"wrote {out}, loss curves {out.with_suffix('.png')}, history {out.with_suffix('.json')}")
    print(f"validation rays ({args.val_seeds}): cross-entropy {meta['val_uniform']['cross_entropy']:.3f} (uniform vote) -> "
          f"{meta['val_learned']['cross_entropy']:.3f} (learned), pixel accuracy "
          f"{meta['val_uniform']['pixel_accuracy']:.3f} -> {meta['val_learned']['pixel_accuracy']:.3f}; geometry prior "
          f"alone: cross-entropy {meta['val_prior']['cross_entropy']:.3f}, pixel accuracy {meta['val_prior']['pixel_accuracy']:.3f}; "
          f"{meta['prepare_s'] / 60:.1f} min data, {meta['train_s'] / 60:.1f} min training")
    return 0


def _train_frame_votes(args) -> int:
    from semantic_mapping.semantics.frame_votes_train import FrameVoteTrainConfig, run_training
    from semantic_mapping.semantics.label_space import default_label_space
    from semantic_mapping.sim.sequence import parse_seeds

    out = Path(args.out)
    config = FrameVoteTrainConfig(num_frames=args.frames, steps=args.steps or FrameVoteTrainConfig.steps, seed=args.seed,
                                  vote_space=args.vote_space)
    meta = run_training(out, parse_seeds(args.seeds or TRAIN_FRAME_VOTES_SEEDS), parse_seeds(args.val_seeds), config,
                        default_label_space().num_classes)
    print(f"wrote {out}, loss curves {out.with_suffix('.png')}, history {out.with_suffix('.json')}")
    print(f"validation voxels ({args.val_seeds}, labels of held-out views): cross-entropy "
          f"{meta['val_uniform']['cross_entropy']:.3f} (equal weights) -> {meta['val_learned']['cross_entropy']:.3f} "
          f"(learned), accuracy {meta['val_uniform']['accuracy']:.3f} -> {meta['val_learned']['accuracy']:.3f}; "
          f"{meta['prepare_s'] / 60:.1f} min data, {meta['train_s'] / 60:.1f} min training")
    return 0


def cmd_train_completion(args) -> int:
    import torch

    from semantic_mapping.completion.network import CompletionNetworkConfig
    from semantic_mapping.completion.train import CompletionTrainConfig, run_training
    from semantic_mapping.semantics.label_space import default_label_space
    from semantic_mapping.sim.sequence import parse_seeds

    if args.threads:
        torch.set_num_threads(args.threads)
    crop = tuple(int(v) for v in _parse_floats(args.crop, 3, "--crop"))
    net_config = CompletionNetworkConfig(num_classes=default_label_space().num_classes)
    if args.gpu_sized:
        net_config = CompletionNetworkConfig.gpu_sized(net_config.num_classes)
    config = CompletionTrainConfig(crop_voxels=crop, steps=args.steps, learning_rate=args.lr,
                                   views_per_step=args.views_per_step, seed=args.seed, hole_weight=args.hole_weight,
                                   surface_band_weight=args.surface_band_weight)
    meta = run_training(args.out, parse_seeds(args.seeds), parse_seeds(args.val_seeds), args.frames, args.voxel_size,
                        net_config, config, validate_every=args.validate_every)
    out = Path(args.out)
    print(f"wrote {out}, loss curves {out.with_suffix('.png')}, history {out.with_suffix('.json')}")
    first, last = meta["val_first"], meta["val_last"]
    print(f"validation crops ({args.val_seeds}): total loss {first['total']:.3f} -> {last['total']:.3f}, "
          f"TSDF L1 {first['3d']:.3f} -> {last['3d']:.3f}; "
          f"{meta['prepare_s'] / 60:.1f} min data, {meta['train_s'] / 60:.1f} min training")
    return 0


def _parse_floats(text: str, count: int, what: str) -> list:
    values = [float(v) for v in text.replace(" ", "").split(",") if v]
    if len(values) != count:
        raise ValueError(f"{what} needs {count} comma-separated numbers, got {text!r}")
    return values


def cmd_render(args) -> int:
    from semantic_mapping.geometry.pose import T_from_quat_xyzw, look_at
    from semantic_mapping.geometry.projection import intrinsics_from_fov
    from semantic_mapping.io.exports import write_png
    from semantic_mapping.io.pictures import depth_image, grid_of, labelled
    from semantic_mapping.pipeline import Mapper

    if (args.pose is None) == (args.look_at is None):
        raise ValueError("give exactly one of --pose x,y,z,qx,qy,qz,qw and --look-at ex,ey,ez,tx,ty,tz")
    if args.pose is not None:
        pose = _parse_floats(args.pose, 7, "--pose")
        T_world_cam = T_from_quat_xyzw(pose[:3], pose[3:])
    else:
        eye_target = _parse_floats(args.look_at, 6, "--look-at")
        T_world_cam = look_at(eye_target[:3], eye_target[3:])
    intrinsics = intrinsics_from_fov(args.width, args.height, args.hfov_deg)
    mapper = Mapper.from_file(args.map, _load_mapper_config(args))
    t0 = time.perf_counter()
    scene = mapper.gaussians()
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    view = scene.render(intrinsics, T_world_cam, ignore_id=mapper.label_space.ignore_id)
    render_s = time.perf_counter() - t0
    tiles = [labelled(view.rgb, "rgb"), labelled(mapper.label_space.colorize(view.labels), "semantic"),
             labelled(depth_image(view.depth_m), "depth")]
    path = write_png(Path(args.out), grid_of([tiles]))
    print(f"wrote {path}: {len(scene)} Gaussians (built in {build_s:.2f} s), {args.width}x{args.height} rendered in "
          f"{1000 * render_s:.0f} ms, {float((view.alpha >= mapper.config.splatting.min_alpha).mean()):.0%} of pixels covered")
    return 0


def cmd_objects(args) -> int:
    from semantic_mapping.pipeline import Mapper

    mapper = Mapper.from_file(args.map, _load_mapper_config(args))
    if mapper.object_slots is None:
        raise ValueError("objects are disabled in the config (objects.enabled: false)")
    objects = mapper.object_slots.objects
    stem = Path(args.map).with_suffix("")
    json_path, png_path = write_objects(mapper, mapper.labelled_voxels(), Path(args.out) if args.out else
                                        stem.with_name(stem.name + "_objects"))
    print(f"{len(objects)} objects in {args.map}; wrote {json_path} and {png_path}")
    for o in sorted(objects, key=lambda o: -o.voxel_count)[: args.list]:
        size = " x ".join(f"{v:.2f}" for v in o.box_size_m)
        print(f"  #{o.id:<4} {o.class_name or '?':<16} {o.voxel_count:>6} voxels  box {size} m  "
              f"slot confidence {o.slot_confidence:.2f}")
    if not objects:
        print("no objects: the map was saved without object slots (frames without masks and objects.mask_source "
              "'frame', or objects.enabled false when it was made)")
    return 0


def _load_mapper_config(args):
    from semantic_mapping.config import load_config

    overrides = {}
    if getattr(args, "voxel_size", None):
        overrides["fusion"] = {"voxel_size_m": args.voxel_size}
    if getattr(args, "device", None):
        overrides.setdefault("fusion", {})["device"] = args.device
    return load_config(args.config, overrides)


def build_parser() -> argparse.ArgumentParser:
    from semantic_mapping.eval.bench import STAGES

    parser = argparse.ArgumentParser(prog="semantic-mapping", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    def mapper_options(p):
        p.add_argument("--config", help="mapping YAML (default: the package's config/mapping.yaml)")
        p.add_argument("--voxel-size", type=float, help="voxel size in metres (overrides the config)")
        p.add_argument("--device", help="'auto', 'cpu' or 'cuda' (overrides the config)")

    p = sub.add_parser("demo", help="simulate the embedded default scene, map it, write outputs and metrics")
    p.add_argument("--out", default="demo_output", help="output folder")
    p.add_argument("--seed", type=int, help="scene seed (default: the embedded demo scene)")
    p.add_argument("--frames", type=int, default=450, help="frames to simulate (30 Hz)")
    p.add_argument("--stride", type=int, default=3, help="integrate every Nth frame; the others are held out")
    mapper_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("generate", help="write a synthetic scene as a dataset folder and a ROS 2 bag")
    p.add_argument("--seed", type=int, required=True, help="scene seed")
    p.add_argument("--out", required=True, help="output folder (must be new or empty)")
    p.add_argument("--frames", type=int, default=300, help="frames at 30 Hz")
    p.add_argument("--no-bag", action="store_true", help="skip the ROS 2 bag")
    p.add_argument("--bag-storage", choices=("mcap", "sqlite3"), default="mcap", help="bag storage plugin")
    p.add_argument("--probabilities", action="store_true",
                   help="store full class probabilities (large) instead of labels + confidence")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("run", help="map a dataset folder (ours, TUM, ScanNet, Replica, 7-Scenes) or a ROS 2 bag")
    p.add_argument("input", help="dataset folder or bag")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-frames", type=int, help="stop after this many input frames")
    p.add_argument("--stride", type=int, default=1, help="integrate every Nth frame")
    from semantic_mapping.io.bag import BagTopics

    for f in dataclasses.fields(BagTopics):
        p.add_argument("--topic-" + f.name.replace("_", "-"), dest="topic_" + f.name,
                       help=f"bag topic for {f.name} (default {f.default})")
    mapper_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="run the fixed benchmark suite on held-out scenes and print one table")
    p.add_argument("--json", help="also write the figures as JSON records to this path")
    p.add_argument("--quick", action="store_true", help="fewer frames and scenes (smoke run, not for reporting)")
    p.add_argument("--only", action="append", choices=STAGES,
                   help="run only this part of the suite (repeatable; default: all)")
    p.add_argument("--seeds", help="development seeds instead of the benchmark's (development runs, not for "
                                   "reporting), e.g. '0,2-4' or '200-209'")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("render", help="render a saved map as Gaussian splats from a camera pose: rgb, "
                       "semantic labels and depth side by side in one PNG")
    p.add_argument("map", help="map file (.npz) written by run, demo or the node's save_map")
    p.add_argument("--pose", help="camera pose in the map frame: x,y,z,qx,qy,qz,qw (camera axes: x right, y down, "
                   "z forward)")
    p.add_argument("--look-at", help="camera at ex,ey,ez looking at tx,ty,tz (z up): ex,ey,ez,tx,ty,tz")
    p.add_argument("--width", type=int, default=640, help="image width, pixels")
    p.add_argument("--height", type=int, default=480, help="image height, pixels")
    p.add_argument("--hfov-deg", type=float, default=62.7, help="horizontal field of view, degrees")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--config", help="mapping YAML (splatting section); default: the packaged config")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("objects", help="list a saved map's object slots: JSON, and a top-down picture coloured by "
                       "object and by class")
    p.add_argument("map", help="map file (.npz) written by run, demo or the node's save_map")
    p.add_argument("--out", help="path stem of the JSON and PNG to write (default: <map>_objects beside the map)")
    p.add_argument("--list", type=int, default=20, help="print this many of the largest objects")
    p.add_argument("--config", help="mapping YAML; default: the packaged config")
    p.set_defaults(func=cmd_objects)

    p = sub.add_parser("train-voting", help="train the soft-voting network on simulated development scenes "
                       "(2D supervision only); writes the checkpoint, its loss plot and history")
    p.add_argument("--out", default="voting.pt", help="checkpoint path (.png and .json are written beside it)")
    p.add_argument("--frame-votes", action="store_true",
                   help="train the frame-vote weights (semantics.frame_votes) instead of the keyframe voting network")
    p.add_argument("--seeds", help=f"training scene seeds, e.g. '20-31,40' (development seeds only; default "
                   f"{TRAIN_VOTING_SEEDS}, which adds scenes that show ceilings, or {TRAIN_FRAME_VOTES_SEEDS} with --frame-votes)")
    p.add_argument("--val-seeds", default="32", help="validation scene seeds")
    p.add_argument("--frames", type=int, default=300, help="frames simulated per scene")
    p.add_argument("--steps", type=int,
                   help="optimiser steps (default 600, each: 1024 rays of one scene for the votes, 8192 of all scenes "
                   "for the prior; with --frame-votes 150 full-batch steps)")
    p.add_argument("--vote-space", choices=("probabilities", "logits"), default="probabilities",
                   help="Eq. 4 over probabilities (GNeSF) or over logits (the ablation)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and ray sampling seed")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=cmd_train_voting)

    p = sub.add_parser("train-completion", help="train the SSR-2D completion network on simulated development "
                       "scenes with cube-masked inputs; writes the checkpoint, its loss plot and history")
    p.add_argument("--out", default="completion.pt", help="checkpoint path (.png and .json are written beside it)")
    p.add_argument("--seeds", default="60-65", help="training scene seeds (development seeds only)")
    p.add_argument("--val-seeds", default="66", help="validation scene seeds")
    p.add_argument("--frames", type=int, default=150, help="frames simulated per scene")
    p.add_argument("--voxel-size", type=float, default=0.04, help="voxel size, metres (the map's)")
    p.add_argument("--steps", type=int, default=900, help="optimiser steps (one crop each)")
    p.add_argument("--crop", default="48,48,64", help="training crop x,y,z in voxels (multiples of 16)")
    p.add_argument("--views-per-step", type=int, default=2, help="views each crop's render is supervised by")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam step size (cosine decay to a tenth)")
    p.add_argument("--validate-every", type=int, default=100, help="steps between validation losses")
    p.add_argument("--hole-weight", type=float, default=1.0,
                   help="3D loss weight of voxels the input lacks, relative to observed ones (1: Eq. 2)")
    p.add_argument("--surface-band-weight", type=float, default=1.0,
                   help="3D loss weight of voxels near the target surface (1: Eq. 2)")
    p.add_argument("--gpu-sized", action="store_true", help="the paper-sized network (16..128 channels)")
    p.add_argument("--seed", type=int, default=0, help="initialisation, crop and mask seed")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=cmd_train_completion)
    return parser


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
