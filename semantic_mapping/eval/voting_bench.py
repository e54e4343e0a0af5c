"""Soft-voting figures of `semantic-mapping bench`: learned voting against Bayesian fusion in the same run.

Each benchmark scene (`sim.sequence.VOTING_BENCHMARK_SEEDS`) is simulated once and every frame goes
to all variants (the baseline: Bayesian fusion as `semantics.method: bayesian` runs it; learned voting
(frame votes); both with labels read per voxel instead of in their surface context; our geometry prior
left out; equal view weights; frame votes over logits, with weights trained for them (GNeSF Table 4);
the keyframe votes added; and the GNeSF keyframe path alone, keyframe votes multiplying Bayesian
fusion, with the ablations of GNeSF Table 4 on it: no visibility test, votes over logits), then each
map is scored like `fusion.miou_3d`. The harder noise setting lowers the simulated segmenter's 2D mIoU
(`HARD_NOISE`); no weights were trained on it.
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
FRAME_VOTE_LOGITS_WEIGHTS = LOGITS_WEIGHTS.with_name("frame_votes_logits.pt")
"""The ablation's frame-vote weights, trained by `semantic-mapping train-voting --frame-votes --vote-space logits`."""

PLAIN = {"context_iterations": 0}
"""Labels read from each voxel's own distribution, without the surface context (`semantics.context`)."""
VOTING = {"semantics": {"method": "voting"}}
KEYFRAMES = {"frame_votes": False, "keyframe_votes": True}
"""The GNeSF keyframe path alone: keyframe votes multiplying Bayesian fusion of the frames."""
VARIANTS = {
    "bayesian": {"semantics": {"method": "bayesian"}},
    "voting": VOTING,
    "bayesian_no_context": {"semantics": {"method": "bayesian", **PLAIN}},
    "voting_no_context": {"semantics": {"method": "voting", **PLAIN}},
    "voting_no_prior": {**VOTING, "voting": {"geometry_prior": False}},
    "voting_equal_weights": {**VOTING, "voting": {"learned": False}},
    "voting_logits": {**VOTING, "voting": {"frame_vote_weights": str(FRAME_VOTE_LOGITS_WEIGHTS)}},
    "voting_keyframe_votes": {**VOTING, "voting": {"keyframe_votes": True}},
    "keyframes": {**VOTING, "voting": KEYFRAMES},
    "keyframes_no_visibility": {**VOTING, "voting": {**KEYFRAMES, "visibility": False}},
    "keyframes_logits": {**VOTING, "voting": {**KEYFRAMES, "weights": str(LOGITS_WEIGHTS)}},
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
                             frame_vote_voxels=stats.frame_vote_voxels, frame_vote_seconds=stats.frame_vote_seconds,
                             voxels_per_keyframe=stats.voxels_voted / max(stats.keyframes, 1),
                             prior_ms_per_frame=1000 * stats.prior_seconds / len(recording),
                             frame_vote_ms_per_frame=1000 * stats.frame_vote_seconds / max(stats.frame_vote_frames, 1))
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

    def gain_spread(scenes) -> dict:
        """Each scene's gain of voting over Bayesian fusion (points) and the standard error of their mean."""
        gains = {seed: 100 * (s["voting"]["miou_3d"] - s["bayesian"]["miou_3d"]) for seed, s in scenes.items()}
        spread = np.std(list(gains.values()), ddof=1) / np.sqrt(len(gains)) if len(gains) > 1 else float("nan")
        return {"gain_per_seed": gains, "gain_standard_error": float(spread)}

    ablation = {name: mean(normal, name) for name in VARIANTS}
    keyframe_voted = sum(s["voting"]["voxels_voted"] for s in normal.values())
    keyframe_seconds = sum(s["voting"]["vote_seconds"] for s in normal.values())
    frame_voted = sum(s["voting"]["frame_vote_voxels"] for s in normal.values())
    frame_seconds = sum(s["voting"]["frame_vote_seconds"] for s in normal.values())
    voted, seconds = keyframe_voted + frame_voted, keyframe_seconds + frame_seconds
    return [
        Figure("voting.miou_3d", ablation["voting"], "mIoU", seeds,
               {"per_seed": per_seed(normal, "voting"), "bayesian_per_seed": per_seed(normal, "bayesian"),
                "coverage": mean(normal, "voting", "coverage"), "ablation": ablation}),
        Figure("voting.gain_vs_bayesian", 100 * (ablation["voting"] - ablation["bayesian"]), "points", seeds,
               {"bayesian_miou_3d": ablation["bayesian"], "voting_miou_3d": ablation["voting"],
                "bayesian_no_context_miou_3d": ablation["bayesian_no_context"],
                "input_miou_2d": float(np.mean([s["input_miou_2d"] for s in normal.values()])), **gain_spread(normal)}),
        Figure("voting.gain_vs_bayesian_hard_noise", 100 * (mean(hard, "voting") - mean(hard, "bayesian")), "points",
               seeds, {"bayesian_miou_3d": mean(hard, "bayesian"), "voting_miou_3d": mean(hard, "voting"),
                       "bayesian_no_context_miou_3d": mean(hard, "bayesian_no_context"),
                       "voting_per_seed": per_seed(hard, "voting"), "bayesian_per_seed": per_seed(hard, "bayesian"),
                       "input_miou_2d": float(np.mean([s["input_miou_2d"] for s in hard.values()])),
                       "segmenter": HARD_NOISE, **gain_spread(hard)}),
        Figure("voting.voxels_per_s", voted / seconds if seconds else 0.0, "voxels/s", seeds,
               {"voxels_voted": voted, "vote_seconds": seconds, "device": "cpu",
                "keyframe_voxels_voted": keyframe_voted, "keyframe_vote_seconds": keyframe_seconds,
                "frame_vote_voxels": frame_voted, "frame_vote_seconds": frame_seconds,
                "keyframes": sum(s["voting"]["keyframes"] for s in normal.values()),
                "voxels_per_keyframe": float(np.mean([s["voting"]["voxels_per_keyframe"] for s in normal.values()])),
                "prior_ms_per_frame": float(np.mean([s["voting"]["prior_ms_per_frame"] for s in normal.values()])),
                "frame_vote_ms_per_frame": float(np.mean([s["voting"]["frame_vote_ms_per_frame"] for s in normal.values()])),
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
