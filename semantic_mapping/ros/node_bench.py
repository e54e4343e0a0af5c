"""Node throughput benchmark: a held-out synthetic scene streamed at 10 Hz into the mapping node.

    python -m semantic_mapping.ros.node_bench [--frames 100] [--width 640] [--json out.json]

Starts the node (4 cm voxels, CPU) and the replay driver (semantic_mapping.ros.replay) as separate
ROS processes over loopback, and reports what fraction of the published frames the node did not
integrate and the end-to-end latency from image stamp to map update (median and 95th percentile,
measured by the node over its last 300 frames). Object slots run as the node runs them by default
(objects.enabled, fitted in the node's objects thread from the simulator's instance masks, which the
driver publishes on instances/masks); the objects the node published for the last frames are
reported beside the figures. Scene completion runs as the launch file runs it (completion.enabled, in the
library's worker thread; --no-completion turns it off); node.integrated_rate_hz is the input rate the
node kept up with (frames integrated per second of input), node.objects_rate_hz the rate of ~/objects
while the frames stream in (against the node parameter of that name, 1 Hz by default), and the completion worker's counters (status,
chunks completed, ms per chunk) are reported beside it. No ROS import here: it runs from the library venv.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from semantic_mapping.ros import proc
from semantic_mapping.ros.node_config import NodeConfig

LIVE_VOTING = {"semantics.method": "voting", "voting.max_voxels_per_frame": 400, "semantics.context_max_age_s": 2.0}
"""Soft voting as launch/mapping.launch.py runs it (its voting_voxels_per_frame default; label context refreshed at most every 2 s)."""
BENCH_SEED = 1001
"""First held-out benchmark scene (sim.sequence.BENCHMARK_SEEDS)."""


def run_node_benchmark(
    seed: int = BENCH_SEED,
    num_frames: int = 100,
    width_px: int = 640,
    rate_hz: float = 10.0,
    voxel_size_m: float = 0.04,
    work_dir: Optional[os.PathLike] = None,
    timeout_s: float = 900.0,
    transports: Optional[str] = None,
    reliable: bool = True,
    params: Optional[dict] = None,
    watch_renders: bool = True,
    completion: bool = True,
) -> dict:
    """Run the 10 Hz replay against the node in subprocesses; returns the figures and details.

    {"node.drop_rate": fraction, "node.latency_ms_p50": ms, "node.latency_ms_p95": ms, "detail": {...}}.
    `params` are extra node parameters {dotted name: value} (e.g. semantics.method); `completion` sets
    completion.enabled (unless `params` does). With
    `watch_renders` the driver subscribes to the Gaussian-splat renders, so the node renders at
    node.render_rate_hz while it integrates (as it does with RViz open). Raises
    RuntimeError when ROS is not built (scripts/build_ros.sh) or a process fails.
    """
    if not proc.ros_available():
        raise RuntimeError("the node benchmark needs the colcon build: run scripts/build_ros.sh")
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="sm_node_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    domain = 10 + (os.getpid() * 13) % 90
    extra_params = dict(params or {})
    params = {"fusion.voxel_size_m": voxel_size_m, "fusion.device": "cpu", "completion.enabled": bool(completion),
              **extra_params}
    # Best-effort 640x480 images over Fast DDS's default transports lose samples on a loaded 2-core
    # machine before the node sees them; `reliable=True` measures the node itself (replayed input).
    env = {"FASTDDS_BUILTIN_TRANSPORTS": transports} if transports else {}
    params["node.reliable_inputs"] = bool(reliable)
    node = proc.start("semantic_mapping.ros.mapping_node", proc.node_args(params), domain, work, "node", env)
    out = work / "replay.json"
    try:
        driver = subprocess.run(
            proc.ros_command("semantic_mapping.ros.replay", [
                "--seed", seed, "--frames", num_frames, "--width", width_px, "--rate", rate_hz,
                "--voxel-size", voxel_size_m, "--out", out, "--settle-timeout", 60,
                *(["--watch-renders"] if watch_renders else [])]),
            cwd=work, env=proc.ros_env(domain, work / "ros_log", env), capture_output=True, text=True, timeout=timeout_s,
        )
        node_alive = node.poll() is None
    finally:
        proc.stop(node)
    if driver.returncode != 0 or not out.exists():
        node_log = (work / "node.log").read_text()[-3000:] if (work / "node.log").exists() else ""
        raise RuntimeError(f"node benchmark replay failed:\n{driver.stderr[-3000:]}\nnode log:\n{node_log}")
    r = json.loads(out.read_text())
    return {
        "node.drop_rate": float(r["drop_rate"]),
        "node.integrated_rate_hz": rate_hz * r["integrated"] / max(r["published"], 1),
        "node.latency_ms_p50": float(r["latency_ms_p50"]),
        "node.latency_ms_p95": float(r["latency_ms_p95"]),
        "node.objects_rate_hz": float(r.get("objects_rate_hz", 0.0)),
        "detail": {
            "seed": seed, "frames": r["published"], "integrated": r["integrated"], "width_px": width_px,
            "rate_hz": rate_hz, "voxel_size_m": voxel_size_m, "drops": r["drops"], "memory_mb": r["memory_mb"],
            "node_alive_at_end": node_alive, "work_dir": str(work), "fastdds_transports": transports or "default",
            "reliable_inputs": bool(reliable), "params": extra_params,
            "renders_received": r["renders_received"] if watch_renders else None,
            "objects": r.get("object_count", 0), "objects_fresh": r.get("objects_fresh", False),
            "objects_rate_hz_configured": float(params.get("node.objects_rate_hz", NodeConfig().objects_rate_hz)),
            "objects_classes": r.get("objects", {}).get("classes", []),
            "objects_diagnostics": r.get("objects_diagnostics", {}),
            "completion": params["completion.enabled"],
            "completion_diagnostics": r.get("completion_diagnostics", {}),
            "context_diagnostics": r.get("context_diagnostics", {}),
        },
    }


def figures(result: dict) -> list:
    """Benchmark records {"name", "value", "unit", "seeds", "detail"} (the format of eval/bench.py)."""
    seeds = [result["detail"]["seed"]]
    units = {"node.drop_rate": "fraction", "node.latency_ms_p50": "ms", "node.latency_ms_p95": "ms",
             "node.integrated_rate_hz": "Hz", "node.objects_rate_hz": "Hz"}
    return [{"name": name, "value": result[name], "unit": unit, "seeds": seeds, "detail": result["detail"]}
            for name, unit in units.items() if name in result]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=BENCH_SEED)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--transports", default="", help="FASTDDS_BUILTIN_TRANSPORTS for both processes (default: Fast DDS's)")
    parser.add_argument("--best-effort", action="store_true", help="sensor-data QoS inputs (the node's default) instead of reliable")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="extra node parameter, e.g. semantics.method=voting (repeatable; values as YAML)")
    parser.add_argument("--no-renders", action="store_true",
                        help="do not subscribe to the Gaussian-splat renders (by default a viewer watches them)")
    parser.add_argument("--no-completion", action="store_true",
                        help="run the node without scene completion (by default it completes chunks as it maps)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    import yaml

    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--param {item!r}: expected NAME=VALUE")
        params[name] = yaml.safe_load(value)
    t0 = time.monotonic()
    result = run_node_benchmark(args.seed, args.frames, args.width, args.rate, transports=args.transports or None,
                                reliable=not args.best_effort, params=params, watch_renders=not args.no_renders,
                                completion=not args.no_completion)
    print(f"node at {args.rate:g} Hz, {args.width} px, {args.frames} frames: drop rate "
          f"{100 * result['node.drop_rate']:.1f} %, latency image stamp -> map update "
          f"median {result['node.latency_ms_p50']:.0f} ms, p95 {result['node.latency_ms_p95']:.0f} ms, "
          f"{result['detail']['renders_received'] if not args.no_renders else 'no'} renders watched, "
          f"{result['detail']['objects']} objects published at {result['node.objects_rate_hz']:.2f} Hz "
          f"(configured {result['detail']['objects_rate_hz_configured']:g} Hz)"
          f"{'' if result['detail']['objects_fresh'] else ' (not of the last frames)'} "
          f"({time.monotonic() - t0:.0f} s)")
    print(f"input rate kept up with: {result['node.integrated_rate_hz']:.2f} Hz of {args.rate:g} Hz, completion "
          + (", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in result["detail"]["completion_diagnostics"].items())
             or ("on" if result["detail"]["completion"] else "off")))
    for name in ("objects", "context"):
        diagnostics = result["detail"][f"{name}_diagnostics"]
        if diagnostics:
            print(f"{name}: " + ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in diagnostics.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(figures(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
