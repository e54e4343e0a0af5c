"""Simulated SAM-like class-agnostic mask generator, and the DiscoNeRF §7.1 mask preprocessing.

Per view, starting from the ground-truth segments (object instances, plus floor and structure
surfaces split by instance, class, plane orientation and connected component, so each wall is one):
small objects are sometimes missed, touching objects are sometimes merged, masks are sometimes
split in two by a random plane through the object in 3D, and boundaries wobble in and out. The
draws are per view, so the same object is segmented differently from one view to the next. The
candidate masks then go through `preprocess_masks` (the §7.1 drop step) exactly as real ones do.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from semantic_mapping.config import MaskSimConfig
from semantic_mapping.semantics.label_space import LabelSpace, default_label_space
from semantic_mapping.sim.segmenter import require_ground_truth
from semantic_mapping.types import Frame

_SALT_MASKS = 0x3A5C
_JITTER_CELL_PX = 20  # correlation length of the boundary wobble, pixels of a 640-pixel-wide image


def preprocess_masks(
    masks: np.ndarray,
    min_area_fraction: float = 0.03,
    contained_fraction: float = 0.9,
    scores: Optional[np.ndarray] = None,
    min_score: float = 0.7,
) -> np.ndarray:
    """DiscoNeRF §7.1 post-processing of automatic masks into one non-overlapping id image.

    masks: [N, H, W] bool candidate masks (may overlap) or an [H, W] int id image (0 = none).
    Drops masks whose scores ([N] or [N, k], e.g. predicted IoU and stability) fall below
    `min_score`, masks under `min_area_fraction` of the image, and masks with `contained_fraction`
    of their area inside a larger kept mask. Where kept masks overlap, the smaller one wins; a mask
    left under the area threshold by that is dropped too.
    Returns [H, W] int32 ids 1..M (larger masks get smaller ids), 0 = none.
    """
    masks = np.asarray(masks)
    if masks.ndim == 2:
        ids = np.unique(masks[masks != 0])
        masks = masks[None] == ids[:, None, None]
    if masks.ndim != 3:
        raise ValueError(f"masks: expected [N, H, W] bool or an [H, W] id image, got shape {masks.shape}")
    masks = masks.astype(bool, copy=False)
    N, H, W = masks.shape
    min_area_px = min_area_fraction * H * W
    area = np.count_nonzero(masks.reshape(N, H * W), axis=1)  # [N] pixels
    keep = area >= min_area_px
    if scores is not None:
        keep &= (np.asarray(scores, np.float64).reshape(N, -1) >= min_score).all(axis=1)
    boxes = [_bbox(m) for m in masks]  # (y0, y1, x0, x1) per mask
    kept: list = []
    for i in np.argsort(-area, kind="stable"):  # larger first: each is tested against the larger kept
        if not keep[i]:
            continue
        inside = max((_overlap(masks, boxes, i, j) for j in kept), default=0)
        if inside < contained_fraction * area[i]:
            kept.append(i)
    out = np.zeros((H, W), np.int32)
    for k, i in enumerate(kept, start=1):  # smaller masks, painted later, win overlaps
        y0, y1, x0, x1 = boxes[i]
        out[y0:y1, x0:x1][masks[i, y0:y1, x0:x1]] = k
    counts = np.bincount(out.ravel(), minlength=len(kept) + 1)
    survivors = np.flatnonzero(counts[1:] >= min_area_px) + 1
    relabel = np.zeros(len(kept) + 1, np.int32)
    relabel[survivors] = np.arange(1, len(survivors) + 1, dtype=np.int32)
    return relabel[out]


def _bbox(mask: np.ndarray) -> tuple:
    """(y0, y1, x0, x1) half-open bounding box of a [H, W] bool mask (empty: zero size)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0, 0, 0, 0
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def _overlap(masks: np.ndarray, boxes: list, i: int, j: int) -> int:
    """Pixels shared by masks i and j, counted inside the intersection of their boxes."""
    y0, x0 = max(boxes[i][0], boxes[j][0]), max(boxes[i][2], boxes[j][2])
    y1, x1 = min(boxes[i][1], boxes[j][1]), min(boxes[i][3], boxes[j][3])
    if y0 >= y1 or x0 >= x1:
        return 0
    return int(np.count_nonzero(masks[i, y0:y1, x0:x1] & masks[j, y0:y1, x0:x1]))


def ground_truth_segments(frame: Frame, label_space: LabelSpace, depth_m: Optional[np.ndarray] = None,
                          stuff_masks: bool = True, image_components: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth segments [H, W] int32 (0 = none, 1..S) and is_object [S + 1] bool of a frame.

    Each object instance is a segment. Floor and structure surfaces (when `stuff_masks`) are split
    by instance, class and dominant axis of the world normal, so that each wall plane is its own
    segment, and, with `image_components`, by connected component in the image: a floor that a table
    cuts in two is two segments, as an image segmenter sees it. Without it the segments are the same
    3D surfaces in every view, as instance annotations of a 3D scene are. `depth_m` defaults to the
    true depth (else the frame's).
    """
    gt = require_ground_truth(frame, "ground_truth_segments")
    if depth_m is None:
        depth_m = np.asarray(gt.depth_m if gt.depth_m is not None else frame.depth_m, np.float32)
    instances = gt.instances
    labels = gt.labels
    C = label_space.num_classes
    valid = (labels >= 0) & (labels < C) & (depth_m > 0)
    object_class = np.array([r == "object" for r in label_space.roles])  # [C]
    is_object_px = valid & object_class[np.where(valid, labels, 0)] & (instances > 0)
    present = np.flatnonzero(np.bincount(instances[is_object_px], minlength=1))
    lookup = np.zeros(int(instances.max(initial=0)) + 1, np.int32)
    lookup[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    segments = np.where(is_object_px, lookup[np.maximum(instances, 0)], 0).astype(np.int32)
    S = len(present)
    stuff = valid & ~is_object_px
    if stuff_masks and stuff.any():
        key = (np.maximum(instances, 0).astype(np.int64) * C + labels) * 6
        if gt.normals_cam is not None:
            normals_world = gt.normals_cam @ frame.T_world_cam[:3, :3].T  # [H, W, 3]
            axis = np.abs(normals_world).argmax(axis=-1)
            positive = np.take_along_axis(normals_world, axis[..., None], -1)[..., 0] > 0
            key += axis * 2 + positive
        for k in np.unique(key[stuff]):
            surface = stuff & (key == k)
            if image_components:
                n, comp = cv2.connectedComponents(surface.astype(np.uint8), connectivity=4)
            else:
                n, comp = 2, surface.astype(np.int32)
            segments = np.where(comp > 0, comp + S, segments).astype(np.int32)
            S += n - 1
    is_object = np.zeros(S + 1, bool)
    is_object[1 : len(present) + 1] = True
    return segments, is_object


class SimulatedMaskGenerator:
    """Mask-generator plugin that imitates SAM's automatic masks from a frame's ground truth."""

    def __init__(self, config: Optional[MaskSimConfig] = None, seed: int = 0, label_space: Optional[LabelSpace] = None):
        self.config = config or MaskSimConfig()
        self.seed = int(seed)
        self.label_space = label_space or default_label_space()

    def generate(self, frame: Frame) -> np.ndarray:
        """Instance ids [H, W] int32, 0 = no mask; ids are arbitrary and differ between views."""
        cfg = self.config
        gt = require_ground_truth(frame, "SimulatedMaskGenerator")
        if gt.instances is None:
            raise ValueError(
                "SimulatedMaskGenerator needs ground-truth instances (frame.ground_truth.instances is None)"
            )
        rng = np.random.default_rng([self.seed, _SALT_MASKS, frame.stamp_ns % 2**63])
        H, W = gt.instances.shape
        depth_m = np.asarray(gt.depth_m if gt.depth_m is not None else frame.depth_m, np.float32)  # [H, W]
        segments, is_object = ground_truth_segments(frame, self.label_space, depth_m, cfg.stuff_masks)  # [H, W] 0..S, [S + 1] bool
        S = len(is_object) - 1
        area = np.bincount(segments.ravel(), minlength=S + 1).astype(np.float64) / (H * W)  # [S + 1]

        # Missed small objects: likely at the drop threshold, never above miss_area_fraction.
        span = max(cfg.miss_area_fraction - cfg.min_area_fraction, 1e-9)
        p_miss = cfg.miss_prob * np.clip((cfg.miss_area_fraction - area) / span, 0.0, 1.0)
        alive = (rng.random(S + 1) >= np.where(is_object, p_miss, 0.0)) & (area > 0)
        alive[0] = False

        # Merges: each pair of touching objects is fused with probability merge_prob (union-find).
        parent = np.arange(S + 1)
        for a, b in self._touching_pairs(segments, depth_m, is_object & alive):
            if rng.random() < cfg.merge_prob:
                ra, rb = _root(parent, a), _root(parent, b)
                parent[max(ra, rb)] = min(ra, rb)
        group = np.array([_root(parent, s) for s in range(S + 1)])
        group[~alive] = 0
        groups = group[segments]  # [H, W] merged segment ids, 0 = none
        flat_groups = groups.reshape(-1)  # a view: writing it writes `groups`

        # Splits: a mask big enough for two surviving parts is cut by a random plane in 3D.
        group_area = np.bincount(flat_groups, minlength=S + 1) / (H * W)
        eligible = group_area >= cfg.min_area_fraction / cfg.split_min_part_frac
        eligible[0] = False
        next_id = S + 1
        K = frame.intrinsics.K
        for g in np.flatnonzero(eligible):
            if rng.random() >= cfg.split_prob:
                continue
            pix = np.flatnonzero(flat_groups == g)
            coords = self._split_coordinates(pix, depth_m, K, frame.T_world_cam, W)  # [P, 2 or 3]
            direction = rng.normal(size=coords.shape[1])
            along = coords @ (direction / np.linalg.norm(direction))
            q = rng.uniform(cfg.split_min_part_frac, 1.0 - cfg.split_min_part_frac)
            flat_groups[pix[along > np.quantile(along, q)]] = next_id
            next_id += 1

        candidates = self._jittered_masks(groups, rng)  # [M, H, W] bool
        ids = preprocess_masks(candidates, cfg.min_area_fraction, cfg.contained_fraction)
        relabel = np.concatenate([[0], rng.permutation(int(ids.max())) + 1]).astype(np.int32)
        return relabel[ids]

    # ------------------------------------------------------------------ pieces
    def _touching_pairs(self, segments: np.ndarray, depth_m: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        """[P, 2] sorted pairs of eligible segments that touch in 3D (adjacent pixels at similar depth)."""
        codes = []
        S1 = len(eligible)
        for a, b, da, db in (
            (segments[:, :-1], segments[:, 1:], depth_m[:, :-1], depth_m[:, 1:]),
            (segments[:-1], segments[1:], depth_m[:-1], depth_m[1:]),
        ):
            near = np.abs(da - db) < self.config.touch_depth_m + 0.02 * np.minimum(da, db)
            touch = (a != b) & eligible[a] & eligible[b] & near
            lo, hi = np.minimum(a[touch], b[touch]), np.maximum(a[touch], b[touch])
            codes.append(lo.astype(np.int64) * S1 + hi)
        codes = np.unique(np.concatenate(codes))
        return np.stack([codes // S1, codes % S1], axis=1)

    @staticmethod
    def _split_coordinates(pix: np.ndarray, depth_m: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray, W: int):
        """World points [P, 3] metres of flat pixel indices `pix`, or pixel coordinates [P, 2] without depth."""
        v, u = np.divmod(pix, W)
        d = depth_m.ravel()[pix]
        if np.mean(d > 0) < 0.9:
            return np.stack([u, v], axis=1).astype(np.float64)
        points_cam = np.stack([(u - K[0, 2]) / K[0, 0] * d, (v - K[1, 2]) / K[1, 1] * d, d], axis=1)
        return points_cam @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]

    def _jittered_masks(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """[M, H, W] bool: one mask per group with its boundary moved in and out by a smooth field."""
        H, W = groups.shape
        sigma = self.config.boundary_jitter_px * W / 640.0
        ids = np.flatnonzero(np.bincount(groups.ravel()))
        ids = ids[ids > 0]
        masks = np.zeros((len(ids), H, W), bool)
        if sigma <= 0.1:
            for m, g in enumerate(ids):
                masks[m] = groups == g
            return masks
        cell = _JITTER_CELL_PX * W / 640.0
        lattice = rng.normal(size=(int(H / cell) + 2, int(W / cell) + 2)).astype(np.float32)
        # [H, W] smooth offset of the blurred mask's 0.5 level; within +-0.45 it only moves edges, never punches holes
        wobble = np.clip(0.3 * cv2.resize(lattice, (W, H), interpolation=cv2.INTER_CUBIC), -0.45, 0.45)
        pad = int(np.ceil(3 * sigma))
        for m, g in enumerate(ids):
            rows, cols = np.nonzero(groups == g)
            y0, y1 = max(rows.min() - pad, 0), min(rows.max() + pad + 1, H)
            x0, x1 = max(cols.min() - pad, 0), min(cols.max() + pad + 1, W)
            crop = (groups[y0:y1, x0:x1] == g).astype(np.float32)
            soft = cv2.GaussianBlur(crop, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
            masks[m, y0:y1, x0:x1] = soft + wobble[y0:y1, x0:x1] > 0.5
        return masks


def _root(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return int(i)
