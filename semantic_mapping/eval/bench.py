"""`semantic-mapping bench`: a fixed suite on held-out scenes, one table, optional JSON records.

Every figure is measured in this process on the benchmark seeds (sim.sequence.BENCHMARK_SEEDS; the
voting stage on sim.sequence.VOTING_BENCHMARK_SEEDS), beside its reference where the figure is a
comparison. Figures are records
    {"name": "<stage>.<metric>", "value": number, "unit": str, "seeds": [...], "detail": {...}}.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

SUITE_FRAMES = 300
"""Frames per benchmark scene (10 s at 30 Hz)."""
QUICK_FRAMES = 60
VOXEL_SIZE_M = 0.04
"""The CPU default voxel size; every fusion figure uses it."""
NODE_FRAMES = 100
"""Frames the node benchmark streams at 10 Hz (640x480)."""
NODE_QUICK_FRAMES = 30
STAGES = ("fusion", "voting", "completion", "render", "objects", "node")
"""Parts of the suite, in the order they run (`semantic-mapping bench --only`)."""


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    seeds: list
    detail: dict = field(default_factory=dict)


def _open3d_reference_integrate(voxel_size_m: float, trunc_voxels: float, depth_max_m: float):
    """Open3D's own VoxelBlockGrid and an integrate function, used as its documentation does: float32
    tsdf/weight/colour attributes fed uint16 millimetre depth and uint8 colour images."""
    import open3d as o3d
    import open3d.core as o3c

    from semantic_mapping.geometry import invert_pose

    grid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=((1), (1), (3)), voxel_size=voxel_size_m, block_resolution=8, block_count=2048,
        device=o3c.Device("CPU:0"),
    )

    def integrate(frame) -> None:
        depth_mm = np.minimum(frame.depth_m * 1000.0 + 0.5, 65535.0).astype(np.uint16)
        depth = o3d.t.geometry.Image(o3c.Tensor(depth_mm))
        color = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(frame.rgb)))
        K = o3c.Tensor(frame.intrinsics.K, o3c.float64)
        extrinsic = o3c.Tensor(invert_pose(frame.T_world_cam), o3c.float64)
        coords = grid.compute_unique_block_coordinates(depth, K, extrinsic, 1000.0, depth_max_m,
                                                       trunc_voxel_multiplier=trunc_voxels)
        grid.integrate(coords, depth, color, K, K, extrinsic, 1000.0, depth_max_m, trunc_voxel_multiplier=trunc_voxels)

    return integrate


def _map_scene(seed: int, num_frames: int, progress: bool = True) -> dict:
    """Simulate one scene, fuse it with ours and with Open3D's reference, evaluate; raw figures."""
    from tqdm import tqdm

    from semantic_mapping.config import FusionConfig, MapperConfig, ObjectsConfig
    from semantic_mapping.eval.mapping_eval import FrameSegmentationTally, SurfaceVisibility, evaluate_map
    from semantic_mapping.eval.metrics import instance_iou
    from semantic_mapping.pipeline import Mapper
    from semantic_mapping.sim.ground_truth import voxelize_surface
    from semantic_mapping.sim.sequence import simulate

    recording = simulate(seed, num_frames=num_frames)
    config = MapperConfig(fusion=FusionConfig(voxel_size_m=VOXEL_SIZE_M, device="cpu"), objects=ObjectsConfig(enabled=False))
    visibility = SurfaceVisibility(voxelize_surface(recording.mesh, VOXEL_SIZE_M), config.fusion.depth_max_m)
    mapper = Mapper(config)
    reference = _open3d_reference_integrate(VOXEL_SIZE_M, config.fusion.sdf_trunc_voxels, config.fusion.depth_max_m)
    tally = FrameSegmentationTally(mapper.label_space.num_classes, mapper.label_space.ignore_id)
    ours_s, reference_s, generate_s, mask_iou = [], [], [], []
    for i in tqdm(range(len(recording)), desc=f"scene {seed}", unit="frame", file=sys.stderr, disable=not progress):
        t0 = time.perf_counter()
        frame = recording.frame(i)
        generate_s.append(time.perf_counter() - t0)
        tally.add(frame)
        visibility.add(frame)
        if frame.ground_truth.instances.any():
            mask_iou.append(instance_iou(frame.instance_masks, frame.ground_truth.instances))
        t0 = time.perf_counter()
        reference(frame)
        reference_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = mapper.integrate(frame)
        ours_s.append(time.perf_counter() - t0)
        if not result.accepted:
            raise RuntimeError(f"benchmark frame {i} of scene {seed} was rejected: {result.message}")
    quality = evaluate_map(mapper, recording.mesh, visibility)
    return {
        "seed": seed,
        "frames": len(recording),
        "segmenter_miou_2d": tally.mean_miou,
        "masks_iou_2d": float(np.mean(mask_iou)),
        "generate_s_per_frame": float(np.median(generate_s)),
        "ours_ms": 1000 * float(np.median(ours_s)),
        "open3d_ms": 1000 * float(np.median(reference_s)),
        "bytes_per_voxel": mapper.map.bytes_per_voxel(),
        "voxels": mapper.map.num_voxels,
        "quality": quality,
    }


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it does not carry over an exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_memory_child(seed: int, num_frames: int) -> None:
    """Entry point of the peak-memory child: simulate and map one scene, print peak RSS (MB) as JSON."""
    from semantic_mapping.config import FusionConfig, MapperConfig, ObjectsConfig
    from semantic_mapping.pipeline import Mapper
    from semantic_mapping.sim.sequence import simulate

    baseline_mb = _peak_rss_mb()
    recording = simulate(seed, num_frames=num_frames)
    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=VOXEL_SIZE_M, device="cpu"), objects=ObjectsConfig(enabled=False)))
    for frame in recording.frames(masks=False):
        mapper.integrate(frame)
    peak_mb = _peak_rss_mb()
    print(json.dumps({"peak_mb": peak_mb, "baseline_mb": baseline_mb, "voxels": mapper.map.num_voxels}))


def _peak_memory(seed: int, num_frames: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "semantic_mapping.eval.bench", "--peak-memory-child", str(seed), str(num_frames)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def collect_figures(quick: bool = False, progress: bool = True, only: tuple = STAGES, seeds: Optional[list] = None) -> list:
    """Run the suite (the stages in `only`) on the benchmark seeds, or on `seeds` (development runs),
    and return its figures."""
    from semantic_mapping.eval.completion_bench import completion_figures
    from semantic_mapping.eval.objects_bench import objects_figures
    from semantic_mapping.eval.render_bench import render_figures
    from semantic_mapping.eval.voting_bench import voting_figures
    from semantic_mapping.sim.sequence import BENCHMARK_SEEDS, VOTING_BENCHMARK_SEEDS

    voting_seeds = seeds
    if seeds is None:
        seeds = list(BENCHMARK_SEEDS[:1] if quick else BENCHMARK_SEEDS)
        voting_seeds = list(VOTING_BENCHMARK_SEEDS[:1] if quick else VOTING_BENCHMARK_SEEDS)
    num_frames = QUICK_FRAMES if quick else SUITE_FRAMES
    figures = []
    if "fusion" in only:
        figures += _fusion_figures(seeds, num_frames, progress)
    if "voting" in only:
        figures += voting_figures(voting_seeds, num_frames, VOXEL_SIZE_M, progress)
    if "completion" in only:
        figures += completion_figures(seeds, num_frames, VOXEL_SIZE_M, progress)
    if "render" in only:
        figures += render_figures(seeds, num_frames, VOXEL_SIZE_M, progress)
    if "objects" in only:
        figures += objects_figures(seeds, num_frames, VOXEL_SIZE_M, progress)
    if "node" in only:
        figures += node_figures(quick)
    for f in figures:
        f.detail.setdefault("frames_per_scene", num_frames)
    return figures


def _fusion_figures(seeds: list, num_frames: int, progress: bool) -> list:
    """sim.* and fusion.* figures: our map against Open3D's reference on the same frames."""
    scenes = [_map_scene(seed, num_frames, progress) for seed in seeds]

    def mean(key):
        return float(np.mean([s[key] for s in scenes]))

    def mean_q(key):
        return float(np.mean([s["quality"][key] for s in scenes]))

    memory = _peak_memory(seeds[0], num_frames)
    ours_ms, open3d_ms = mean("ours_ms"), mean("open3d_ms")
    figures = [
        Figure("sim.segmenter_miou_2d", mean("segmenter_miou_2d"), "mIoU", seeds,
               {"per_seed": {s["seed"]: s["segmenter_miou_2d"] for s in scenes}}),
        Figure("sim.masks_iou_2d", mean("masks_iou_2d"), "IoU", seeds,
               {"per_seed": {s["seed"]: s["masks_iou_2d"] for s in scenes}, "metric": "DiscoNeRF area-weighted IoU"}),
        Figure("sim.generate_s_per_frame", mean("generate_s_per_frame"), "s/frame", seeds,
               {"what": "render 640x480 RGB-D + simulated segmenter + simulated masks, median per frame"}),
        Figure("fusion.input_miou_2d", mean("segmenter_miou_2d"), "mIoU", seeds),
        Figure("fusion.miou_3d", mean_q("miou_3d"), "mIoU", seeds,
               {"per_seed": {s["seed"]: s["quality"]["miou_3d"] for s in scenes}, "coverage": mean_q("coverage")}),
        Figure("fusion.surface_median_err_m", mean_q("surface_median_err_m"), "m", seeds,
               {"in_voxels": mean_q("surface_median_err_m") / VOXEL_SIZE_M}),
        Figure("fusion.voxel_size_m", VOXEL_SIZE_M, "m", seeds),
        Figure("fusion.integrate_ratio_vs_open3d", ours_ms / open3d_ms, "ratio", seeds,
               {"ours_ms_per_frame": ours_ms, "open3d_ms_per_frame": open3d_ms,
                "ours": "TSDF + colour + Bayesian semantics (20 classes) + input validation",
                "open3d": "VoxelBlockGrid TSDF + colour, float32 attributes"}),
        Figure("fusion.bytes_per_voxel", mean("bytes_per_voxel"), "bytes", seeds, {"classes": 20}),
        Figure("fusion.peak_mem_mb", memory["peak_mb"], "MB", seeds[:1],
               {"baseline_after_imports_mb": memory["baseline_mb"], "frames": num_frames, "voxels": memory["voxels"]}),
    ]
    figures[0].detail["scenes"] = {s["seed"]: s for s in scenes}
    return figures


def node_figures(quick: bool = False) -> list:
    """The ROS node's figures (node.drop_rate, node.latency_ms_p50/p95), with soft voting on as the
    launch file runs it and a viewer subscribed to the Gaussian-splat renders, from
    semantic_mapping.ros.node_bench, which runs the node and its driver as ROS subprocesses (this
    process never imports rclpy); [] with
    one printed line saying why when the ROS 2 environment is not built or the run failed."""
    from semantic_mapping.ros import node_bench, proc

    if not proc.ros_available():
        print("node figures skipped: no ROS 2 environment (install_ros/, .ros_venv/); "
              "run `bash scripts/build_ros.sh`, then the bench again to include them")
        return []
    try:
        result = node_bench.run_node_benchmark(num_frames=NODE_QUICK_FRAMES if quick else NODE_FRAMES,
                                               voxel_size_m=VOXEL_SIZE_M, params=node_bench.LIVE_VOTING)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"node figures skipped: the node benchmark failed: {str(exc).splitlines()[0] if str(exc) else exc!r}")
        return []
    return [Figure(**record) for record in node_bench.figures(result)]


def _gain_spread(detail: dict) -> str:
    """Per-scene gains and the standard error of their mean (none from one scene), as a table cell."""
    gains = ", ".join(f"{g:+.1f}" for g in detail["gain_per_seed"].values())
    if len(detail["gain_per_seed"]) < 2:
        return f"one scene {gains} (no standard error from one scene)"
    return f"per scene {gains} (standard error {detail['gain_standard_error']:.1f})"


def format_table(figures: list) -> str:
    from semantic_mapping.eval.voting_bench import ablation_table

    lines = [f"{'figure':34s} {'value':>12s}  unit      reference / detail", "-" * 90]
    for f in figures:
        ref = ""
        if f.name == "fusion.integrate_ratio_vs_open3d":
            ref = f"ours {f.detail['ours_ms_per_frame']:.1f} ms vs Open3D {f.detail['open3d_ms_per_frame']:.1f} ms per frame"
        elif f.name == "fusion.miou_3d":
            ref = f"coverage {f.detail['coverage']:.2f} of ground-truth surface voxels"
        elif f.name == "fusion.peak_mem_mb":
            ref = f"{f.detail['baseline_after_imports_mb']:.0f} MB after imports, {f.detail['voxels']} voxels"
        elif f.name == "node.drop_rate":
            d = f.detail
            ref = (f"{d['integrated']} of {d['frames']} frames integrated at {d['rate_hz']:g} Hz, {d['width_px']} px, "
                   f"{'reliable' if d['reliable_inputs'] else 'best-effort'} inputs")
        elif f.name == "node.objects_rate_hz":
            ref = f"~/objects while the frames stream in, configured {f.detail['objects_rate_hz_configured']:g} Hz"
        elif f.name == "voting.gain_vs_bayesian":
            ref = (f"voting {f.detail['voting_miou_3d']:.4f} vs Bayesian {f.detail['bayesian_miou_3d']:.4f} 3D mIoU; "
                   f"{_gain_spread(f.detail)}")
        elif f.name == "voting.gain_vs_bayesian_hard_noise":
            ref = (f"voting {f.detail['voting_miou_3d']:.4f} vs Bayesian {f.detail['bayesian_miou_3d']:.4f} "
                   f"at 2D input mIoU {f.detail['input_miou_2d']:.3f}; {_gain_spread(f.detail)}")
        elif f.name == "render.miou_2d_gain_vs_segmenter":
            ref = (f"render {f.detail['render_miou_2d']:.4f} vs segmenter {f.detail['segmenter_miou_2d']:.4f} 2D mIoU, "
                   f"{f.detail['held_out_views']} held-out views")
        elif f.name == "render.view_consistency":
            ref = f"segmenter {f.detail['segmenter_view_consistency']:.4f} (consecutive poses, warped)"
        elif f.name == "render.raycast_agreement":
            ref = f"label agreement with the raycast render (raycast mIoU {f.detail['raycast_miou_2d']:.4f})"
        elif f.name.startswith("render.fps_cpu"):
            ref = f"{f.detail['gaussians']} Gaussians, our renderer on {f.detail['threads']} CPU threads"
        elif f.name == "render.fps_gpu_640x480":
            ref = f"gsplat, {f.detail['gaussians']} Gaussians, {f.detail['device']}"
        elif f.name in ("objects.iou", "objects.bd", "objects.sbd"):
            d = f.detail
            ref = (f"masks {d['masks']:.4f}, no matching {d['no_matching']:.4f}, no L_TV {d['no_tv']:.4f}, no votes {d['no_votes']:.4f}, "
                   f"no join {d['no_join']:.4f}, no seams {d['no_seams']:.4f}, no class groups {d['no_class_groups']:.4f}, joined across roles {d['join_across_roles']:.4f}, "
                   f"joined whatever the classes {d['join_any_classes']:.4f}, gaps not closed {d['no_gap_closing']:.4f}; "
                   f"image_gt {d['image_gt']:.4f} vs masks {d['masks_image_gt']:.4f}; "
                   f"within depth_max_m {d['in_range']:.4f} vs masks {d['masks_in_range']:.4f}")
            if "beyond_range_share" in d:
                share = np.mean(list(d["beyond_range_share"].values()))
                ref += f" ({100 * share:.1f} % of scored pixels lie beyond it)"
        elif f.name == "objects.instance_recall":
            d = f.detail
            ref = (f"{d['matched']} of {d['evaluated']} instances >= {d['min_instance_voxels']} voxels; "
                   f"{d['merged']} merged, {d['split']} split; {d['objects']} objects; "
                   f"no class groups {d['ablations']['no_class_groups']['matched']}, no join {d['ablations']['no_join']['matched']}, "
                   f"no seams {d['ablations']['no_seams']['matched']}, "
                   f"joined across roles {d['ablations']['join_across_roles']['matched']}, "
                   f"joined whatever the classes {d['ablations']['join_any_classes']['matched']}")
        elif f.name == "objects.ms_per_step":
            ref = f"view prepared in {f.detail['ms_per_view_prepare']:.0f} ms (raycast + masks), CPU"
        elif f.name == "voting.voxels_per_s":
            ref = (f"voxel updates per second of voting work, CPU: frame votes {f.detail['frame_vote_voxels']} in "
                   f"{f.detail['frame_vote_seconds']:.1f} s, keyframe votes {f.detail['keyframe_voxels_voted']} in "
                   f"{f.detail['keyframe_vote_seconds']:.1f} s; frame-vote weights "
                   f"{f.detail['frame_vote_ms_per_frame']:.1f} ms and geometry prior "
                   f"{f.detail['prior_ms_per_frame']:.1f} ms per frame; labels' context {f.detail['context_ms_per_map']:.0f} ms "
                   f"per read of the whole map ({f.detail['context_voxels_per_map']:.0f} labelled voxels)")
        lines.append(f"{f.name:34s} {f.value:12.4f}  {f.unit:8s}  {ref}")
    ablation = ablation_table(figures)
    if ablation:
        lines += ["", "soft voting ablation (GNeSF Table 4 directions, our geometry prior and the labels' surface context), 3D mIoU on the same frames:", ablation]
    return "\n".join(lines)


def run_benchmark(json_path: Optional[str] = None, quick: bool = False, only: tuple = STAGES,
                  seeds: Optional[list] = None) -> int:
    from semantic_mapping.io.exports import write_json

    start = time.perf_counter()
    figures = collect_figures(quick=quick, only=only, seeds=seeds)
    print(format_table(figures))
    caveat = "quick smoke run, not for reporting; " if quick else ""
    if seeds is not None:
        caveat += f"development seeds {', '.join(map(str, seeds))}, not the benchmark's; "
    print(f"\n{caveat}total {time.perf_counter() - start:.0f} s")
    if json_path:
        write_json(Path(json_path), [asdict(f) for f in figures])
        print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--peak-memory-child":
        _peak_memory_child(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(run_benchmark(quick="--quick" in sys.argv))
