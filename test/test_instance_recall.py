"""3D instance recall of predicted objects against ground-truth instances."""

import numpy as np
import pytest

from semantic_mapping.eval.metrics import instance_recall


def test_instance_recall_perfect():
    gt = np.repeat([0, 1, 2, 3], 10)
    pred = np.repeat([0, 40, 50, 60], 10)
    r = instance_recall(gt, pred, min_voxels=5)
    assert r["recall"] == 1.0 and r["evaluated"] == 3 and r["matched"] == 3
    assert r["merged"] == 0 and r["split"] == 0
    assert [p["best_object"] for p in r["per_instance"]] == [40, 50, 60]
    assert all(p["best_iou"] == 1.0 and p["status"] == "matched" for p in r["per_instance"])


def test_instance_recall_merged():
    gt = np.repeat([1, 2, 0], [10, 10, 5])
    pred = np.repeat([7, 0], [22, 3])  # one object over both instances + 2 background voxels
    r = instance_recall(gt, pred, min_voxels=5)
    assert r["evaluated"] == 2 and r["matched"] == 0 and r["merged"] == 2 and r["split"] == 0
    assert r["recall"] == 0.0
    assert r["per_instance"][0]["best_iou"] == pytest.approx(10 / 22)
    assert {p["status"] for p in r["per_instance"]} == {"merged"}


def test_merge_with_unevaluated_instance_is_not_merged():
    gt = np.repeat([1, 2, 0], [10, 3, 5])  # instance 2 is under min_voxels
    pred = np.repeat([7, 0], [15, 3])  # covers 1 and 2 fully, IoU(1) = 10/15
    r = instance_recall(gt, pred, min_voxels=5)
    assert r["evaluated"] == 1 and r["matched"] == 1 and r["merged"] == 0
    # stricter threshold: no match, and still not merged (the other instance is not evaluated)
    r = instance_recall(gt, pred, min_voxels=5, iou_threshold=0.7)
    assert r["matched"] == 0 and r["merged"] == 0 and r["split"] == 0
    assert r["per_instance"][0]["status"] == "missed"


def test_instance_recall_split():
    gt = np.repeat([5, 0], [10, 4])
    pred = np.repeat([1, 2, 3, 0], [4, 3, 3, 4])  # IoUs 0.4, 0.3, 0.3; covers all >= 20%
    r = instance_recall(gt, pred, min_voxels=5)
    assert r["evaluated"] == 1 and r["matched"] == 0 and r["merged"] == 0 and r["split"] == 1
    assert r["per_instance"][0]["best_object"] == 1
    assert r["per_instance"][0]["best_iou"] == pytest.approx(0.4)
    # one piece under 20%: not a split
    pred = np.repeat([1, 2, 0], [8, 1, 5])  # covers 0.8 / 0.1 but IoU(1) = 0.8 -> matched
    assert instance_recall(gt, pred, min_voxels=5)["matched"] == 1
    pred = np.repeat([1, 2, 0, 1], [4, 1, 5, 4])  # object 1: 4 in + 4 out, IoU 4/14; object 2: 10%
    r = instance_recall(gt, pred, min_voxels=5)
    assert r["split"] == 0 and r["merged"] == 0 and r["per_instance"][0]["status"] == "missed"


def test_small_instances_not_evaluated():
    gt = np.repeat([1, 2, 3], [10, 4, 5])
    pred = np.repeat([1, 0, 3], [10, 4, 5])  # instance 2 missed, but too small to count
    r = instance_recall(gt, pred, min_voxels=5)
    assert r["evaluated"] == 2 and r["matched"] == 2 and r["recall"] == 1.0
    assert [p["gt"] for p in r["per_instance"]] == [1, 3]
    r = instance_recall(gt, pred, min_voxels=4)
    assert r["evaluated"] == 3 and r["recall"] == pytest.approx(2 / 3)
    missed = r["per_instance"][1]
    assert missed["gt"] == 2 and missed["best_object"] == 0 and missed["best_iou"] == 0.0


def test_iou_threshold_boundary():
    gt = np.repeat([1, 0], [10, 5])
    pred = np.repeat([9, 0], [5, 10])  # 5 of 10 voxels, no extra: IoU exactly 0.5
    assert instance_recall(gt, pred, min_voxels=1)["matched"] == 1
    assert instance_recall(gt, pred, min_voxels=1, iou_threshold=0.51)["matched"] == 0
    pred = np.repeat([9, 0, 9], [5, 5, 5])  # plus one voxel outside: IoU 5/11 < 0.5
    pred[-4:] = 0
    assert instance_recall(gt, pred, min_voxels=1)["per_instance"][0]["best_iou"] == pytest.approx(5 / 11)
    assert instance_recall(gt, pred, min_voxels=1)["matched"] == 0


def test_instance_recall_large_int64_keys_and_empty():
    rng = np.random.default_rng(3)
    gt = np.repeat(np.array([0, 2**62, 2**40 + 1, -5], dtype=np.int64), 8)
    perm = rng.permutation(gt.size)
    pred = np.repeat(np.array([0, 11, 2**50, 3], dtype=np.int64), 8)
    r = instance_recall(gt[perm], pred[perm], min_voxels=1)
    assert r["matched"] == 3 and r["recall"] == 1.0
    pairs = {(p["gt"], p["best_object"]) for p in r["per_instance"]}
    assert pairs == {(2**62, 11), (2**40 + 1, 2**50), (-5, 3)}
    r = instance_recall(gt, np.zeros_like(gt), min_voxels=1)
    assert r["matched"] == 0 and r["evaluated"] == 3 and r["recall"] == 0.0
    r = instance_recall(np.zeros(4, int), np.ones(4, int), min_voxels=1)
    assert r["evaluated"] == 0 and np.isnan(r["recall"]) and r["per_instance"] == []
