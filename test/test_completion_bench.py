"""Completion benchmark metrics: the surface of a dense TSDF and the geometry scores of SSR-2D Table 2."""

import numpy as np
import pytest

from semantic_mapping.eval.completion_bench import chunk_geometry_counts, geometry_scores, surface_voxels


def _plane_tsdf(height_voxels: float, shape=(8, 8, 12), trunc_voxels: float = 4.0) -> np.ndarray:  # [X, Y, Z]
    z = np.arange(shape[2], dtype=np.float32)
    return np.broadcast_to(np.clip((z - height_voxels) / trunc_voxels, -1, 1), shape).copy()


@pytest.mark.parametrize("height, layer", [(5.3, 5), (5.7, 6), (5.0, 5)])
def test_a_plane_is_one_voxel_thick_at_the_voxel_nearest_its_height(height, layer):
    surface = surface_voxels(_plane_tsdf(height), np.ones((8, 8, 12), bool))
    assert np.array_equal(np.flatnonzero(surface.any(axis=(0, 1))), [layer])
    assert surface[:, :, layer].all()


def test_unknown_voxels_are_never_surface_and_hide_crossings():
    tsdf = _plane_tsdf(5.3)
    known = np.ones(tsdf.shape, bool)
    known[:4, :, 6] = False  # the positive side of the crossing is unknown for x < 4
    surface = surface_voxels(tsdf, known)
    assert not surface[:4].any() and surface[4:, :, 5].all()
    assert not surface_voxels(tsdf, np.zeros(tsdf.shape, bool)).any()


def test_geometry_scores_count_voxels():
    gt = surface_voxels(_plane_tsdf(5.3), np.ones((8, 8, 12), bool))
    shifted = surface_voxels(_plane_tsdf(6.3), np.ones((8, 8, 12), bool))
    assert geometry_scores(np.array([gt.sum(), 0, 0])) == {"iou": 1.0, "precision": 1.0, "recall": 1.0}
    tp, fp, fn = np.sum(shifted & gt), np.sum(shifted & ~gt), np.sum(~shifted & gt)
    assert geometry_scores(np.array([tp, fp, fn])) == {"iou": 0.0, "precision": 0.0, "recall": 0.0}
    half = geometry_scores(np.array([32, 32, 0]))
    assert half["precision"] == 0.5 and half["recall"] == 1.0 and half["iou"] == 0.5


def test_chunk_counts_score_the_prediction_inside_the_hole_only_where_the_map_keeps_it():
    complete = _plane_tsdf(5.3)
    known = np.ones(complete.shape, bool)
    observed = known.copy()
    observed[:4] = False  # a hole over half the plane
    exact = chunk_geometry_counts(complete, known, complete, observed, complete, ~observed, ~observed)
    assert exact["raw"].tolist() == [32, 0, 32]  # the observed half, nothing in the hole
    assert exact["completed"].tolist() == [64, 0, 0]
    assert exact["completed_in_holes"].tolist() == [32, 0, 0]
    shifted = chunk_geometry_counts(complete, known, complete, observed, _plane_tsdf(7.3), ~observed, ~observed)
    assert shifted["completed_in_holes"].tolist() == [0, 32, 32]
    assert shifted["raw"].tolist() == exact["raw"].tolist()
    half_kept = ~observed
    half_kept[:2] = False  # predictions the map leaves out (under completion.min_confidence)
    partly = chunk_geometry_counts(complete, known, complete, observed, complete, ~observed, half_kept)
    assert partly["completed_in_holes"].tolist() == [16, 0, 16]
    assert partly["completed_every_prediction"].tolist() == exact["completed"].tolist()


def test_predictions_the_map_leaves_out_make_no_surface_against_observed_voxels():
    complete = _plane_tsdf(5.3)
    known = np.ones(complete.shape, bool)
    observed = known.copy()
    observed[:4] = False
    solid = np.full(complete.shape, -1.0, np.float32)  # a prediction that fills the hole
    kept = chunk_geometry_counts(complete, known, complete, observed, solid, ~observed, ~observed)
    assert kept["completed"][1] > 0  # its top meets the observed free space: a false surface
    left_out = chunk_geometry_counts(complete, known, complete, observed, solid, ~observed, np.zeros(complete.shape, bool))
    assert left_out["completed"].tolist() == left_out["raw"].tolist()
    assert left_out["completed_every_prediction"].tolist() == kept["completed"].tolist()
