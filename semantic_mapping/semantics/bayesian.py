"""Baseline semantic fusion: per-voxel Bayesian accumulation of per-pixel class likelihoods.

Each voxel keeps log-probabilities over C classes relative to its best class (so the best is
0 and the rest are negative), stored as fixed-point int16. An observation with per-class
probabilities p multiplies the voxel's distribution by p^w (Kimera/SemanticFusion style), with
w the observation's TSDF-style weight.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from semantic_mapping.config import SemanticFusionConfig
from semantic_mapping.types import Frame

LOG_PROB_SCALE = 1024.0
"""Fixed-point scale of the stored log-probabilities (int16 units per nat)."""


class PixelSemantics:
    """One frame's 2D semantics at the pixels the map samples, as class probabilities [P, C].

    Built from class probabilities [H, W, C] or from labels [H, W] with an optional confidence;
    only the sampled pixels are read, so a frame costs O(P x C). Raises ValueError when a sampled
    pixel holds a negative or non-finite probability.
    """

    def __init__(self, frame: Frame, pixel_index: np.ndarray, num_classes: int, config: SemanticFusionConfig):
        C = num_classes
        self.pixel_index = pixel_index  # [P] int64 flat pixel indices
        if frame.class_probs is not None:
            probs = frame.class_probs.reshape(-1, frame.class_probs.shape[-1])[pixel_index]
            if probs.shape[1] != C:
                raise ValueError(f"class_probs has {probs.shape[1]} channels, the label space has {C}")
            if not (np.isfinite(probs).all() and (probs >= 0).all()):
                raise ValueError("class_probs hold negative or non-finite values")
            probs = probs.astype(np.float32)
            self.known = probs.sum(axis=1) > 0  # [P]
        elif frame.labels is not None:
            labels = frame.labels.reshape(-1)[pixel_index].astype(np.int64)
            self.known = (labels >= 0) & (labels < C)
            if frame.label_confidence is None:
                conf = np.full(len(labels), config.label_confidence, np.float32)
            else:
                conf = frame.label_confidence.reshape(-1)[pixel_index].astype(np.float32)
            conf = np.clip(conf, 1.0 / C, 1.0)
            probs = np.repeat(((1.0 - conf) / (C - 1))[:, None], C, axis=1)
            rows = np.nonzero(self.known)[0]
            probs[rows, labels[rows]] = conf[rows]
        else:
            raise ValueError("frame has no semantics (neither class_probs nor labels)")
        self.probs = probs  # [P, C] float32
        self.weights: Optional[np.ndarray] = None  # [P] float32 frame-vote weights (`frame_votes`); None: Bayesian product
        self.vote_space = "probabilities"  # what the frame votes average: "probabilities" or "logits" (`vote_values`)


LOGIT_EPS = 1e-6
"""Added to probabilities before their log where votes are averaged as logits (the keyframe votes' too)."""


def vote_values(probs: np.ndarray, vote_space: str) -> np.ndarray:  # [P, C] float32
    """What a vote averages: the probabilities [P, C] themselves, or their logs in the "logits" space."""
    return np.log(probs + np.float32(LOGIT_EPS)) if vote_space == "logits" else probs


def aggregate_by_voxel(
    flat: np.ndarray,  # [N] int64 voxel storage index of each sampled pixel
    probs: np.ndarray,  # [N, C] float32 class probabilities of each pixel
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # voxels [U] int64, summed probabilities [U, C] float32, first [U]
    """Sum the pixels' class probabilities per voxel; `first` is one of each voxel's pixels (a row of `flat`)."""
    order = np.argsort(flat)
    sorted_flat = flat[order]
    starts = np.empty(len(flat), bool)
    starts[0] = True
    np.not_equal(sorted_flat[1:], sorted_flat[:-1], out=starts[1:])
    run = np.cumsum(starts) - 1  # [N] voxel number of each sorted pixel
    summed = torch.zeros((int(run[-1]) + 1, probs.shape[1])).index_add_(
        0, torch.from_numpy(run), torch.from_numpy(probs[order]))
    return sorted_flat[starts], summed.numpy(), order[starts]


def bayesian_update(
    stored: np.ndarray,  # [U, C] int16 fixed-point log-probs relative to the best class
    summed_probs: np.ndarray,  # [U, C] this frame's class probabilities per voxel (any positive scale)
    probability_floor: float,
    min_log_prob: float,
    weight: float = 1.0,
    log_prior: Optional[np.ndarray] = None,  # [U, C] float32 added log-probabilities (e.g. a geometry prior)
) -> np.ndarray:  # [U, C] int16
    """Multiply each voxel's class distribution by one observation p^weight: p its pixels' mean
    probabilities, each raised to at least `probability_floor` and renormalised (and by exp(log_prior))."""
    total = summed_probs.sum(axis=1, keepdims=True)
    p = np.maximum(summed_probs, np.float32(probability_floor) * total)
    log_p = stored.astype(np.float32) * np.float32(1.0 / LOG_PROB_SCALE) + np.float32(weight) * np.log(p / p.sum(axis=1, keepdims=True))
    if log_prior is not None:
        log_p += log_prior
    log_p -= log_p.max(axis=1, keepdims=True)
    np.maximum(log_p, np.float32(min_log_prob), out=log_p)
    return np.rint(log_p * np.float32(LOG_PROB_SCALE)).astype(np.int16)


def class_probabilities(stored: torch.Tensor) -> torch.Tensor:  # [N, C] float32
    """Class distributions from stored fixed-point log-probs [N, C]."""
    return torch.softmax(stored.float() / LOG_PROB_SCALE, dim=1)
