"""Evaluation metrics: semantic segmentation, surface geometry, voxel completion, instances.

Pure functions over numpy arrays that return plain floats and dicts. Conventions:
- Class ids are 0..C-1; `ignore_id` in the ground truth marks unlabelled samples, which are
  skipped. Any prediction outside 0..C-1 (ignore id, -1, "unknown", "empty") is a wrong answer.
- Distances are in metres. Voxels are integer index triples (e.g. floor(position / voxel size)).
- Instance images hold one id per pixel with 0 = no instance (as `Frame.instance_masks`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

# --------------------------------------------------------------------------------------------
# Semantic segmentation (pixels or voxels)
# --------------------------------------------------------------------------------------------


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_id: int = 255) -> np.ndarray:
    """Count (gt class, predicted class) pairs; returns [C, C+1] int64.

    Rows are ground-truth classes, columns predicted classes; the extra last column counts
    predictions outside 0..C-1 (unknown / no surface), which are wrong for their gt class.
    Samples whose gt is `ignore_id` are skipped. Matrices of many frames add up.
    pred, gt: [...] integer arrays of the same shape.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} != gt shape {gt.shape}")
    C = int(num_classes)
    gt = gt.reshape(-1).astype(np.int64)
    pred = pred.reshape(-1).astype(np.int64)
    keep = gt != ignore_id
    gt, pred = gt[keep], pred[keep]
    if gt.size and (gt.min() < 0 or gt.max() >= C):
        raise ValueError(f"gt holds ids outside 0..{C - 1} that are not the ignore id {ignore_id}")
    pred = np.where((pred >= 0) & (pred < C), pred, C)
    return np.bincount(gt * (C + 1) + pred, minlength=C * (C + 1)).reshape(C, C + 1)


@dataclass
class SegmentationScores:
    """Scores of a confusion matrix; per-class and mean values cover classes present in gt only."""

    iou: dict  # class id -> IoU = TP / (TP + FP + FN)
    acc: dict  # class id -> accuracy (recall) = TP / (TP + FN)
    miou: float  # mean of `iou`
    macc: float  # mean of `acc`
    overall_acc: float  # correct / all non-ignored samples
    confusion: np.ndarray  # [C, C+1] int64, as from confusion_matrix

    @classmethod
    def from_confusion(cls, confusion: np.ndarray) -> "SegmentationScores":
        """Scores of a [C, C+1] (or [C, C], no unknown column) confusion matrix.

        Classes with no gt samples are left out of `iou`, `acc` and the means, so nothing is NaN;
        predictions of such a class still count as false positives of the true class.
        """
        cm = np.asarray(confusion, dtype=np.int64)
        C = cm.shape[0]
        if cm.ndim != 2 or cm.shape[1] not in (C, C + 1):
            raise ValueError(f"confusion matrix must be [C, C] or [C, C+1], got {cm.shape}")
        total = int(cm.sum())
        if total == 0:
            raise ValueError("confusion matrix is empty: no labelled samples were evaluated")
        tp = np.diag(cm[:, :C]).astype(np.float64)  # [C]
        gt_count = cm.sum(axis=1).astype(np.float64)  # [C] TP + FN
        pred_count = cm[:, :C].sum(axis=0).astype(np.float64)  # [C] TP + FP
        present = np.flatnonzero(gt_count > 0)
        iou = {int(c): float(tp[c] / (gt_count[c] + pred_count[c] - tp[c])) for c in present}
        acc = {int(c): float(tp[c] / gt_count[c]) for c in present}
        return cls(
            iou=iou,
            acc=acc,
            miou=float(np.mean(list(iou.values()))),
            macc=float(np.mean(list(acc.values()))),
            overall_acc=float(tp.sum() / total),
            confusion=cm,
        )

    def as_dict(self) -> dict:
        """JSON-friendly summary (without the matrix)."""
        return {"miou": self.miou, "macc": self.macc, "overall_acc": self.overall_acc, "iou": self.iou, "acc": self.acc}


def segmentation_scores(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_id: int = 255) -> SegmentationScores:
    """Scores of one prediction; see `confusion_matrix` for the conventions."""
    return SegmentationScores.from_confusion(confusion_matrix(pred, gt, num_classes, ignore_id))


# --------------------------------------------------------------------------------------------
# Surface geometry against a ground-truth mesh
# --------------------------------------------------------------------------------------------


def sample_mesh_surface(vertices: np.ndarray, triangles: np.ndarray, num_samples: int, seed: int = 0) -> np.ndarray:
    """Points uniformly distributed over a triangle mesh's area; returns [num_samples, 3] float64.

    vertices: [V, 3] metres; triangles: [T, 3] vertex indices.
    """
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[np.asarray(triangles, dtype=np.int64)]  # [T, 3, 3]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)  # [T]
    if areas.sum() <= 0:
        raise ValueError("the mesh has no area to sample")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tri), size=num_samples, p=areas / areas.sum())
    r1 = np.sqrt(rng.random(num_samples))[:, None]  # uniform barycentrics (square-root trick)
    r2 = rng.random(num_samples)[:, None]
    t = tri[pick]
    return (1.0 - r1) * t[:, 0] + r1 * (1.0 - r2) * t[:, 1] + r1 * r2 * t[:, 2]


def point_to_mesh_distance(points: np.ndarray, vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Exact unsigned distance from each point to a triangle mesh; returns [N] float64 metres.

    points: [N, 3] metres; vertices: [V, 3] metres; triangles: [T, 3] vertex indices.
    """
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.ascontiguousarray(vertices, dtype=np.float32)),
        o3d.core.Tensor(np.ascontiguousarray(triangles, dtype=np.uint32)),
    )
    query = o3d.core.Tensor(np.ascontiguousarray(np.asarray(points).reshape(-1, 3), dtype=np.float32))
    return scene.compute_distance(query).numpy().astype(np.float64)


def surface_accuracy_completeness(
    pred_points: np.ndarray,
    gt_vertices: np.ndarray,
    gt_triangles: np.ndarray,
    threshold_m: float,
    num_gt_samples: int = 200_000,
    seed: int = 0,
) -> dict:
    """Accuracy/completeness of a reconstructed surface against a ground-truth mesh.

    pred_points: [N, 3] metres (fused surface points, voxel centres or mesh vertices);
    gt_vertices: [V, 3] metres; gt_triangles: [T, 3]. Accuracy is the exact distance of each
    predicted point to the gt mesh; completeness the distance of `num_gt_samples` area-uniform
    gt surface samples (seeded) to their nearest predicted point. Precision / recall are the
    fractions of those distances strictly below `threshold_m`; F-score their harmonic mean;
    Chamfer the mean of the two mean distances. No predicted points gives infinite distances
    and zero scores. Returns floats keyed accuracy_mean_m, accuracy_median_m,
    completeness_mean_m, completeness_median_m, precision, recall, fscore, chamfer_m.
    """
    pred_points = np.asarray(pred_points, dtype=np.float64).reshape(-1, 3)
    if len(pred_points) == 0:
        inf = float("inf")
        return {
            "accuracy_mean_m": inf, "accuracy_median_m": inf,
            "completeness_mean_m": inf, "completeness_median_m": inf,
            "precision": 0.0, "recall": 0.0, "fscore": 0.0, "chamfer_m": inf,
        }  # fmt: skip
    acc = point_to_mesh_distance(pred_points, gt_vertices, gt_triangles)  # [N]
    gt_samples = sample_mesh_surface(gt_vertices, gt_triangles, num_gt_samples, seed)  # [S, 3]
    comp, _ = cKDTree(pred_points).query(gt_samples, k=1)  # [S]
    precision = float(np.mean(acc < threshold_m))
    recall = float(np.mean(comp < threshold_m))
    fscore = 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "accuracy_mean_m": float(acc.mean()),
        "accuracy_median_m": float(np.median(acc)),
        "completeness_mean_m": float(comp.mean()),
        "completeness_median_m": float(np.median(comp)),
        "precision": precision,
        "recall": recall,
        "fscore": float(fscore),
        "chamfer_m": float(0.5 * (acc.mean() + comp.mean())),
    }


# --------------------------------------------------------------------------------------------
# Voxel completion (SSR-2D: geometric IoU / recall, semantic scene completion)
# --------------------------------------------------------------------------------------------


def _voxel_keys(*index_sets: np.ndarray) -> list:
    """Encode [N_k, 3] integer voxel indices into int64 keys, one array per set, on a shared grid."""
    sets = [np.asarray(s, dtype=np.int64).reshape(-1, 3) for s in index_sets]
    stacked = np.concatenate(sets, axis=0)
    if len(stacked) == 0:
        return [np.zeros(0, np.int64) for _ in sets]
    lo = stacked.min(axis=0)
    extent = stacked.max(axis=0) - lo + 1  # [3]
    if float(extent[0]) * float(extent[1]) * float(extent[2]) >= 2.0**62:
        raise ValueError(f"voxel index extent {extent.tolist()} is too large to encode")
    return [((s[:, 0] - lo[0]) * extent[1] + (s[:, 1] - lo[1])) * extent[2] + (s[:, 2] - lo[2]) for s in sets]


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """[N] int64 -> sorted distinct values (by sorting: np.unique hashes, which is slow here)."""
    s = np.sort(keys)
    return s[np.concatenate([[True], s[1:] != s[:-1]])] if len(s) else s


def voxel_iou_precision_recall(pred_indices: np.ndarray, gt_indices: np.ndarray) -> dict:
    """Geometric IoU, precision and recall of two voxel sets (duplicates are merged).

    pred_indices: [N, 3] int; gt_indices: [M, 3] int, on the same grid. Returns floats keyed
    iou = |P∩G|/|P∪G|, precision = |P∩G|/|P| (0 when P is empty), recall = |P∩G|/|G|.
    """
    pred_keys, gt_keys = _voxel_keys(pred_indices, gt_indices)
    pred_keys, gt_keys = _sorted_unique(pred_keys), _sorted_unique(gt_keys)
    if len(gt_keys) == 0:
        raise ValueError("the ground-truth voxel set is empty")
    inter = len(np.intersect1d(pred_keys, gt_keys, assume_unique=True))
    return {
        "iou": inter / (len(pred_keys) + len(gt_keys) - inter),
        "precision": inter / len(pred_keys) if len(pred_keys) else 0.0,
        "recall": inter / len(gt_keys),
    }


def semantic_voxel_confusion(
    pred_indices: np.ndarray,
    pred_labels: np.ndarray,
    gt_indices: np.ndarray,
    gt_labels: np.ndarray,
    num_classes: int,
    ignore_id: int = 255,
) -> np.ndarray:
    """Semantic scene completion confusion over the ground-truth voxels; returns [C, C+1] int64.

    Every gt voxel (label != ignore_id) is scored once: with the label of the predicted voxel at
    the same index, or as 'empty' (the unknown column, i.e. wrong) when the prediction has no
    voxel there. Predicted voxels that are not in the gt set are ignored (their geometry is
    scored by `voxel_iou_precision_recall`). As in SSR-2D, accuracy is normalised by the number
    of gt surface voxels. pred_indices: [N, 3] int, unique; pred_labels: [N] int;
    gt_indices: [M, 3] int, unique; gt_labels: [M] int.
    """
    pred_labels = np.asarray(pred_labels).reshape(-1)
    gt_labels = np.asarray(gt_labels).reshape(-1)
    pred_keys, gt_keys = _voxel_keys(pred_indices, gt_indices)
    if len(pred_keys) != len(pred_labels) or len(gt_keys) != len(gt_labels):
        raise ValueError("each voxel index needs exactly one label")
    order = np.argsort(pred_keys, kind="stable")
    sorted_keys = pred_keys[order]  # [N]
    if np.any(sorted_keys[1:] == sorted_keys[:-1]):
        raise ValueError("pred_indices holds duplicate voxels")
    if len(_sorted_unique(gt_keys)) != len(gt_keys):
        raise ValueError("gt_indices holds duplicate voxels")
    labels_at_gt = np.full(len(gt_keys), -1, np.int64)  # [M], -1 = empty (no predicted voxel)
    if len(sorted_keys):
        pos = np.minimum(np.searchsorted(sorted_keys, gt_keys), len(sorted_keys) - 1)  # [M]
        found = sorted_keys[pos] == gt_keys
        labels_at_gt[found] = pred_labels[order][pos[found]]
    return confusion_matrix(labels_at_gt, gt_labels, num_classes, ignore_id)


def semantic_voxel_scores(
    pred_indices: np.ndarray,
    pred_labels: np.ndarray,
    gt_indices: np.ndarray,
    gt_labels: np.ndarray,
    num_classes: int,
    ignore_id: int = 255,
) -> SegmentationScores:
    """Semantic scene completion mIoU / mAcc; conventions as `semantic_voxel_confusion`."""
    cm = semantic_voxel_confusion(pred_indices, pred_labels, gt_indices, gt_labels, num_classes, ignore_id)
    return SegmentationScores.from_confusion(cm)


# --------------------------------------------------------------------------------------------
# Class-agnostic instances on images (DiscoNeRF: area-weighted matched IoU, BD, SBD)
# --------------------------------------------------------------------------------------------


_MAX_TABLE_ENTRIES = 1 << 24  # pairwise mask table limit (128 MiB of int64)


def _compact_ids(ids: np.ndarray) -> tuple:
    """[P] non-negative ids -> (distinct ids [K], dense index 0..K-1 per pixel [P], area [K])."""
    if ids.size and ids.min() < 0:
        raise ValueError("instance ids must be non-negative")
    top = int(ids.max()) + 1 if ids.size else 0
    if top <= 4 * ids.size + 1024:  # small ids: O(P) counting, no sort
        counts = np.bincount(ids, minlength=top)
        distinct = np.flatnonzero(counts)
        lut = np.zeros(top, np.int64)
        lut[distinct] = np.arange(len(distinct))
        return distinct, lut[ids], counts[distinct]
    distinct, dense, area = np.unique(ids, return_inverse=True, return_counts=True)
    return distinct, dense.reshape(-1), area


def _overlap_table(a_ids: np.ndarray, b_ids: np.ndarray, a_skip_zero: bool, b_skip_zero: bool) -> tuple:
    """Pairwise mask intersections of two id images.

    a_ids, b_ids: [H, W] non-negative ints. Returns (inter [Na, Nb] pixel counts,
    area_a [Na], area_b [Nb]); id 0 is dropped from a side whose skip flag is set.
    """
    a_ids = np.asarray(a_ids)
    b_ids = np.asarray(b_ids)
    if a_ids.shape != b_ids.shape:
        raise ValueError(f"instance images differ in shape: {a_ids.shape} vs {b_ids.shape}")
    a_distinct, a_dense, area_a = _compact_ids(a_ids.reshape(-1).astype(np.int64))
    b_distinct, b_dense, area_b = _compact_ids(b_ids.reshape(-1).astype(np.int64))
    nb = len(b_distinct)
    if len(a_distinct) * nb > _MAX_TABLE_ENTRIES:
        raise ValueError(f"too many masks to compare: {len(a_distinct)} x {nb}")
    inter = np.bincount(a_dense * nb + b_dense, minlength=len(a_distinct) * nb).reshape(len(a_distinct), nb)
    keep_a = a_distinct != 0 if a_skip_zero else np.ones(len(a_distinct), bool)
    keep_b = b_distinct != 0 if b_skip_zero else np.ones(nb, bool)
    return inter[keep_a][:, keep_b], area_a[keep_a], area_b[keep_b]


def instance_iou(
    pred_ids: np.ndarray, gt_ids: np.ndarray, ignore_gt_zero: bool = True, ignore_pred_zero: bool = True
) -> float:
    """DiscoNeRF 2D instance IoU: one-to-one matching, average weighted by gt mask area.

    pred_ids, gt_ids: [H, W] non-negative instance ids. Each gt mask is matched to at most one
    predicted mask and vice versa by Hungarian assignment maximising the total IoU (one-to-one,
    so one large prediction cannot score for several objects); unmatched gt masks score 0.
    Result = sum_g |g| IoU(g, match(g)) / sum_g |g|. Id 0 is "no instance" on a side whose flag
    is set: it forms no mask, but its pixels still count in the other side's mask areas.
    """
    inter, area_p, area_g = _overlap_table(pred_ids, gt_ids, ignore_pred_zero, ignore_gt_zero)
    if len(area_g) == 0:
        raise ValueError("the ground truth has no instance masks")
    iou = inter / (area_p[:, None] + area_g[None, :] - inter)  # [Np, Ng]
    matched = np.zeros(len(area_g))
    if len(area_p):
        rows, cols = linear_sum_assignment(iou, maximize=True)
        matched[cols] = iou[rows, cols]
    return float(np.sum(area_g * matched) / np.sum(area_g))


def _best_dice_from_table(inter: np.ndarray, area_p: np.ndarray, area_g: np.ndarray) -> float:
    """Eq. 8 on an [Np, Ng] intersection table: mean over rows of the best Dice; 0 without rows."""
    if len(area_p) == 0 or len(area_g) == 0:
        return 0.0
    dice = 2.0 * inter / (area_p[:, None] + area_g[None, :])  # [Np, Ng]
    return float(dice.max(axis=1).mean())


def best_dice(P: np.ndarray, G: np.ndarray, ignore_zero: bool = True) -> float:
    """Best Dice BD(P, G) (DiscoNeRF Eq. 8): mean over the masks p_i of P of max_j Dice(p_i, g_j).

    P, G: [H, W] non-negative instance ids; with `ignore_zero`, id 0 forms no mask in either.
    An image without masks on the P side gives 0; so does G without masks.
    """
    return _best_dice_from_table(*_overlap_table(P, G, ignore_zero, ignore_zero))


def symmetric_best_dice(P: np.ndarray, G: np.ndarray, ignore_zero: bool = True) -> float:
    """SBD(P, G) = min(BD(P, G), BD(G, P)); P, G: [H, W] instance ids as in `best_dice`."""
    inter, area_p, area_g = _overlap_table(P, G, ignore_zero, ignore_zero)
    return min(_best_dice_from_table(inter, area_p, area_g), _best_dice_from_table(inter.T, area_g, area_p))


def _dense_index(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero ids -> 0..K-1 in sorted id order, id 0 -> K; returns (index [N] int64, labels [K])."""
    labels, inverse = np.unique(ids, return_inverse=True)  # labels sorted
    inverse = inverse.reshape(-1).astype(np.int64)
    has_zero = labels.size > 0 and np.any(labels == 0)
    if has_zero:
        z = int(np.searchsorted(labels, 0))
        labels = np.delete(labels, z)
        # shift ids after the zero down by one, send zero to the end (K)
        inverse = np.where(inverse == z, labels.size, inverse - (inverse > z))
    return inverse, labels.astype(np.int64)


def instance_recall(
    gt_instance: np.ndarray, pred_object: np.ndarray, min_voxels: int, iou_threshold: float = 0.5
) -> dict:
    """Recall of ground-truth instances by predicted objects over the same N voxels.

    gt_instance [N] int (0 = not an evaluated instance), pred_object [N] int (0 = no object).
    Instances with >= min_voxels voxels are evaluated. One is 'matched' when exactly one object has
    3D IoU |g n p| / |g u p| >= iou_threshold with it (|p| counts all N voxels of object p).
    Unmatched instances are 'merged' when the object covering most of them covers >= 50% of them
    and >= 50% of another evaluated instance, else 'split' when >= 2 objects each cover >= 20% of
    them, else 'missed'.
    Returns {'recall': matched / evaluated (NaN if none), 'evaluated', 'matched', 'merged', 'split',
    'per_instance': [{'gt', 'voxels', 'best_object', 'best_iou', 'status'}] in gt id order}.
    """
    gt = np.asarray(gt_instance).reshape(-1)  # [N]
    pred = np.asarray(pred_object).reshape(-1)  # [N]
    if gt.shape != pred.shape:
        raise ValueError(f"gt_instance has {gt.size} voxels, pred_object {pred.size}")
    gi, gt_labels = _dense_index(gt)  # [N] in 0..G (G = none)
    pi, obj_labels = _dense_index(pred)  # [N] in 0..P (P = none)
    G, P = gt_labels.size, obj_labels.size
    gt_size = np.bincount(gi, minlength=G + 1)[:G]  # [G]
    obj_size = np.bincount(pi, minlength=P + 1)[:P]  # [P]

    # sparse overlap table: one entry per (instance, object) pair that shares voxels
    both = (gi < G) & (pi < P)
    pair, inter = np.unique(gi[both] * P + pi[both], return_counts=True)  # [E]
    eg, ep = pair // max(P, 1), pair % max(P, 1)  # [E] instance / object index
    iou = inter / (gt_size[eg] + obj_size[ep] - inter)  # [E]
    cover = inter / gt_size[eg]  # [E] fraction of the instance inside the object

    evaluated = gt_size >= min_voxels  # [G]
    n_above = np.bincount(eg[iou >= iou_threshold], minlength=G)  # [G]
    matched = evaluated & (n_above == 1)

    # best object by IoU (reported) and by overlap (merge rule); stable on ties -> lowest object id
    best_iou = np.zeros(G)
    best_iou_obj = np.full(G, -1)
    best_cov = np.zeros(G)
    best_cov_obj = np.full(G, -1)
    if eg.size:
        order = np.lexsort((ep, -iou, eg))  # by instance, then IoU descending
        first = order[np.r_[True, eg[order][1:] != eg[order][:-1]]]
        best_iou[eg[first]], best_iou_obj[eg[first]] = iou[first], ep[first]
        order = np.lexsort((ep, -inter, eg))
        first = order[np.r_[True, eg[order][1:] != eg[order][:-1]]]
        best_cov[eg[first]], best_cov_obj[eg[first]] = cover[first], ep[first]

    half = (cover >= 0.5) & evaluated[eg]
    n_half = np.bincount(ep[half], minlength=P + 1)  # [P+1] evaluated instances each object half-covers
    n_half[P] = 0  # slot for "no object" (best_cov_obj == -1)
    best_cov_slot = np.where(best_cov_obj >= 0, best_cov_obj, P)  # [G]
    merged = evaluated & ~matched & (best_cov >= 0.5) & (n_half[best_cov_slot] >= 2)
    n_fifth = np.bincount(eg[cover >= 0.2], minlength=G)  # [G]
    split = evaluated & ~matched & ~merged & (n_fifth >= 2)

    per_instance = []
    for g in np.flatnonzero(evaluated):
        status = "matched" if matched[g] else "merged" if merged[g] else "split" if split[g] else "missed"
        per_instance.append(
            {
                "gt": int(gt_labels[g]),
                "voxels": int(gt_size[g]),
                "best_object": int(obj_labels[best_iou_obj[g]]) if best_iou_obj[g] >= 0 else 0,
                "best_iou": float(best_iou[g]),
                "status": status,
            }
        )
    n_eval = int(evaluated.sum())
    return {
        "recall": float(matched.sum() / n_eval) if n_eval else float("nan"),
        "evaluated": n_eval,
        "matched": int(matched.sum()),
        "merged": int(merged.sum()),
        "split": int(split.sum()),
        "per_instance": per_instance,
    }
