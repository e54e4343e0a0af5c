"""Baseline semantic fusion: per-voxel Bayesian accumulation of per-pixel class likelihoods.

Each voxel keeps log-probabilities over C classes relative to its best class (so the best is
0 and the rest are negative), stored as fixed-point int16. An observation with per-class
probabilities p multiplies the voxel's distribution by p^w (Kimera/SemanticFusion style), with
w the observation's TSDF-style weight.
"""

from __future__ import annotations

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
        self.probs = torch.from_numpy(np.ascontiguousarray(probs))  # [P, C] float32
        self.floor = float(config.probability_floor)


def bayesian_update(
    stored: torch.Tensor,  # [N, C] int16 fixed-point log-probs relative to the best class
    log_lik: torch.Tensor,  # [N, C] float32 observation log-likelihoods
    weight: torch.Tensor,  # [N] float32 observation weights in [0, 1]
    min_log_prob: float,
) -> torch.Tensor:  # [N, C] int16
    """Multiply each voxel's class distribution by the observation's likelihood^weight."""
    log_p = stored.float() / LOG_PROB_SCALE + weight[:, None] * log_lik
    log_p = log_p - log_p.max(dim=1, keepdim=True).values
    return (log_p.clamp_min(min_log_prob) * LOG_PROB_SCALE).round().to(torch.int16)


def observation_log_likelihood(probs: torch.Tensor, floor: float) -> torch.Tensor:  # [N, C]
    """Log of class probabilities [N, C], floored and renormalised, as one observation's likelihood."""
    p = probs.clamp_min(floor)
    return torch.log(p / p.sum(dim=1, keepdim=True))


def decode_distribution(stored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels [N] int64, confidence [N] float32) from stored fixed-point log-probs [N, C]."""
    probs = torch.softmax(stored.float() / LOG_PROB_SCALE, dim=1)
    confidence, labels = probs.max(dim=1)
    return labels, confidence
