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
