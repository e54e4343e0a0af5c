"""Soft-voting figures of `semantic-mapping bench`: learned voting against Bayesian fusion in the same run.

Each benchmark scene is simulated once and every frame goes to all variants (the baseline: Bayesian
fusion as `semantics.method: bayesian` runs it; learned voting; both with labels read per voxel instead
of in their surface context; our geometry prior left out; and the ablations of GNeSF Table 4: equal
view weights, no visibility test, votes over logits), then each map is scored like `fusion.miou_3d`. The harder noise setting
lowers the simulated segmenter's 2D mIoU (`HARD_NOISE`); no weights were trained on it.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

HARD_NOISE = {"target_miou": 0.50, "frame_miou_jitter": 0.08}
"""Segmenter settings of the harder noise setting (training used the defaults: 0.62, 0.05)."""
LOGITS_WEIGHTS = Path(__file__).resolve().parent.parent / "semantics" / "weights" / "voting_logits.pt"
"""The ablation's network, trained by `semantic-mapping train-voting --vote-space logits`."""

PLAIN = {"context_iterations": 0}
"""Labels read from each voxel's own distribution, without the surface context (`semantics.context`)."""
VARIANTS = {
    "bayesian": {"semantics": {"method": "bayesian"}},
    "voting": {"semantics": {"method": "voting"}},
    "bayesian_no_context": {"semantics": {"method": "bayesian", **PLAIN}},
    "voting_no_context": {"semantics": {"method": "voting", **PLAIN}},
    "voting_no_prior": {"semantics": {"method": "voting"}, "voting": {"geometry_prior": False}},
    "voting_equal_weights": {"semantics": {"method": "voting"}, "voting": {"learned": False}},
    "voting_no_visibility": {"semantics": {"method": "voting"}, "voting": {"visibility": False}},
    "voting_logits": {"semantics": {"method": "voting"}, "voting": {"weights": str(LOGITS_WEIGHTS)}},
}
HARD_NOISE_VARIANTS = ("bayesian", "voting", "bayesian_no_context")


def _mapper(variant: str, voxel_size_m: float):
    from semantic_mapping.config import load_config
    from semantic_mapping.pipeline import Mapper

    overrides = {"fusion": {"voxel_size_m": voxel_size_m, "device": "cpu"}, "objects": {"enabled": False}, **VARIANTS[variant]}
    mapper = Mapper(load_config(None, overrides))
    if mapper.semantics_method != overrides["semantics"]["method"]:
        raise RuntimeError(f"variant {variant}: the voting weights did not load (see the error above)")
    return mapper


def voting_scene(seed: int, num_frames: int, variants, voxel_size_m: float, hard_noise: bool = False,
                 progress: bool = True) -> dict:
    """Map scene `seed` with every variant on the same frames; {variant: quality and voting stats}."""
    from tqdm import tqdm

    from semantic_mapping.config import SimConfig
    from semantic_mapping.eval.mapping_eval import FrameSegmentationTally, SurfaceVisibility, evaluate_map
    from semantic_mapping.sim.ground_truth import voxelize_surface
    from semantic_mapping.sim.sequence import simulate

    sim = SimConfig()
    if hard_noise:
        sim = replace(sim, segmenter=replace(sim.segmenter, **HARD_NOISE))
    recording = simulate(seed, sim, num_frames=num_frames)
    mappers = {name: _mapper(name, voxel_size_m) for name in variants}
    any_mapper = next(iter(mappers.values()))
    visibility = SurfaceVisibility(voxelize_surface(recording.mesh, voxel_size_m), any_mapper.config.fusion.depth_max_m)
    tally = FrameSegmentationTally(any_mapper.label_space.num_classes, any_mapper.label_space.ignore_id)
    desc = f"voting scene {seed}{' (hard noise)' if hard_noise else ''}"
    for i in tqdm(range(len(recording)), desc=desc, unit="frame", file=sys.stderr, disable=not progress):
        frame = recording.frame(i, masks=False)
        tally.add(frame)
        visibility.add(frame)
        for name, mapper in mappers.items():
            if not mapper.integrate(frame).accepted:
                raise RuntimeError(f"benchmark frame {i} of scene {seed} was rejected by {name}")
    out = {"input_miou_2d": tally.mean_miou}
    for name, mapper in mappers.items():
        quality = evaluate_map(mapper, recording.mesh, visibility)
        out[name] = {"miou_3d": quality["miou_3d"], "coverage": quality["coverage"]}
        if mapper.voting is not None:
            stats = mapper.voting.stats
            out[name].update(keyframes=stats.keyframes, voxels_voted=stats.voxels_voted,
                             vote_seconds=stats.vote_seconds, voxels_per_s=stats.voxels_per_s,
                             voxels_per_keyframe=stats.voxels_voted / max(stats.keyframes, 1),
                             prior_ms_per_frame=1000 * stats.prior_seconds / len(recording))
        context = mapper.map.context
        if context is not None and context.refreshes:
            out[name].update(context_ms=context.ms_per_refresh, context_voxels=context.voxels)
    return out


def voting_figures(seeds: list, num_frames: int, voxel_size_m: float, progress: bool = True) -> list:
    """voting.miou_3d, voting.gain_vs_bayesian (+ _hard_noise), voting.voxels_per_s and the ablation table."""
    from semantic_mapping.eval.bench import Figure

    normal = {seed: voting_scene(seed, num_frames, VARIANTS, voxel_size_m, progress=progress) for seed in seeds}
    hard = {seed: voting_scene(seed, num_frames, HARD_NOISE_VARIANTS, voxel_size_m, hard_noise=True, progress=progress)
            for seed in seeds}

    def mean(scenes, variant, key="miou_3d"):
        return float(np.mean([s[variant][key] for s in scenes.values()]))

    def per_seed(scenes, variant):
        return {seed: s[variant]["miou_3d"] for seed, s in scenes.items()}

    ablation = {name: mean(normal, name) for name in VARIANTS}
    voted = sum(s["voting"]["voxels_voted"] for s in normal.values())
    seconds = sum(s["voting"]["vote_seconds"] for s in normal.values())
    return [
        Figure("voting.miou_3d", ablation["voting"], "mIoU", seeds,
               {"per_seed": per_seed(normal, "voting"), "bayesian_per_seed": per_seed(normal, "bayesian"),
                "coverage": mean(normal, "voting", "coverage"), "ablation": ablation}),
        Figure("voting.gain_vs_bayesian", 100 * (ablation["voting"] - ablation["bayesian"]), "points", seeds,
               {"bayesian_miou_3d": ablation["bayesian"], "voting_miou_3d": ablation["voting"],
                "bayesian_no_context_miou_3d": ablation["bayesian_no_context"],
                "input_miou_2d": float(np.mean([s["input_miou_2d"] for s in normal.values()]))}),
        Figure("voting.gain_vs_bayesian_hard_noise", 100 * (mean(hard, "voting") - mean(hard, "bayesian")), "points",
               seeds, {"bayesian_miou_3d": mean(hard, "bayesian"), "voting_miou_3d": mean(hard, "voting"),
                       "bayesian_no_context_miou_3d": mean(hard, "bayesian_no_context"),
                       "voting_per_seed": per_seed(hard, "voting"), "bayesian_per_seed": per_seed(hard, "bayesian"),
                       "input_miou_2d": float(np.mean([s["input_miou_2d"] for s in hard.values()])),
                       "segmenter": HARD_NOISE}),
        Figure("voting.voxels_per_s", voted / seconds if seconds else 0.0, "voxels/s", seeds,
               {"voxels_voted": voted, "vote_seconds": seconds, "device": "cpu",
                "keyframes": sum(s["voting"]["keyframes"] for s in normal.values()),
                "voxels_per_keyframe": float(np.mean([s["voting"]["voxels_per_keyframe"] for s in normal.values()])),
                "prior_ms_per_frame": float(np.mean([s["voting"]["prior_ms_per_frame"] for s in normal.values()])),
                "context_ms_per_map": float(np.mean([s["voting"]["context_ms"] for s in normal.values()])),
                "context_voxels_per_map": float(np.mean([s["voting"]["context_voxels"] for s in normal.values()]))}),
    ]


def ablation_table(figures: list) -> str:
    """Markdown table of the ablation (3D mIoU per variant), from the voting.miou_3d figure."""
    figure = next((f for f in figures if f.name == "voting.miou_3d"), None)
    if figure is None:
        return ""
    rows = ["| variant | 3D mIoU | vs learned voting |", "| --- | --- | --- |"]
    full = figure.detail["ablation"]["voting"]
    for name, value in figure.detail["ablation"].items():
        rows.append(f"| {name} | {value:.4f} | {100 * (value - full):+.1f} points |")
    return "\n".join(rows)
