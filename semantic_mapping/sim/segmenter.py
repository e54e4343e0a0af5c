"""Simulated 2D semantic segmenter: ground-truth labels turned into network-like class probabilities.

Per frame, at a reduced "network output" resolution (then bilinearly upsampled, as networks do):

    logits[p, c] = E[p, c] + s * m(p) * (R[p, c] * F[p, c] + P[p, c])

- E: the ground-truth class fractions of the pixel's block, blurred (labels bleed across edges);
- F: per-class noise: smooth random fields over the pixel's world point, one also varying with the
  viewing direction (so nearby views make the same mistakes and distant ones partly different
  ones), plus an image-space field that drifts slowly with the frame stamp (per-frame component);
- R: which classes the noise can turn the pixel into: those alike its true class (a fixed
  confusion structure, damped for classes absent from the view), a fraction of all others, and
  the classes of its neighbourhood;
- P: persistent per-instance pulls towards one confusable class;
- m(p) >= 1: difficulty, growing with distance, grazing angle, image-border proximity, on objects
  with a small visible area or an outline cut by the border or by occluders, and with a
  persistent per-instance factor;
- s: the single strength, solved per frame by bisection so that the frame's mIoU (over the classes
  present in its ground truth, as `eval.metrics`) meets the configured target plus a slowly
  varying offset.
The softmax temperature is fitted to the ground truth (temperature scaling), so probabilities are
confident where right and hedged where wrong. The output is a function of (seed, frame) only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from semantic_mapping.config import SegmenterSimConfig
from semantic_mapping.semantics.label_space import LabelSpace, default_label_space
from semantic_mapping.types import Frame, FrameGroundTruth

# Classes a network mixes up, by name; names missing from the label space are skipped.
CONFUSION_GROUPS = (
    ("chair", "sofa"),
    ("bed", "sofa"),
    ("table", "desk", "counter"),
    ("cabinet", "refrigerator", "bookshelf", "otherfurniture"),
    ("cabinet", "counter", "desk"),
    ("wall", "door", "window", "picture", "curtain"),
    ("wall", "ceiling"),
    ("object", "otherfurniture"),
    ("object", "picture"),
    ("sink", "counter", "toilet"),
)

_WORLD_FEATURES = 64  # random Fourier features of the world-space noise field
_FRAME_FEATURES = 32  # random Fourier features of the image-space noise field
_BISECTION_STEPS = 9
_INITIAL_STRENGTH = 0.5  # upper end of the first bracket, doubled until it brackets the target
_RECHECK_TOLERANCE = 0.01  # full-resolution mIoU error that triggers a second solve
_TEMPERATURE_SAMPLES = 4096
_MAX_INV_TEMPERATURE = 30.0
_LOGIT_FLOOR = -80.0  # exp(-80) is still a normal float32
_SALT_FIELDS, _SALT_INSTANCE, _SALT_FRAME = 0x5E6, 0x1A5, 0xF4A


def require_ground_truth(frame: Frame, who: str) -> FrameGroundTruth:
    """The frame's ground truth, or a clear error: simulators need it, real networks do not."""
    if frame.ground_truth is None or frame.ground_truth.labels is None:
        raise ValueError(
            f"{who} simulates a 2D network from ground truth, but this frame has no ground truth "
            "(frame.ground_truth is None); use a real plugin for frames without it"
        )
    return frame.ground_truth


def similarity_matrix(label_space: LabelSpace, other_weight: float) -> np.ndarray:
    """[C, C] float32: 1 between a class and itself or a class it is confused with, else `other_weight`."""
    C = label_space.num_classes
    S = np.full((C, C), other_weight, np.float32)
    np.fill_diagonal(S, 1.0)
    for group in CONFUSION_GROUPS:
        ids = [label_space.names.index(n) for n in group if n in label_space.names]
        S[np.ix_(ids, ids)] = 1.0
    return S


def labels_and_confidence(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """probs [H, W, C] -> (labels [H, W] int32 argmax, confidence [H, W] float32 its probability)."""
    labels = probs.argmax(axis=-1).astype(np.int32)
    confidence = np.take_along_axis(probs, labels[..., None], axis=-1)[..., 0]
    return labels, confidence.astype(np.float32)


def _confusion(pred: np.ndarray, labels: np.ndarray, C: int) -> np.ndarray:
    """[C_pred, C_gt] pixel counts of predicted [H, W] against ground-truth [H, W] labels (others ignored)."""
    valid = (labels >= 0) & (labels < C)
    return np.bincount(pred[valid] * C + labels[valid], minlength=C * C).reshape(C, C)


def miou_from_confusion(confusion: np.ndarray) -> float:
    """Mean IoU over the classes present in the ground truth (as eval.metrics); confusion [C_pred, C_gt]."""
    tp = np.diag(confusion)
    gt_count = confusion.sum(axis=0)
    present = gt_count > 0
    union = gt_count + confusion.sum(axis=1) - tp
    return float((tp[present] / union[present]).mean()) if present.any() else float("nan")


@dataclass
class _FrameTerms:
    evidence: np.ndarray  # [n, C] float32 blurred ground-truth class fractions of the n work pixels
    noise: np.ndarray  # [n, C] float32 difficulty-weighted noise, scaled by the strength
    counts: np.ndarray  # [n, C] float32 ground-truth pixel counts per work pixel (full resolution)
    centre_labels: np.ndarray  # [n] int32 ground truth at the work pixel's centre, -1 where none
    shape: tuple  # (h, w) work resolution


class SimulatedSegmenter:
    """Segmenter plugin that imitates a real network's errors from a frame's ground truth."""

    def __init__(
        self, config: Optional[SegmenterSimConfig] = None, label_space: Optional[LabelSpace] = None, seed: int = 0
    ):
        self.config = config or SegmenterSimConfig()
        self.label_space = label_space or default_label_space()
        self.num_classes = self.label_space.num_classes
        self.seed = int(seed)
        cfg, C = self.config, self.num_classes
        self._similarity = similarity_matrix(self.label_space, cfg.other_class_weight)  # [C, C]
        self._is_object = np.array([r == "object" for r in self.label_space.roles])  # [C]
        rng = np.random.default_rng([self.seed, _SALT_FIELDS])
        # Random Fourier features: cos(x @ freq + phase) @ amp is a smooth Gaussian field of unit variance.
        # World fields over x = (world point, viewing direction): the first block ignores the direction
        # (view-independent), the second also varies with it (errors change with the viewpoint).
        F = _WORLD_FEATURES
        freq = rng.normal(size=(6, 2 * F)) / np.repeat([cfg.world_noise_scale_m, cfg.view_noise_scale_rad], 3)[:, None]
        freq[3:, :F] = 0.0
        amp = rng.normal(size=(2 * F, C)) * np.sqrt(2 / F)
        amp[:F] *= cfg.world_noise_weight
        amp[F:] *= cfg.view_noise_weight
        self._world_freq = freq.astype(np.float32)  # [6, 2F] rad/m, rad/rad
        self._world_phase = rng.uniform(0, 2 * np.pi, 2 * F).astype(np.float32)
        self._world_amp = amp.astype(np.float32)  # [2F, C]
        self._frame_freq = (rng.normal(size=(2, _FRAME_FEATURES)) / cfg.frame_noise_scale_frac).astype(np.float32)
        self._frame_phase = rng.uniform(0, 2 * np.pi, _FRAME_FEATURES)
        self._frame_rate = rng.normal(size=_FRAME_FEATURES) * 2.0 / cfg.frame_noise_period_s  # rad/s
        self._frame_amp = (rng.normal(size=(_FRAME_FEATURES, C)) * np.sqrt(2 / _FRAME_FEATURES)).astype(np.float32)
        self._jitter_period_s = cfg.frame_miou_period_s * rng.uniform(1.0, 3.0, 3)
        self._jitter_phase = rng.uniform(0, 2 * np.pi, 3)
        self._instance_cache: dict = {}
        self._block_cache: dict = {}

    # ------------------------------------------------------------------ public
    def predict(self, frame: Frame) -> np.ndarray:
        """Class probabilities [H, W, C] float32 (sum to 1 over C)."""
        gt = require_ground_truth(frame, "SimulatedSegmenter")
        terms = self._frame_terms(frame, gt)
        target = self.frame_target(frame.stamp_ns)
        # Solve at the work resolution, check once at full resolution (upsampling shifts the mIoU a
        # little: small regions shrink or vanish) and re-solve against the corrected target.
        strength = self._solve_strength(terms, target)
        logits = self._upsample(terms.evidence + strength * terms.noise, terms.shape, gt.labels.shape)  # [H, W, C]
        reached = miou_from_confusion(_confusion(logits.argmax(axis=2), gt.labels, self.num_classes))
        if abs(reached - target) > _RECHECK_TOLERANCE:
            strength = self._solve_strength(terms, target + float(np.clip(target - reached, -0.1, 0.1)))
        rng = np.random.default_rng([self.seed, _SALT_FRAME, frame.stamp_ns % 2**63])
        beta = self._fit_inverse_temperature(terms.evidence + strength * terms.noise, terms.centre_labels, rng)
        beta *= self.config.overconfidence
        # Softmax of the upsampled beta * logits. Shifting each work pixel's logits by its maximum
        # changes every upsampled pixel by one constant (interpolation is linear), so the result is
        # the same; the floor keeps the exponentials above float32 underflow.
        scaled = beta * (terms.evidence + strength * terms.noise)  # [n, C]
        scaled = np.maximum(scaled - scaled.max(axis=1, keepdims=True), _LOGIT_FLOOR)
        probs = self._upsample(scaled, terms.shape, gt.labels.shape)
        np.exp(probs, out=probs)  # [H, W, C]
        probs /= probs.sum(axis=2, keepdims=True)
        return probs

    def frame_target(self, stamp_ns: int) -> float:
        """The mIoU this frame is calibrated to: the configured target plus a slowly varying offset."""
        t = stamp_ns * 1e-9
        wave = np.sqrt(2 / 3) * np.sin(2 * np.pi * t / self._jitter_period_s + self._jitter_phase).sum()
        return float(np.clip(self.config.target_miou + self.config.frame_miou_jitter * wave, 0.05, 0.98))

    # ------------------------------------------------------------------ model
    @staticmethod
    def _upsample(values: np.ndarray, work_shape: tuple, shape: tuple) -> np.ndarray:
        """[n, C] per-work-pixel values -> [H, W, C] float32, bilinearly upsampled (as networks do)."""
        h, w = work_shape
        values = values.astype(np.float32).reshape(h, w, -1)
        if (h, w) != tuple(shape):
            values = cv2.resize(values, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
        return values

    def _frame_terms(self, frame: Frame, gt: FrameGroundTruth) -> _FrameTerms:
        """Everything about the frame's logits except the strength, at the work resolution."""
        cfg, C = self.config, self.num_classes
        labels = gt.labels  # [H, W]
        H, W = labels.shape
        stride = max(1, int(round(W / cfg.work_width_px)))
        h, w = -(-H // stride), -(-W // stride)
        valid = (labels >= 0) & (labels < C)
        bins = self._block_bins(H, W, stride)  # [H, W] first count bin of each pixel's work pixel
        counts = np.bincount((bins + np.where(valid, labels, C)).ravel(), minlength=h * w * (C + 1))
        counts = counts.reshape(h * w, C + 1)[:, :C].astype(np.float32)  # last column: unlabelled
        evidence = (counts / stride**2).reshape(h, w, C)
        sigma = cfg.boundary_bleed_px * W / 640.0 / stride  # work pixels
        if sigma > 0.1:
            evidence = cv2.GaussianBlur(evidence, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
        evidence = evidence.reshape(h * w, C)

        # Ground truth sampled at the work pixels' centres.
        rows = np.minimum(np.arange(h) * stride + stride // 2, H - 1)
        cols = np.minimum(np.arange(w) * stride + stride // 2, W - 1)
        centre_labels = np.where(valid, labels, -1)[np.ix_(rows, cols)].astype(np.int32)  # [h, w]
        depth = gt.depth_m if gt.depth_m is not None else frame.depth_m
        depth_m = np.asarray(depth, np.float32)[np.ix_(rows, cols)]  # [h, w] metres
        instances = gt.instances[np.ix_(rows, cols)] if gt.instances is not None else np.zeros((h, w), np.int64)
        u, v = np.meshgrid(cols.astype(np.float32), rows.astype(np.float32))  # [h, w] pixels
        K = frame.intrinsics.K.astype(np.float32)
        ray_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)  # [h, w, 3]

        multiplier = self._difficulty(depth_m, ray_cam, gt, rows, cols, u, v, W)  # [h, w]
        is_object = (centre_labels >= 0) & self._is_object[np.maximum(centre_labels, 0)] & (instances > 0)
        pull_class = np.zeros((h, w), np.int64)
        pull = np.zeros((h, w), np.float32)
        if is_object.any():
            inst_ids, inverse = np.unique(instances[is_object], return_inverse=True)
            inst_class = np.zeros(len(inst_ids), np.int64)
            inst_class[inverse] = centre_labels[is_object]
            traits = np.array([self._instance_traits(i, c) for i, c in zip(inst_ids, inst_class)])  # [I, 3]
            extra = self._partial_visibility(instances, depth_m, is_object, inverse, len(inst_ids))
            multiplier[is_object] = (multiplier[is_object] + extra[inverse]) * traits[inverse, 0]
            pull_class[is_object] = traits[inverse, 1].astype(np.int64)
            pull[is_object] = traits[inverse, 2]

        R = frame.T_world_cam[:3, :3].astype(np.float32)
        rays_world = ray_cam.reshape(-1, 3) @ R.T  # [n, 3], unit depth
        points_world = rays_world * depth_m.reshape(-1, 1) + frame.T_world_cam[:3, 3].astype(np.float32)  # [n, 3] m
        view_dirs = rays_world / np.linalg.norm(rays_world, axis=1, keepdims=True)  # [n, 3]
        x = np.concatenate([points_world, view_dirs], axis=1)  # [n, 6]
        field = np.cos(x @ self._world_freq + self._world_phase) @ self._world_amp  # [n, C]
        t = frame.stamp_ns * 1e-9
        uv = np.stack([u.ravel(), v.ravel()], axis=1) / np.float32(W)  # [n, 2] image widths
        drift = ((self._frame_phase + self._frame_rate * t) % (2 * np.pi)).astype(np.float32)  # [F] radians
        phase = uv @ self._frame_freq + drift
        field += cfg.frame_noise_weight * (np.cos(phase) @ self._frame_amp)
        # Who the noise can turn a pixel into: classes alike its own (the fixed confusion structure,
        # damped for classes absent from the view) and the classes of its neighbourhood.
        presence = np.where(counts.sum(axis=0) > 0, 1.0, cfg.absent_class_weight).astype(np.float32)  # [C]
        reach = (evidence @ self._similarity) * presence
        sigma = cfg.context_px * W / 640.0 / stride  # work pixels
        if cfg.context_weight > 0 and sigma > 0.1:
            context = cv2.GaussianBlur(evidence.reshape(h, w, C), (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
            reach += cfg.context_weight * context.reshape(h * w, C)
        noise = reach * field  # [n, C]
        noise[np.arange(h * w), pull_class.ravel()] += pull.ravel()
        noise *= multiplier.reshape(-1, 1)
        return _FrameTerms(evidence, noise, counts, centre_labels.ravel(), (h, w))

    def _difficulty(self, depth_m, ray_cam, gt, rows, cols, u, v, W) -> np.ndarray:
        """[h, w] error multiplier >= 1 from distance, grazing angle and image-border proximity."""
        cfg = self.config
        H = gt.labels.shape[0]
        extra = cfg.distance_gain_per_m * np.maximum(depth_m - cfg.distance_ref_m, 0.0)
        if gt.normals_cam is not None:
            normals = gt.normals_cam[np.ix_(rows, cols)]  # [h, w, 3]
            cos = np.abs((normals * ray_cam).sum(-1)) / np.linalg.norm(ray_cam, axis=-1)
            extra += cfg.grazing_gain * (1.0 - np.clip(cos, 0.0, 1.0)) ** 2
        border_px = np.minimum(np.minimum(u, W - 1 - u), np.minimum(v, H - 1 - v))
        extra += cfg.border_gain * np.exp(-border_px / (cfg.border_width_frac * W))
        return (1.0 + extra).astype(np.float32)

    def _partial_visibility(self, instances, depth_m, is_object, inverse, num) -> np.ndarray:
        """[I] extra error multiplier per visible object: outline cut by border/occluders, small area."""
        cfg = self.config
        index = np.full(instances.shape, -1, np.int64)
        index[is_object] = inverse
        key = np.pad(np.where(is_object, instances, -1), 1, constant_values=-2)  # -2 = outside the image
        depth = np.pad(depth_m, 1, constant_values=0.0)
        h, w = instances.shape
        centre_key, centre_depth = key[1:-1, 1:-1], depth[1:-1, 1:-1]
        edges = np.zeros(num)
        cuts = np.zeros(num)
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            nb_key = key[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            nb_depth = depth[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            edge = is_object & (nb_key != centre_key)
            nearer = (nb_depth > 0) & (nb_depth < centre_depth * 0.98 - 0.05)
            cut = edge & ((nb_key == -2) | nearer)
            edges += np.bincount(index[edge], minlength=num)
            cuts += np.bincount(index[cut], minlength=num)
        cut_frac = cuts / np.maximum(edges, 1)
        area_frac = np.bincount(inverse, minlength=num) / instances.size
        small = np.clip(1.0 - area_frac / cfg.small_object_area_frac, 0.0, 1.0)
        return (cfg.partial_gain * cut_frac + cfg.small_object_gain * small).astype(np.float32)

    def _instance_traits(self, instance_id: int, class_id: int) -> tuple:
        """(difficulty factor, pulled-to class, pull) of one object: persistent across views."""
        key = (int(instance_id), int(class_id))
        if key not in self._instance_cache:
            cfg = self.config
            rng = np.random.default_rng([self.seed, _SALT_INSTANCE, key[0] % 2**63, key[1]])
            factor = float(np.exp(cfg.instance_difficulty_std * rng.normal()))
            alike = np.flatnonzero(self._similarity[class_id] >= 1.0)
            alike = alike[alike != class_id]
            if alike.size and rng.random() < cfg.instance_confusion_prob:
                traits = (factor, float(rng.choice(alike)), float(rng.uniform(0.3, 1.0) * cfg.instance_confusion_max))
            else:
                traits = (factor, float(class_id), 0.0)
            self._instance_cache[key] = traits
        return self._instance_cache[key]

    def _block_bins(self, H: int, W: int, stride: int) -> np.ndarray:
        """[H, W] int64: (C + 1) x the index of the work pixel (stride x stride block) of each pixel."""
        key = (H, W, stride)
        if key not in self._block_cache:
            w = -(-W // stride)
            block = (np.arange(H)[:, None] // stride) * w + np.arange(W)[None, :] // stride
            self._block_cache[key] = block * (self.num_classes + 1)
        return self._block_cache[key]

    # ------------------------------------------------------------------ calibration
    def _miou(self, terms: _FrameTerms, strength: float) -> float:
        """mIoU of the work-resolution argmax at `strength`, against the full-resolution ground truth."""
        C = self.num_classes
        pred = (terms.evidence + strength * terms.noise).argmax(axis=1)  # [n]
        cells = (pred[:, None] * C + np.arange(C)).ravel()  # confusion cell of each (pixel, true class)
        return miou_from_confusion(np.bincount(cells, weights=terms.counts.ravel(), minlength=C * C).reshape(C, C))

    def _solve_strength(self, terms: _FrameTerms, target: float) -> float:
        """Strength whose mIoU is nearest `target` (mIoU falls as strength grows)."""
        if not terms.counts.any():  # nothing labelled: any strength meets any target
            return _INITIAL_STRENGTH
        lo, hi = 0.0, _INITIAL_STRENGTH
        miou_lo, miou_hi = self._miou(terms, lo), self._miou(terms, hi)
        if miou_lo <= target:
            return 0.0
        while miou_hi > target and hi < 1e3:
            lo, miou_lo = hi, miou_hi
            hi *= 2.0
            miou_hi = self._miou(terms, hi)
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            miou_mid = self._miou(terms, mid)
            if miou_mid > target:
                lo, miou_lo = mid, miou_mid
            else:
                hi, miou_hi = mid, miou_mid
        return lo if miou_lo - target < target - miou_hi else hi

    @staticmethod
    def _fit_inverse_temperature(logits: np.ndarray, centre_labels: np.ndarray, rng) -> float:
        """Inverse softmax temperature minimising the ground truth's NLL on sampled pixels (Newton)."""
        rows = np.flatnonzero(centre_labels >= 0)
        if rows.size == 0:
            return 1.0
        rows = rng.choice(rows, size=min(rows.size, _TEMPERATURE_SAMPLES), replace=False)
        L = logits[rows].astype(np.float64)  # [m, C]
        L_true = L[np.arange(len(rows)), centre_labels[rows]]
        beta = 4.0
        for _ in range(20):
            z = beta * L
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            mean_L = (p * L).sum(axis=1)
            grad = (mean_L - L_true).mean()
            hess = ((p * L * L).sum(axis=1) - mean_L**2).mean()
            new_beta = float(np.clip(beta - grad / max(hess, 1e-9), beta / 4, min(beta * 4, _MAX_INV_TEMPERATURE)))
            if abs(new_beta - beta) < 1e-3 * beta:
                return new_beta
            beta = new_beta
        return beta
