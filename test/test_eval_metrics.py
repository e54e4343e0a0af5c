"""Evaluation metrics on hand-made cases with hand-computed answers."""


import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from semantic_mapping.eval.metrics import (
    SegmentationScores,
    best_dice,
    confusion_matrix,
    instance_iou,
    point_to_mesh_distance,
    sample_mesh_surface,
    segmentation_scores,
    semantic_voxel_confusion,
    semantic_voxel_scores,
    surface_accuracy_completeness,
    symmetric_best_dice,
    voxel_iou_precision_recall,
)

# ---------------------------------------------------------------- semantic segmentation


def test_perfect_prediction_scores_one():
    gt = np.random.default_rng(0).integers(0, 5, size=(48, 64))
    s = segmentation_scores(gt.copy(), gt, num_classes=5)
    assert s.miou == 1.0 and s.macc == 1.0 and s.overall_acc == 1.0
    assert set(s.iou) == {0, 1, 2, 3, 4}


def test_known_confusion_gives_known_ious():
    gt = np.array([0, 0, 1, 1, 2, 2, 255])
    pred = np.array([0, 1, 1, 1, 2, 0, 2])  # the last sample is ignored
    cm = confusion_matrix(pred, gt, num_classes=3)
    assert cm.shape == (3, 4) and cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0]])
    s = SegmentationScores.from_confusion(cm)
    # IoU_c = TP / (gt count + pred count - TP)
    assert s.iou == pytest.approx({0: 1 / 3, 1: 2 / 3, 2: 1 / 2})
    assert s.acc == pytest.approx({0: 1 / 2, 1: 1.0, 2: 1 / 2})
    assert s.miou == pytest.approx(0.5)
    assert s.macc == pytest.approx(2 / 3)
    assert s.overall_acc == pytest.approx(4 / 6)


def test_ignore_id_is_skipped_whatever_is_predicted():
    gt = np.array([[0, 255], [1, 255]])
    a = segmentation_scores(np.array([[0, 1], [1, 0]]), gt, num_classes=2)
    b = segmentation_scores(np.array([[0, 7], [1, -3]]), gt, num_classes=2)
    assert a.miou == b.miou == 1.0
    assert a.confusion.sum() == 2


def test_unknown_predictions_count_as_wrong():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 255, 1, -1])  # ignore id / negative = no prediction
    s = segmentation_scores(pred, gt, num_classes=2)
    np.testing.assert_array_equal(s.confusion, [[1, 0, 1], [0, 1, 1]])
    assert s.iou == pytest.approx({0: 0.5, 1: 0.5})
    assert s.overall_acc == pytest.approx(0.5)


def test_classes_absent_from_gt_are_left_out_of_the_means():
    s = segmentation_scores(np.array([0, 2]), np.array([0, 0]), num_classes=3)
    assert set(s.iou) == {0}  # class 2 was only predicted; classes 1 and 2 have no gt
    assert s.miou == pytest.approx(0.5)
    assert not np.isnan(s.miou) and not np.isnan(s.macc)
    assert set(s.as_dict()) == {"miou", "macc", "overall_acc", "iou", "acc"}


def test_confusion_matrices_accumulate_over_frames():
    rng = np.random.default_rng(1)
    frames = [(rng.integers(-1, 4, (8, 8)), rng.integers(0, 4, (8, 8))) for _ in range(3)]
    total = sum(confusion_matrix(p, g, 4) for p, g in frames)
    joint = confusion_matrix(np.stack([p for p, _ in frames]), np.stack([g for _, g in frames]), 4)
    np.testing.assert_array_equal(total, joint)
    # a square [C, C] matrix (no unknown column) is accepted too
    sq = SegmentationScores.from_confusion(total[:, :4])
    assert sq.overall_acc >= SegmentationScores.from_confusion(total).overall_acc


def test_segmentation_errors():
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros(3), np.zeros(4), 2)
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros(2), np.array([0, 5]), 2)  # gt 5 is neither a class nor ignore
    with pytest.raises(ValueError):
        segmentation_scores(np.zeros(2), np.full(2, 255), 2)  # nothing labelled


# ---------------------------------------------------------------- surface geometry

# the unit square in the z = 0 plane, two triangles
SQUARE_V = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float64)
SQUARE_T = np.array([[0, 1, 2], [0, 2, 3]])


def _grid_on_square(x_max, step=0.01):
    xs = np.arange(0.0, x_max + 1e-9, step)
    ys = np.arange(0.0, 1.0 + 1e-9, step)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    return np.stack([X.ravel(), Y.ravel(), np.zeros(X.size)], axis=1)


def test_point_to_mesh_distance_on_a_plane():
    pts = np.array([[0.5, 0.5, 0.01], [0.2, 0.7, -0.02], [0.9, 0.1, 0.03], [0.5, 0.5, 0.10], [2.0, 0.5, 0.0]])
    d = point_to_mesh_distance(pts, SQUARE_V, SQUARE_T)
    np.testing.assert_allclose(d, [0.01, 0.02, 0.03, 0.10, 1.0], atol=1e-6)


def test_surface_accuracy_with_points_at_known_heights():
    pts = np.array([[0.5, 0.5, 0.01], [0.2, 0.7, 0.02], [0.9, 0.1, -0.03], [0.5, 0.5, 0.10]])
    r = surface_accuracy_completeness(pts, SQUARE_V, SQUARE_T, threshold_m=0.05, num_gt_samples=2000)
    assert r["accuracy_mean_m"] == pytest.approx(0.04, abs=1e-6)
    assert r["accuracy_median_m"] == pytest.approx(0.025, abs=1e-6)
    assert r["precision"] == pytest.approx(0.75)
    assert r["chamfer_m"] == pytest.approx(0.5 * (r["accuracy_mean_m"] + r["completeness_mean_m"]))


def test_completeness_drops_when_half_the_surface_is_missing():
    full = surface_accuracy_completeness(_grid_on_square(1.0), SQUARE_V, SQUARE_T, 0.02, num_gt_samples=20000)
    half = surface_accuracy_completeness(_grid_on_square(0.5), SQUARE_V, SQUARE_T, 0.02, num_gt_samples=20000)
    assert full["precision"] == half["precision"] == 1.0
    assert full["accuracy_mean_m"] < 1e-6
    assert full["recall"] == 1.0 and full["completeness_mean_m"] < 0.006  # grid spacing 1 cm
    # samples with x in (0.5, 1] lie x - 0.5 from the kept half: recall ~ 0.52, mean ~ 0.125 m
    assert half["recall"] == pytest.approx(0.52, abs=0.015)
    assert half["completeness_mean_m"] == pytest.approx(0.125, abs=0.006)
    assert half["fscore"] == pytest.approx(2 * half["recall"] / (1 + half["recall"]))


def test_empty_prediction_gives_zero_scores():
    r = surface_accuracy_completeness(np.zeros((0, 3)), SQUARE_V, SQUARE_T, 0.05)
    assert r["fscore"] == 0.0 and r["chamfer_m"] == float("inf")


def test_mesh_sampling_is_area_uniform_and_seeded():
    V = np.array([[0, 0, 0], [2, 0, 0], [2, 1, 0], [0, 1, 0], [3, 0, 0], [3, 0.1, 0]], dtype=float)
    T = np.array([[0, 1, 2], [0, 2, 3], [1, 4, 5]])  # areas 1, 1, 0.05
    s = sample_mesh_surface(V, T, 40000, seed=3)
    np.testing.assert_array_equal(s, sample_mesh_surface(V, T, 40000, seed=3))
    assert np.all(s[:, 2] == 0)
    assert np.mean(s[:, 0] > 2) == pytest.approx(0.05 / 2.05, abs=0.004)
    in_rect = s[s[:, 0] <= 2]
    assert in_rect[:, 0].mean() == pytest.approx(1.0, abs=0.01)
    assert in_rect[:, 1].mean() == pytest.approx(0.5, abs=0.01)


# ---------------------------------------------------------------- voxel completion


def _cube(lo, n):
    r = np.arange(lo, lo + n)
    return np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)


def test_voxel_iou_on_overlapping_cubes():
    pred, gt = _cube(0, 4), _cube(2, 4)  # 64 voxels each, overlap 2^3 = 8
    r = voxel_iou_precision_recall(pred, gt)
    assert r["iou"] == pytest.approx(8 / 120)
    assert r["precision"] == pytest.approx(8 / 64) and r["recall"] == pytest.approx(8 / 64)
    # negative indices, duplicates and a smaller prediction
    r2 = voxel_iou_precision_recall(np.concatenate([_cube(-3, 2), _cube(-3, 2)]), _cube(-3, 4))
    assert r2 == pytest.approx({"iou": 8 / 64, "precision": 1.0, "recall": 8 / 64})
    assert voxel_iou_precision_recall(np.zeros((0, 3), int), gt) == {"iou": 0.0, "precision": 0.0, "recall": 0.0}
    with pytest.raises(ValueError):
        voxel_iou_precision_recall(pred, np.zeros((0, 3), int))


def test_semantic_voxel_scores_convention():
    gt_idx = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0]])
    gt_lab = np.array([0, 0, 1, 1, 255])
    # gt voxel 3 is missing from the prediction ('empty'); [9, 9, 9] is not in gt (ignored)
    pred_idx = np.array([[9, 9, 9], [2, 0, 0], [0, 0, 0], [1, 0, 0], [4, 0, 0]])
    pred_lab = np.array([0, 1, 0, 1, 1])
    cm = semantic_voxel_confusion(pred_idx, pred_lab, gt_idx, gt_lab, num_classes=2)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 1]])
    s = semantic_voxel_scores(pred_idx, pred_lab, gt_idx, gt_lab, num_classes=2)
    assert s.iou == pytest.approx({0: 1 / 2, 1: 1 / 3})
    assert s.acc == pytest.approx({0: 1 / 2, 1: 1 / 2})
    assert s.overall_acc == pytest.approx(2 / 4)  # normalised by the labelled gt voxels
    # no prediction at all: everything is empty, IoU 0
    none = semantic_voxel_scores(np.zeros((0, 3), int), np.zeros(0, int), gt_idx, gt_lab, 2)
    assert none.miou == 0.0
    with pytest.raises(ValueError):
        semantic_voxel_scores(np.array([[0, 0, 0], [0, 0, 0]]), np.array([0, 1]), gt_idx, gt_lab, 2)


# ---------------------------------------------------------------- instances (DiscoNeRF)


def _halves():
    gt = np.zeros((10, 10), np.int32)
    gt[:, :5], gt[:, 5:] = 1, 2  # A = left half (50 px), B = right half (50 px)
    return gt


def test_identical_masks_score_one_whatever_the_ids():
    gt = _halves()
    pred = np.where(gt == 1, 40, 7)  # same masks, other ids
    assert instance_iou(pred, gt) == 1.0
    assert best_dice(pred, gt) == 1.0 and best_dice(gt, pred) == 1.0
    assert symmetric_best_dice(pred, gt) == 1.0


def test_split_mask_gives_known_values():
    gt = _halves()
    pred = np.full((10, 10), 7, np.int32)
    pred[:5, :5], pred[5:, :5] = 5, 6  # A split into two 25 px pieces, B exact
    # A matches one piece: IoU 25/50; B: 1; area-weighted (50*0.5 + 50*1) / 100
    assert instance_iou(pred, gt) == pytest.approx(0.75)
    # Dice(piece, A) = 2*25 / (25 + 50) = 2/3
    assert best_dice(pred, gt) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert best_dice(gt, pred) == pytest.approx((2 / 3 + 1) / 2)
    assert symmetric_best_dice(pred, gt) == pytest.approx(7 / 9)


def test_false_positive_masks_affect_sbd_but_not_bd_of_gt():
    gt = np.zeros((10, 10), np.int32)
    gt[:5, :5], gt[:5, 5:] = 1, 2  # two 25 px objects; the bottom half is no instance
    pred = gt.copy()
    assert symmetric_best_dice(pred, gt) == 1.0
    pred[5:, :] = 9  # a false-positive mask where gt has no instance
    assert best_dice(gt, pred) == 1.0
    assert best_dice(pred, gt) == pytest.approx(2 / 3)
    assert symmetric_best_dice(pred, gt) == pytest.approx(2 / 3)
    assert instance_iou(pred, gt) == 1.0


def test_matching_is_one_to_one_and_area_weighted():
    gt = _halves()
    # one mask covering both objects can be matched to one of them only: (50 * 0.5 + 50 * 0) / 100
    assert instance_iou(np.ones((10, 10), np.int32), gt) == pytest.approx(0.25)
    gt = np.ones((10, 10), np.int32)
    gt[8:, :] = 2  # A 80 px, B 20 px
    pred = np.where(gt == 1, 3, 0)  # A exact, B not predicted (id 0 = no instance)
    assert instance_iou(pred, gt) == pytest.approx(0.8)
    assert instance_iou(pred, gt, ignore_pred_zero=False) == 1.0  # id 0 now a mask equal to B
    gt0 = np.where(gt == 2, 0, gt)
    assert instance_iou(pred, gt0, ignore_gt_zero=False, ignore_pred_zero=False) == 1.0
    with pytest.raises(ValueError):
        instance_iou(pred, np.zeros_like(gt))
    with pytest.raises(ValueError):
        instance_iou(pred[:5], gt)


def _brute_force(pred, gt):
    """Reference with explicit boolean masks (id 0 = none)."""
    P = [pred == i for i in np.unique(pred) if i != 0]
    G = [gt == j for j in np.unique(gt) if j != 0]
    inter = np.array([[np.sum(p & g) for g in G] for p in P], dtype=float)
    ap = np.array([p.sum() for p in P], dtype=float)
    ag = np.array([g.sum() for g in G], dtype=float)
    dice = 2 * inter / (ap[:, None] + ag[None, :])
    iou = inter / (ap[:, None] + ag[None, :] - inter)
    r, c = linear_sum_assignment(-iou)
    matched = np.zeros(len(G))
    matched[c] = iou[r, c]
    return np.sum(ag * matched) / ag.sum(), dice.max(1).mean(), dice.max(0).mean()


def test_vectorised_metrics_match_explicit_masks_including_large_ids():
    rng = np.random.default_rng(4)
    gt = rng.integers(0, 6, (12, 16)).repeat(4, 0).repeat(4, 1)
    pred = np.roll(gt, 3, axis=1) * 3 + rng.integers(0, 2, gt.shape) * (gt > 2)
    iou, bd_pg, bd_gp = _brute_force(pred, gt)
    assert instance_iou(pred, gt) == pytest.approx(iou)
    assert best_dice(pred, gt) == pytest.approx(bd_pg)
    assert best_dice(gt, pred) == pytest.approx(bd_gp)
    assert symmetric_best_dice(pred, gt) == pytest.approx(min(bd_pg, bd_gp))
    big = pred.astype(np.int64) * 10_000_019  # sparse ids take the sorting path
    assert instance_iou(big, gt) == pytest.approx(iou)
    assert symmetric_best_dice(big, gt) == pytest.approx(min(bd_pg, bd_gp))
    every_pixel = np.arange(1, 65 * 65 + 1).reshape(65, 65)  # 4225 x 4225 masks: refused, not OOM
    with pytest.raises(ValueError, match="too many masks"):
        best_dice(every_pixel, every_pixel)


def test_in_range_scores_leave_out_what_lies_beyond_the_map():
    from semantic_mapping.eval.objects_bench import in_range_scores, view_scores

    gt = np.zeros((20, 20), np.int32)
    gt[:, :10], gt[:, 10:] = 1, 2
    pred = np.where(gt == 1, 7, 0)  # the far segment 2 is not rendered
    in_range = np.zeros(gt.shape, bool)
    in_range[:, :10] = True
    assert view_scores(pred, gt)[0] == pytest.approx(0.5)
    np.testing.assert_allclose(in_range_scores(pred, gt, in_range), [1.0, 1.0, 1.0])
    # a prediction that spills into the far half is judged only on what lies in range
    spill = np.where(gt > 0, 7, 0)
    np.testing.assert_allclose(in_range_scores(spill, gt, in_range), [1.0, 1.0, 1.0])
    assert view_scores(spill, gt)[0] < 1.0
