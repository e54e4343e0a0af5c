"""The benchmark's voting figures: per-scene gains and their standard error, from the scenes' scores."""

from __future__ import annotations

import numpy as np

from semantic_mapping.eval import bench, voting_bench


def _scene(seed: int, variants, bayesian: float, voting: float) -> dict:
    stats = {"keyframes": 1, "voxels_voted": 10, "vote_seconds": 1.0, "frame_vote_voxels": 100,
             "frame_vote_seconds": 1.0, "voxels_per_keyframe": 10.0, "prior_ms_per_frame": 1.0,
             "frame_vote_ms_per_frame": 1.0, "context_ms": 5.0, "context_voxels": 100}
    out = {"input_miou_2d": 0.6}
    for name in variants:
        out[name] = {"miou_3d": {"bayesian": bayesian, "voting": voting}.get(name, 0.5), "coverage": 1.0, **stats}
    return out


def test_voting_gain_reports_each_scene_and_the_standard_error(monkeypatch):
    scores = {1: (0.70, 0.72), 2: (0.60, 0.66), 3: (0.80, 0.81)}  # seed: (Bayesian, voting) 3D mIoU
    monkeypatch.setattr(voting_bench, "voting_scene", lambda seed, n, variants, v, hard_noise=False, progress=True:
                        _scene(seed, variants, *scores[seed]))
    figures = {f.name: f for f in voting_bench.voting_figures([1, 2, 3], 10, 0.04, progress=False)}
    gain = figures["voting.gain_vs_bayesian"]
    assert np.isclose(gain.value, 3.0)
    assert np.allclose(list(gain.detail["gain_per_seed"].values()), [2.0, 6.0, 1.0])
    assert np.isclose(gain.detail["gain_standard_error"], np.std([2.0, 6.0, 1.0], ddof=1) / np.sqrt(3))
    table = bench.format_table(list(figures.values()))
    assert "per scene +2.0, +6.0, +1.0 (standard error 1.5)" in table


def test_one_scene_has_no_standard_error(monkeypatch):
    monkeypatch.setattr(voting_bench, "voting_scene", lambda seed, n, variants, v, hard_noise=False, progress=True:
                        _scene(seed, variants, 0.70, 0.72))
    figures = voting_bench.voting_figures([7], 10, 0.04, progress=False)
    table = bench.format_table(figures)
    assert "one scene +2.0 (no standard error from one scene)" in table and "nan" not in table


def test_the_voting_stage_reads_its_own_ten_held_out_scenes(monkeypatch):
    from semantic_mapping.sim.sequence import BENCHMARK_SEEDS, DEVELOPMENT_SEEDS, VOTING_BENCHMARK_SEEDS

    assert len(VOTING_BENCHMARK_SEEDS) == 10 and VOTING_BENCHMARK_SEEDS[:3] == BENCHMARK_SEEDS
    assert not any(s in DEVELOPMENT_SEEDS for s in VOTING_BENCHMARK_SEEDS)
    seen = {}
    monkeypatch.setattr(voting_bench, "voting_figures", lambda seeds, *args: seen.setdefault("voting", seeds) and [])
    monkeypatch.setattr(bench, "_fusion_figures", lambda seeds, *args: seen.setdefault("fusion", seeds) and [])
    bench.collect_figures(only=("fusion", "voting"), progress=False)
    assert seen == {"voting": list(VOTING_BENCHMARK_SEEDS), "fusion": list(BENCHMARK_SEEDS)}
    seen.clear()
    bench.collect_figures(only=("fusion", "voting"), progress=False, seeds=[5])  # a development run
    assert seen == {"voting": [5], "fusion": [5]}
