"""Online soft voting in the map (semantics.method = 'voting').

Every new keyframe queues the voxels its depth lands in. Queued voxels are voted in batches: the
`views_per_voxel` nearest keyframes that see a voxel (SDF visibility test on the fused TSDF)
give their sampled features and class probabilities, the network weighs them (GNeSF Eq. 3-4),
and the vote s(x) joins the voxel's persistent class distribution with weight `vote_weight`. Views
that leave the keyframe buffer are thereby never forgotten: their votes stay in the distribution.
Underneath, every frame's pixels update the voxels they land in: with frame votes on
(`VotingConfig.frame_votes`, `semantics.frame_votes`) each pixel votes its probabilities into the
voxel's weighted mean with a learned weight, and the keyframe votes join that mean (weight in units
of an average pixel vote); with them off, frames and keyframe votes multiply the distribution as in
Bayesian fusion (floored like every observation). With the geometry prior on, each frame's
observation of a voxel is also tilted by the network's π(c | n(x), h(x))^prior_weight, n(x) the
voxel's TSDF normal at that time turned towards the frame's camera and h(x) its height above the floor.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from semantic_mapping.config import ConfigError, SemanticFusionConfig, VotingConfig
from semantic_mapping.fusion.voxel_map import VoxelMap, pack_indices
from semantic_mapping.geometry import backproject_depth, transform_points
from semantic_mapping.semantics.bayesian import PixelSemantics
from semantic_mapping.semantics.frame_votes import SHIPPED_WEIGHTS as FRAME_VOTE_WEIGHTS
from semantic_mapping.semantics.frame_votes import frame_cues
from semantic_mapping.semantics.frame_votes import load_checkpoint as load_frame_votes
from semantic_mapping.semantics.keyframes import KeyframeBuffer
from semantic_mapping.semantics.voting import VotingNet, load_checkpoint
from semantic_mapping.semantics.voting_data import facing_camera, geometry_encoding, point_views
from semantic_mapping.types import Frame

log = logging.getLogger(__name__)

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "voting.pt"
"""Weights produced by `semantic-mapping train-voting` with its defaults, shipped in the package."""

@dataclass
class VotingStats:
    """Counters since the last reset."""

    keyframes: int = 0
    frames_refused: int = 0
    voxels_voted: int = 0
    voxels_without_view: int = 0
    pending_dropped: int = 0
    vote_seconds: float = 0.0
    prior_voxels: int = 0
    prior_seconds: float = 0.0
    frame_vote_frames: int = 0
    frame_vote_voxels: int = 0  # voxel updates by frame votes
    frame_vote_seconds: float = 0.0  # computing the frames' pixel weights

    @property
    def voxels_per_s(self) -> float:
        """Keyframe votes per second of voting."""
        return self.voxels_voted / self.vote_seconds if self.vote_seconds > 0 else 0.0


class SoftVoting:
    """Keyframe buffer, pending voxels and the voting network of one map."""

    def __init__(self, net: VotingNet, config: VotingConfig, semantics: SemanticFusionConfig, uniform: bool = False):
        if config.batch_voxels < 1 or config.max_pending_voxels < 1 or config.max_voxels_per_frame < 0:
            raise ConfigError("voting: batch_voxels and max_pending_voxels must be >= 1, max_voxels_per_frame >= 0")
        if not config.vote_weight > 0:
            raise ConfigError(f"voting.vote_weight must be > 0, got {config.vote_weight}")
        if config.prior_weight < 0 or not 0 < config.prior_floor <= 1:
            raise ConfigError(f"voting.prior_weight must be >= 0 and prior_floor in (0, 1], got "
                              f"{config.prior_weight} and {config.prior_floor}")
        self.net = net.eval()
        self.frame_net = None  # FrameVoteNet when frames vote with learned weights (`VotingConfig.frame_votes`)
        self.config = config
        self.semantics = semantics
        self.uniform = uniform
        self.reset()

    @classmethod
    def from_config(cls, config: VotingConfig, semantics: SemanticFusionConfig,
                    num_classes: int) -> tuple["SoftVoting", dict]:
        """(voting, checkpoint meta) with the configured or shipped weights; raises CheckpointError.
        Equal view weights without the geometry prior read no weights."""
        if not config.learned and not config.geometry_prior:
            return cls(VotingNet(num_classes), config, semantics, uniform=True), {"learned": False}
        net, meta = load_checkpoint(config.weights or SHIPPED_WEIGHTS, num_classes)
        voting = cls(net, config, semantics, uniform=not config.learned)
        if config.frame_votes and config.learned:
            voting.frame_net, meta["frame_votes"] = load_frame_votes(config.frame_vote_weights or FRAME_VOTE_WEIGHTS)
        return voting, meta

    def frame_vote_weights(self, frame: Frame, semantics: PixelSemantics) -> np.ndarray:  # [P] float32
        """The learned frame-vote weight of each of the frame's sampled pixels (all 1 with equal view weights)."""
        if self.uniform:
            return np.ones(len(semantics.pixel_index), np.float32)
        start = time.perf_counter()
        peak = frame.class_probs.max(axis=-1).mean() if frame.class_probs is not None else semantics.probs.max(1).mean()
        cues = frame_cues(frame.depth_m, frame.intrinsics.K, semantics.pixel_index, semantics.probs, float(peak))
        weights = self.frame_net.weights(cues)
        self.stats.frame_vote_frames += 1
        self.stats.frame_vote_seconds += time.perf_counter() - start
        return weights

    @property
    def frame_vote_space(self) -> str:
        """What the frame votes average: "logits" only with frame-vote weights trained for them."""
        return "probabilities" if self.frame_net is None else self.frame_net.vote_space

    @property
    def semantic_prior(self):
        """`VoxelMap.integrate`'s semantic_prior: the geometry prior, or None when it is off."""
        return self.observation_log_prior if self.config.geometry_prior and self.config.prior_weight > 0 else None

    def observation_log_prior(self, vmap: VoxelMap, voxel_indices: np.ndarray,
                              camera_m: np.ndarray) -> np.ndarray:  # [U, C] float32
        """prior_weight x log π(c | n, h) at voxels [U, 3] observed from the camera centre `camera_m` [3]
        (world frame): n their TSDF normal now (`geometry_encoding`) turned towards the camera, h their
        height above `floor_z_m`."""
        start = time.perf_counter()
        centres_m = torch.from_numpy(voxel_indices * vmap.voxel_size_m)  # [U, 3] float64
        normal = facing_camera(geometry_encoding(vmap, centres_m)[:, -3:], centres_m.float(),
                               torch.from_numpy(np.asarray(camera_m, np.float32)))  # [U, 3]
        height_m = (centres_m[:, 2] - self.config.floor_z_m).float()  # [U]
        with torch.no_grad():
            log_prior = self.config.prior_weight * self.net.observation_log_prior(normal, height_m, self.config.prior_floor)
        self.stats.prior_voxels += len(voxel_indices)
        self.stats.prior_seconds += time.perf_counter() - start
        return log_prior.numpy()

    def reset(self) -> None:
        """Forget the keyframes, the queue and the counters (the map keeps its votes)."""
        encoder = None if self.uniform else self.net.encoder
        self.buffer = KeyframeBuffer(self.config.keyframes, self.net.num_classes, encoder,
                                     semantics=self.semantics)
        self._pending = np.zeros((0, 3), np.int64)  # [Q, 3] voxel indices, oldest first
        self.stats = VotingStats()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def observe(self, vmap: VoxelMap, frame: Frame) -> bool:
        """Offer an integrated frame (with semantics) to the keyframe buffer; a new keyframe queues
        the voxels its depth lands in. True if it became a keyframe (never without keyframe votes)."""
        if not self.config.keyframe_votes:
            return False
        try:
            if not self.buffer.consider(frame):
                return False
        except ValueError as exc:  # e.g. a frame of another size than the buffer's keyframes
            self.stats.frames_refused += 1
            log.warning("soft voting: frame at %s ns not used as a keyframe: %s", frame.stamp_ns, exc)
            return False
        self.stats.keyframes += 1
        kf = self.buffer.keyframes[-1]
        depth = kf.depth_small.cpu().numpy()  # [h, w]
        points = transform_points(kf.T_world_cam, backproject_depth(depth, kf.intrinsics.K)[depth > 0].astype(np.float64))
        voxels = np.unique(vmap.voxel_indices(points), axis=0)  # [V, 3]
        _, found = vmap.lookup(voxels)
        voxels = voxels[found]
        queued = np.isin(pack_indices(voxels), pack_indices(self._pending))
        self._pending = np.concatenate([self._pending, voxels[~queued]])
        excess = len(self._pending) - self.config.max_pending_voxels
        if excess > 0:
            self._pending = self._pending[excess:]
            self.stats.pending_dropped += excess
        return True

    def update(self, vmap: VoxelMap) -> int:
        """Vote queued voxels (at most `max_voxels_per_frame`, 0 = all) and fuse the votes; returns how many."""
        limit = self.config.max_voxels_per_frame or len(self._pending)
        todo, self._pending = self._pending[:limit], self._pending[limit:]
        start = time.perf_counter()
        for first in range(0, len(todo), self.config.batch_voxels):
            voxels = todo[first:first + self.config.batch_voxels]
            votes = self.vote(vmap, torch.from_numpy(voxels * vmap.voxel_size_m).float())  # [B, C]
            has_vote = (votes.sum(1) > 0).numpy()
            vmap.fuse_distributions(voxels[has_vote], votes.numpy()[has_vote], self.config.vote_weight,
                                    average=self.frame_vote_space if self.config.frame_votes else None)
            self.stats.voxels_without_view += int((~has_vote).sum())
        if len(todo):
            self.stats.voxels_voted += len(todo)
            self.stats.vote_seconds += time.perf_counter() - start
        return len(todo)

    def vote(self, vmap: VoxelMap, points_m: torch.Tensor) -> torch.Tensor:  # [P, C]
        """s(x) at world points [P, 3] from the buffer's keyframes (zeros where no keyframe sees x)."""
        if len(self.buffer) == 0:
            return torch.zeros((len(points_m), self.net.num_classes))
        views = point_views(vmap, self.buffer, points_m, self.config.keyframes.views_per_voxel, self.config.visibility)
        kf = self.buffer.keyframes[0]
        with torch.no_grad():
            return self.net.vote(views, views.features, (kf.intrinsics.width_px, kf.intrinsics.height_px), self.uniform)
