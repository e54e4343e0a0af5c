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
    """One frame's 2D semantics, sampled lazily at the pixels the map needs.

    Holds either class probabilities [H, W, C] or labels [H, W] with a confidence, and turns
    only the sampled pixels into log-likelihood rows, so a frame costs O(sampled pixels x C).
    """

    def __init__(self, frame: Frame, num_classes: int, config: SemanticFusionConfig, device: str = "cpu"):
        self.num_classes = num_classes
        self.floor = float(config.probability_floor)
        self.device = device
        H, W = frame.depth_m.shape
        if frame.class_probs is not None:
            probs = frame.class_probs
            if probs.shape != (H, W, num_classes):
                raise ValueError(f"class_probs has shape {probs.shape}, expected {(H, W, num_classes)}")
            self.probs = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32)).reshape(H * W, num_classes)
            self.probs = self.probs.to(device)
            self.labels = None
        elif frame.labels is not None:
            self.probs = None
            self.labels = torch.from_numpy(np.ascontiguousarray(frame.labels, dtype=np.int64)).reshape(-1).to(device)
            conf = frame.label_confidence
            if conf is None:
                self.confidence = None
                self.default_confidence = float(config.label_confidence)
            else:
                self.confidence = torch.from_numpy(np.ascontiguousarray(conf, dtype=np.float32)).reshape(-1).to(device)
        else:
            raise ValueError("frame has no semantics (neither class_probs nor labels)")

    def log_likelihood(self, pixel_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log class likelihoods at flat pixel indices [N].

        Returns (log_lik [M, C] float32, kept [N] bool): pixels with an unknown label are not kept.
        """
        C = self.num_classes
        if self.probs is not None:
            p = self.probs[pixel_index].clamp_min(self.floor)
            return torch.log(p / p.sum(dim=1, keepdim=True)), torch.ones_like(pixel_index, dtype=torch.bool)
        labels = self.labels[pixel_index]
        kept = (labels >= 0) & (labels < C)
        labels = labels[kept]
        if self.confidence is None:
            conf = torch.full(labels.shape, self.default_confidence, device=labels.device)
        else:
            conf = self.confidence[pixel_index][kept]
        conf = conf.clamp(1.0 / C, 1.0 - self.floor)
        rest = torch.log((1.0 - conf) / (C - 1))
        log_lik = rest[:, None].expand(-1, C).clone()
        log_lik[torch.arange(len(labels), device=labels.device), labels] = torch.log(conf)
        return log_lik, kept


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


def decode_distribution(stored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels [N] int64, confidence [N] float32) from stored fixed-point log-probs [N, C]."""
    probs = torch.softmax(stored.float() / LOG_PROB_SCALE, dim=1)
    confidence, labels = probs.max(dim=1)
    return labels, confidence
