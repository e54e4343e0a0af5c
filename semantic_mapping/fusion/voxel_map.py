"""Sparse, chunked TSDF + colour + semantic voxel map.

Open3D's tensor `VoxelBlockGrid` does the hashing, TSDF/colour integration, raycasting and
meshing. The per-voxel class distribution is an extra attribute of the same grid, shared with
torch through DLPack (no copies) and updated by `semantics.bayesian`.

Voxel (i, j, k) has its centre at (i, j, k) * voxel_size_m in the world frame (z up).
"""

from __future__ import annotations

import collections
import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import open3d as o3d
import open3d.core as o3c
import torch
from torch.utils.dlpack import from_dlpack

from semantic_mapping.atomic_files import atomic_save_npz
from semantic_mapping.config import FusionConfig, SemanticFusionConfig, config_to_dict, resolve_device
from semantic_mapping.geometry import invert_pose
from semantic_mapping.semantics.bayesian import (
    LOG_PROB_SCALE,
    PixelSemantics,
    aggregate_by_voxel,
    bayesian_update,
    class_probabilities,
    vote_values,
)
from semantic_mapping.types import CameraIntrinsics, RenderedView

log = logging.getLogger(__name__)

SemanticPrior = Callable[["VoxelMap", np.ndarray, np.ndarray], np.ndarray]
"""(map, voxel indices [U, 3], observing camera centre [3] in the world frame, metres) -> [U, C]
log-probabilities multiplied in with each observation."""

MAP_FORMAT = "semantic_mapping.voxel_map"
MAP_FORMAT_VERSION = 1

# (name, Open3D dtype, channels); "semantic" gets C channels.
_ATTRIBUTES = (
    ("tsdf", o3c.float32, 1),  # signed distance / truncation, in [-1, 1]
    ("weight", o3c.uint16, 1),  # integrated observations, capped at fusion.max_weight
    ("color", o3c.uint16, 3),  # mean colour, 0..255
    ("semantic", o3c.int16, None),  # fixed-point log-probs relative to the best class
    ("semantic_count", o3c.int16, 1),  # semantic observations, saturating at 32767
    ("semantic_weight", o3c.float32, 1),  # total weight of the frame votes averaged into "semantic" (0: none)
)


# dense field name -> (attribute, numpy dtype, value where unallocated, scale, one channel)
DENSE_FIELDS = {
    "tsdf": ("tsdf", np.float32, 1.0, 1.0, True),
    "weight": ("weight", np.float32, 0.0, 1.0, True),
    "color": ("color", np.uint8, 0, 1.0, False),
    "log_probs": ("semantic", np.float32, 0.0, 1.0 / LOG_PROB_SCALE, False),
    "semantic_count": ("semantic_count", np.int32, 0, 1.0, True),
}

_WEIGHT_CAP_PERIOD = 256
"""Integrations between two weight caps; Open3D adds 1 per integration, so uint16 weights never wrap."""


def pack_indices(indices: np.ndarray) -> np.ndarray:  # [N] int64
    """One int64 key per integer index triple [N, 3] (21 bits per axis, |index| < 2^20), for
    set operations and `unique` over voxels or cells."""
    return (np.asarray(indices, dtype=np.int64) + (1 << 20)) @ np.array([1 << 42, 1 << 21, 1], np.int64)


def unpack_indices(keys: np.ndarray) -> np.ndarray:  # [N, 3] int64
    """Index triples of `pack_indices` keys [N]."""
    keys = np.asarray(keys, dtype=np.int64)
    mask = (1 << 21) - 1
    return np.stack([(keys >> 42) & mask, (keys >> 21) & mask, keys & mask], axis=1) - (1 << 20)


def sorted_positions(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:  # [N] int64, -1 = absent
    """Index in `sorted_keys` [M] (ascending, unique) of each of `keys` [N]."""
    if len(sorted_keys) == 0:
        return np.full(len(keys), -1, np.int64)
    pos = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == keys, pos, -1)


_FORWARD_STEPS = np.array(
    [(x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1) if (x, y, z) > (0, 0, 0)], np.int64
)  # [13, 3]: each 26-neighbour pair once


def neighbour_pairs(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(i [E], j [E]) int64: every pair of 26-neighbours among voxels [N, 3], once."""
    keys = pack_indices(indices)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    rows, cols = [], []
    for step in _FORWARD_STEPS:
        pos = sorted_positions(sorted_keys, pack_indices(indices + step))
        rows.append(np.flatnonzero(pos >= 0))
        cols.append(order[pos[pos >= 0]])
    return np.concatenate(rows), np.concatenate(cols)


@dataclass
class IntegrationStats:
    """What one `integrate` call touched."""

    blocks_touched: int
    voxels_semantic_updated: int
    chunks_touched: list  # chunk indices (x, y, z) the frame's blocks lie in


class VoxelMap:
    """TSDF, weight, colour and class distribution over a sparse grid of 8^3-voxel blocks."""

    def __init__(self, config: FusionConfig, num_classes: int, semantics: Optional[SemanticFusionConfig] = None):
        self.config = config
        self.semantics_config = semantics or SemanticFusionConfig()
        self.num_classes = int(num_classes)
        self.device = resolve_device(config.device)
        if config.voxel_size_m is None:
            self.voxel_size_m = 0.02 if self.device.startswith("cuda") else 0.04
        else:
            self.voxel_size_m = float(config.voxel_size_m)
        if self.voxel_size_m <= 0 or config.sdf_trunc_voxels <= 0:
            raise ValueError("fusion.voxel_size_m and fusion.sdf_trunc_voxels must be positive")
        self.sdf_trunc_m = self.voxel_size_m * config.sdf_trunc_voxels
        self.block_resolution = int(config.block_resolution)
        self._o3d_device = o3c.Device("CUDA:" + self.device.split(":")[1] if self.device.startswith("cuda") else "CPU:0")
        if not 0 < config.max_weight < 65535 - _WEIGHT_CAP_PERIOD:
            raise ValueError(f"fusion.max_weight must be in (0, {65535 - _WEIGHT_CAP_PERIOD}), got {config.max_weight}")
        self.chunk_updates: collections.Counter = collections.Counter()  # chunk index -> integrations touching it
        self.generation = 0  # bumps when the map is replaced (reset, load): consumers start over
        self.version = 0  # bumps on every change; blocks remember the version that last changed them
        self._block_versions: dict = {}  # packed block coordinate -> version of its last change
        from semantic_mapping.semantics.context import SpatialContext  # it reads maps through this module

        self.context = SpatialContext(self.semantics_config) if self.semantics_config.context_iterations != 0 else None
        self.reset()
        self._rays_cache: dict = {}
        self._samples_cache: dict = {}

    # ------------------------------------------------------------------ storage
    def _new_grid(self, capacity: int) -> o3d.t.geometry.VoxelBlockGrid:
        names, dtypes, channels = zip(*_ATTRIBUTES)
        channels = tuple(self.num_classes if c is None else c for c in channels)
        return o3d.t.geometry.VoxelBlockGrid(
            attr_names=names,
            attr_dtypes=dtypes,
            attr_channels=channels,
            voxel_size=self.voxel_size_m,
            block_resolution=self.block_resolution,
            block_count=max(int(capacity), 16),
            device=self._o3d_device,
        )

    def attribute(self, name: str) -> torch.Tensor:
        """Zero-copy torch view of an attribute: [capacity, R, R, R, channels] (R = block resolution)."""
        return from_dlpack(self._grid.attribute(name).to_dlpack())

    def _flat(self, name: str) -> torch.Tensor:  # [capacity * R^3, channels]
        t = self.attribute(name)
        return t.reshape(-1, t.shape[-1])

    @property
    def num_blocks(self) -> int:
        return int(self._grid.hashmap().size())

    @property
    def num_voxels(self) -> int:
        """Voxels in allocated blocks."""
        return self.num_blocks * self.block_resolution**3

    def bytes_per_voxel(self) -> float:
        """Storage per allocated voxel: attributes plus the amortised hash key and index of its block."""
        payload = sum(
            dt.byte_size() * (self.num_classes if ch is None else ch)
            for _, dt, ch in _ATTRIBUTES
        )
        key_and_index = 3 * 4 + 4 + 4  # int32 block key, buffer index, hash slot per block
        return payload + key_and_index / self.block_resolution**3

    def active_block_coords(self) -> o3c.Tensor:  # [B, 3] int32 block coordinates
        hashmap = self._grid.hashmap()
        return hashmap.key_tensor()[hashmap.active_buf_indices().to(o3c.int64)]

    def _cap_weights(self) -> None:
        """Clamp every voxel's weight at fusion.max_weight (keeps the map adaptable and uint16 safe)."""
        weight = self.attribute("weight")
        weight.copy_(weight.to(torch.int32).clamp_max(int(self.config.max_weight)).to(torch.uint16))

    def reset(self) -> None:
        """Forget everything: afterwards the map integrates exactly as a new one."""
        self._grid = self._new_grid(self.config.initial_block_capacity)
        self._integrations = 0  # weight cap period and pixel interleave turn
        self.chunk_updates.clear()
        self._new_generation()

    def _new_generation(self) -> None:
        """A new grid (reset, load): consumers start over, and its raycast buffer starts small."""
        self._raycast_sized_blocks = 0  # map size when Open3D's raycast buffer was last grown
        self.generation += 1
        self.version += 1
        self._block_versions.clear()

    def _mark_blocks(self, block_coords: np.ndarray) -> None:
        """Record that blocks [B, 3] changed (a new map version)."""
        self.version += 1
        self._block_versions.update(dict.fromkeys(pack_indices(block_coords).tolist(), self.version))

    def changed_blocks(self, since_version: int) -> np.ndarray:  # [B, 3] int64 block coordinates
        """Blocks changed after map version `since_version` of the current generation."""
        if not self._block_versions:
            return np.zeros((0, 3), np.int64)
        keys = np.fromiter(self._block_versions.keys(), np.int64, len(self._block_versions))
        versions = np.fromiter(self._block_versions.values(), np.int64, len(self._block_versions))
        return unpack_indices(keys[versions > since_version])

    # ------------------------------------------------------------------ integration
    def integrate(
        self,
        depth_m: np.ndarray,  # [H, W] float32 metres, 0 = invalid
        rgb: np.ndarray,  # [H, W, 3] uint8
        intrinsics: CameraIntrinsics,
        T_world_cam: np.ndarray,  # [4, 4]
        semantics: Optional[PixelSemantics] = None,
        semantic_prior: Optional[SemanticPrior] = None,
    ) -> IntegrationStats:
        """Fuse one frame's depth and colour (Open3D) and its semantics (Bayesian update).

        `semantic_prior(map, voxel_indices [U, 3], camera centre [3]) -> [U, C]` log-probabilities,
        when given, multiply the distribution of every voxel the semantics update, with each
        observation (after the depth is fused, so it can read the geometry there)."""
        cfg = self.config
        # Millimetre uint16 depth lets Open3D take the uint8 colour as it is (no float colour image).
        depth_mm = np.minimum(depth_m * 1000.0 + 0.5, 65535.0).astype(np.uint16)
        depth_img = o3d.t.geometry.Image(o3c.Tensor(depth_mm)).to(self._o3d_device)
        color_img = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(rgb))).to(self._o3d_device)
        K = o3c.Tensor(intrinsics.K, o3c.float64)
        T_cam_world = invert_pose(T_world_cam)
        extrinsic = o3c.Tensor(T_cam_world, o3c.float64)
        block_coords = self._grid.compute_unique_block_coordinates(
            depth_img, K, extrinsic, 1000.0, cfg.depth_max_m, trunc_voxel_multiplier=cfg.sdf_trunc_voxels
        )
        self._grid.integrate(
            block_coords, depth_img, color_img, K, K, extrinsic, 1000.0, cfg.depth_max_m,
            trunc_voxel_multiplier=cfg.sdf_trunc_voxels,
        )
        self._integrations += 1
        if self._integrations % _WEIGHT_CAP_PERIOD == 0:
            self._cap_weights()
        chunks = self._record_changed_blocks(block_coords)
        updated = 0
        if semantics is not None:
            updated = self._integrate_semantics(depth_m, intrinsics, T_world_cam, semantics, semantic_prior)
        return IntegrationStats(blocks_touched=int(block_coords.shape[0]), voxels_semantic_updated=updated,
                                chunks_touched=chunks)

    def _integrate_semantics(
        self,
        depth_m: np.ndarray,  # [H, W]
        intrinsics: CameraIntrinsics,
        T_world_cam: np.ndarray,  # [4, 4]
        semantics: PixelSemantics,
        semantic_prior: Optional[SemanticPrior] = None,
    ) -> int:
        """Bayesian update of the voxels that contain the observed surface (pixel-driven).

        Every `pixel_stride`-th pixel is back-projected to the voxel holding its surface point; a
        voxel's pixels in this frame are averaged into one observation of weight 1, the same weight
        the TSDF gives the frame.
        """
        pixel = semantics.pixel_index  # [P]
        d = depth_m.reshape(-1)[pixel]
        valid = (d > self.config.depth_min_m) & (d < self.config.depth_max_m) & semantics.known
        points_cam = self._pixel_rays(intrinsics, pixel, depth_m.shape[1])[valid] * d[valid, None]
        R_wc = T_world_cam[:3, :3].astype(np.float32)
        points_world = points_cam @ R_wc.T + T_world_cam[:3, 3].astype(np.float32)
        voxel_indices = self.voxel_indices(points_world)  # [P', 3]
        flat, found = self.lookup(voxel_indices)
        if not found.any():
            return 0
        rows = np.flatnonzero(valid)[found]
        if semantics.weights is None:
            voxels, summed, first = aggregate_by_voxel(flat[found], semantics.probs[rows])
        else:  # frame votes: the pixels' weighted votes, their weights and their count, summed per voxel
            w = semantics.weights[rows, None]
            votes = vote_values(semantics.probs[rows], semantics.vote_space)
            voxels, summed, first = aggregate_by_voxel(flat[found], np.concatenate([votes * w, w, np.ones_like(w)], 1))
            summed = summed[:, :-1] / summed[:, -1:]  # the frame votes once per voxel: its pixels' means
        log_prior = None if semantic_prior is None else semantic_prior(self, voxel_indices[found][first], T_world_cam[:3, 3])
        if semantics.weights is None:
            self._multiply_distributions(voxels, summed, 1.0, log_prior)
        else:
            weighted_mean, weight = summed[:, :-1] / summed[:, -1:], summed[:, -1]  # Σ w v / Σ w, mean w
            self._average_distributions(voxels, weighted_mean, weight, semantics.vote_space, log_prior)
        return int(len(voxels))

    def fuse_distributions(
        self,
        voxel_indices: np.ndarray,  # [P, 3] int64 distinct voxel indices
        probs: np.ndarray,  # [P, C] float32 class distributions (e.g. soft votes)
        weight: float,
        average: Optional[str] = None,
    ) -> int:
        """Multiply the distributions of allocated voxels by probs^weight (floored as every
        observation is), or with `average` (a vote space, `VOTE_SPACES`) add probs to their weighted
        means in that space with weight `weight`; returns how many voxels were updated."""
        flat, found = self.lookup(voxel_indices)
        if found.any():
            probs = np.asarray(probs, np.float32)[found]
            if average is not None:
                self._average_distributions(flat[found], vote_values(probs, average),
                                            np.full(len(probs), weight, np.float32), average)
            else:
                self._multiply_distributions(flat[found], probs, weight)
            self._mark_blocks(np.unique(np.floor_divide(np.asarray(voxel_indices)[found], self.block_resolution), axis=0))
        return int(found.sum())

    def _multiply_distributions(self, voxels: np.ndarray, probs: np.ndarray, weight: float,
                                log_prior: Optional[np.ndarray] = None) -> None:
        """One observation [U, C] of weight `weight` for each distinct flat voxel [U] (`bayesian_update`)."""
        cfg = self.semantics_config
        sem = self._flat("semantic")
        index = torch.from_numpy(voxels).to(sem.device)
        updated = bayesian_update(sem[index].cpu().numpy(), probs, cfg.probability_floor, cfg.min_log_prob, weight,
                                  log_prior)
        sem[index] = torch.from_numpy(updated).to(sem.device)
        count = self._flat("semantic_count")
        count[index] = (count[index].to(torch.int32) + 1).clamp_max(32767).to(torch.int16)

    def _average_distributions(self, voxels: np.ndarray, votes: np.ndarray, weight: np.ndarray, vote_space: str,
                               log_prior: Optional[np.ndarray] = None) -> None:
        """Add one observation of weight [U] to the weighted mean distribution of each distinct flat
        voxel [U] (`frame_votes`): votes [U, C] are probabilities (any positive scale) or, in the
        "logits" space, log-probabilities (any offset); either is tilted by exp(log_prior). A voxel
        without frame votes yet (total weight 0) takes the observation as it is, unless it holds a
        distribution from before (fused by another method): that counts as one vote of weight 1."""
        cfg = self.semantics_config
        sem, total = self._flat("semantic"), self._flat("semantic_weight")
        index = torch.from_numpy(voxels).to(sem.device)
        log_obs = votes if vote_space == "logits" else np.log(np.maximum(votes, 1e-30))
        if log_prior is not None:
            log_obs = log_obs + log_prior
        log_obs = log_obs - log_obs.max(axis=1, keepdims=True)
        log_obs -= np.log(np.exp(log_obs).sum(axis=1, keepdims=True))  # [U, C] normalised
        count = self._flat("semantic_count")
        old_weight = total[index, 0].cpu().numpy().astype(np.float64)
        old_weight[(old_weight == 0) & (count[index, 0].cpu().numpy() > 0)] = 1.0
        mean = class_probabilities(sem[index]).cpu().numpy()  # [U, C]
        new_weight = old_weight + weight
        share_old = (old_weight / np.maximum(new_weight, 1e-30))[:, None]  # [U, 1]
        if vote_space == "logits":
            log_p = share_old * np.log(np.maximum(mean, 1e-30)) + (1 - share_old) * log_obs
        else:
            log_p = np.log(np.maximum(share_old * mean + (1 - share_old) * np.exp(log_obs), 1e-30))
        log_p = np.maximum(log_p - log_p.max(axis=1, keepdims=True), cfg.min_log_prob)
        sem[index] = torch.from_numpy(np.rint(log_p * LOG_PROB_SCALE).astype(np.int16)).to(sem.device)
        total[index] = torch.from_numpy(new_weight.astype(np.float32)[:, None]).to(total.device)
        count[index] = (count[index].to(torch.int32) + 1).clamp_max(32767).to(torch.int16)

    def _pixel_rays(self, intrinsics: CameraIntrinsics, pixel_index: np.ndarray, width_px: int) -> np.ndarray:
        """Camera rays [P, 3] (z = 1) through flat pixel indices, cached per camera and pixel set."""
        key = (intrinsics, width_px, pixel_index.ctypes.data, len(pixel_index))
        if key not in self._rays_cache:
            v, u = np.divmod(pixel_index, width_px)
            rays = np.stack([(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy, np.ones(len(u))], 1)
            if len(self._rays_cache) > 64:
                self._rays_cache.clear()
            self._rays_cache[key] = rays.astype(np.float32)
        return self._rays_cache[key]

    def sample_pixels(self, shape: tuple, intrinsics: CameraIntrinsics) -> np.ndarray:
        """Flat indices [P] of the pixels whose semantics the next frame contributes.

        The full sample is every `pixel_stride`-th pixel along each axis (auto: the largest stride whose
        footprint at the maximum depth is under a voxel). With `pixel_interleave` k, consecutive frames
        take turns over the k x k interleaved subsets of that grid, so a moving camera still covers it
        all within k^2 frames for 1/k^2 of the work per frame.
        """
        cfg = self.semantics_config
        stride = cfg.pixel_stride
        if stride is None:
            stride = int(max(1, np.floor(self.voxel_size_m * min(intrinsics.fx, intrinsics.fy) / self.config.depth_max_m)))
        k = int(cfg.pixel_interleave)
        turn = self._integrations % (k * k)
        key = (shape, stride, k, turn)
        if key not in self._samples_cache:
            H, W = shape
            dv, du = divmod(turn, k)
            step = stride * k
            v, u = np.mgrid[stride // 2 + dv * stride:H:step, stride // 2 + du * stride:W:step].reshape(2, -1)
            self._samples_cache[key] = v * W + u
        return self._samples_cache[key]

    # ------------------------------------------------------------------ chunks
    @property
    def chunk_shape_voxels(self) -> np.ndarray:  # [3] voxels per chunk along x, y, z
        shape = np.asarray(self.config.chunk_shape_voxels, dtype=np.int64)
        if shape.shape != (3,) or np.any(shape % self.block_resolution):
            raise ValueError(f"fusion.chunk_shape_voxels {tuple(shape)} must be 3 multiples of the block resolution")
        return shape

    def _record_changed_blocks(self, block_coords: o3c.Tensor) -> list:
        """Mark integrated blocks changed and count an update of their chunks; returns those chunks."""
        blocks = block_coords.cpu().numpy().astype(np.int64)
        self._mark_blocks(blocks)
        blocks_per_chunk = self.chunk_shape_voxels // self.block_resolution
        chunks = [tuple(chunk) for chunk in np.unique(np.floor_divide(blocks, blocks_per_chunk), axis=0).tolist()]
        self.chunk_updates.update(chunks)
        return chunks

    def read_chunk(self, chunk_index) -> dict:
        """Dense arrays of one chunk (SSR-2D subvolume), voxel order [x, y, z]; unobserved voxels have weight 0.

        Returns tsdf [X, Y, Z] (in [-1, 1], 1 where unobserved), weight [X, Y, Z], color [X, Y, Z, 3]
        uint8, log_probs [X, Y, Z, C] float32 (relative to the best class), semantic_count [X, Y, Z],
        and origin_index [3]: the integer index of voxel [0, 0, 0].
        """
        shape = self.chunk_shape_voxels
        out = self.read_region(np.asarray(chunk_index, dtype=np.int64) * shape, shape, DENSE_FIELDS)
        out["origin_index"] = np.asarray(chunk_index, dtype=np.int64) * shape
        return out

    def read_region(self, origin_index: np.ndarray, shape, fields=("tsdf", "weight", "color")) -> dict:
        """Dense arrays of any box of voxels (origin_index [3], shape [3]), voxel order [x, y, z], reading
        only the blocks it overlaps. `fields` among DENSE_FIELDS, as `read_chunk` returns them; the tsdf is
        1 where unobserved (weight 0; "tsdf" needs "weight")."""
        R = self.block_resolution
        origin = np.asarray(origin_index, dtype=np.int64)
        shape = np.asarray(shape, dtype=np.int64)
        first = np.floor_divide(origin, R)
        nb = np.floor_divide(origin + shape - 1, R) - first + 1  # [3] blocks along each axis
        offsets = np.stack(np.meshgrid(*[np.arange(n) for n in nb], indexing="ij"), -1).reshape(-1, 3)
        found = np.zeros(len(offsets), bool)
        if self.num_blocks:
            buf, ok = self._grid.hashmap().find(o3c.Tensor((first + offsets).astype(np.int32)).to(self._o3d_device))
            buf = from_dlpack(buf.to_dlpack()).long().cpu()
            found = from_dlpack(ok.to_dlpack()).bool().cpu().numpy()
        inside = tuple(slice(int(a), int(a + n)) for a, n in zip(origin - first * R, shape))
        out = {}
        for name in fields:
            attribute, dtype, fill, scale, squeeze = DENSE_FIELDS[name]
            channels = self.num_classes if name == "log_probs" else (3 if name == "color" else 1)
            dense = np.full((*nb, R, R, R, channels), fill, dtype)  # [bx, by, bz, x, y, z, ch]
            if found.any():
                values = self.attribute(attribute)[buf[found].to(self.attribute(attribute).device)].cpu()
                if values.dtype == torch.uint16:
                    values = values.to(torch.int32)
                block = offsets[found]
                dense[block[:, 0], block[:, 1], block[:, 2]] = (values.permute(0, 3, 2, 1, 4).numpy() * scale).astype(dtype)
            dense = dense.transpose(0, 3, 1, 4, 2, 5, 6).reshape(*(nb * R), channels)[inside]
            out[name] = dense[..., 0] if squeeze else dense
        if "tsdf" in out:
            out["tsdf"][out["weight"] == 0] = 1.0
        return out

    # ------------------------------------------------------------------ queries
    def voxel_indices(self, points_m: np.ndarray) -> np.ndarray:  # [N, 3] int64
        """Integer indices of the voxels holding world points [N, 3] (voxel i spans (i ± 0.5) x voxel size)."""
        return np.floor(np.asarray(points_m) * (1.0 / self.voxel_size_m) + 0.5).astype(np.int64)

    def lookup(self, voxel_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat storage indices of integer voxel indices [N, 3].

        Returns (flat [N] int64, found [N] bool); flat is meaningless where not found.
        """
        R = self.block_resolution
        idx = np.asarray(voxel_indices, dtype=np.int64).reshape(-1, 3)
        if len(idx) == 0 or self.num_blocks == 0:
            return np.zeros(len(idx), np.int64), np.zeros(len(idx), bool)
        block = idx >> int(np.log2(R)) if R & (R - 1) == 0 else np.floor_divide(idx, R)
        local = idx - block * R
        buf, found = self._grid.hashmap().find(o3c.Tensor(block.astype(np.int32)).to(self._o3d_device))
        buf = buf.cpu().numpy().astype(np.int64)
        flat = buf * R**3 + (local[:, 2] * R + local[:, 1]) * R + local[:, 0]
        return flat, found.cpu().numpy()

    def block_voxel_indices(self, block_coords: np.ndarray) -> np.ndarray:  # [B' * R^3, 3] int64
        """Integer indices of every voxel of the allocated blocks among block coordinates [B, 3]."""
        R = self.block_resolution
        blocks = np.asarray(block_coords, dtype=np.int64).reshape(-1, 3)
        if len(blocks) == 0 or self.num_blocks == 0:
            return np.zeros((0, 3), np.int64)
        _, found = self._grid.hashmap().find(o3c.Tensor(blocks.astype(np.int32)).to(self._o3d_device))
        blocks = blocks[found.cpu().numpy().astype(bool)]
        local = np.stack(np.meshgrid(np.arange(R), np.arange(R), np.arange(R), indexing="ij"), -1).reshape(-1, 3)
        return (blocks[:, None, :] * R + local[None]).reshape(-1, 3)

    def observed_sdf(self, voxel_indices: np.ndarray) -> np.ndarray:  # [N] float32 metres
        """Signed distance at integer voxel indices [N, 3]; NaN where the voxel was never observed."""
        flat, found = self.lookup(voxel_indices)
        out = np.full(len(flat), np.nan, np.float32)
        if found.any():
            f = torch.from_numpy(flat[found]).to(self._flat("tsdf").device)
            sdf = (self._flat("tsdf")[f, 0] * self.sdf_trunc_m).cpu().numpy()
            observed = self._flat("weight")[f, 0].to(torch.int32).cpu().numpy() > 0
            out[found] = np.where(observed, sdf, np.nan)
        return out

    def voxel_values(self, voxel_indices: np.ndarray, with_probs: bool = False) -> dict:
        """Per-voxel tsdf (metres), weight, colour, label, confidence, semantic count at integer indices [N, 3];
        with `with_probs`, also the class distribution ("class_probs" [N, C], zeros where never labelled).
        Labels, confidence and class_probs are read as `_label_probs` reads them (with the surface context).

        Unallocated voxels get weight 0 and label -1.
        """
        flat, found = self.lookup(voxel_indices)
        n = len(flat)
        out = {
            "sdf_m": np.full(n, np.nan, np.float32),
            "weight": np.zeros(n, np.float32),
            "colors": np.zeros((n, 3), np.uint8),
            "labels": np.full(n, -1, np.int32),
            "confidence": np.zeros(n, np.float32),
            "semantic_count": np.zeros(n, np.int32),
        }
        if with_probs:
            out["class_probs"] = np.zeros((n, self.num_classes), np.float32)
        if found.any():
            f = torch.from_numpy(flat[found]).to(self._flat("tsdf").device)
            out["sdf_m"][found] = (self._flat("tsdf")[f, 0] * self.sdf_trunc_m).cpu().numpy()
            out["weight"][found] = self._flat("weight")[f, 0].to(torch.int32).cpu().numpy()
            out["colors"][found] = self._flat("color")[f].to(torch.int32).clamp(0, 255).cpu().numpy()
            counts = self._flat("semantic_count")[f, 0].to(torch.int32)
            probs = self._label_probs(f)  # [F, C]
            conf, labels = probs.max(dim=1)
            if with_probs:
                out["class_probs"][found] = (probs * (counts > 0)[:, None]).cpu().numpy()
            labels = torch.where(counts > 0, labels, torch.full_like(labels, -1))
            out["labels"][found] = labels.cpu().numpy()
            out["confidence"][found] = torch.where(counts > 0, conf, torch.zeros_like(conf)).cpu().numpy()
            out["semantic_count"][found] = counts.cpu().numpy()
        return out

    def _label_probs(self, flat: torch.Tensor) -> torch.Tensor:  # [F, C] float32
        """Label distributions of flat voxels [F]: the stored distribution, or with `semantics.context_*`
        the distribution read with its surface neighbourhood (`semantics.context`)."""
        probs = class_probabilities(self._flat("semantic")[flat])
        if self.context is not None and len(flat):
            found, log_probs = self.context.log_probs(self, pack_indices(self._flat_to_indices(flat.cpu().numpy())))
            probs[torch.from_numpy(found).to(probs.device)] = torch.from_numpy(np.exp(log_probs)).to(probs.device)
        return probs

    def _flat_to_indices(self, flat: np.ndarray) -> np.ndarray:  # [F, 3] int64
        """Integer voxel indices of flat storage indices [F] (the inverse of `lookup`)."""
        R = self.block_resolution
        buf, local = np.divmod(np.asarray(flat, np.int64), R**3)
        block = self._grid.hashmap().key_tensor()[o3c.Tensor(buf).to(self._o3d_device)].cpu().numpy().astype(np.int64)  # [F, 3]
        return block * R + np.stack([local % R, (local // R) % R, local // R**2], axis=1)

    def semantic_voxels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every voxel with semantics: (integer indices [N, 3], stored log-probabilities [N, C] float32
        relative to the best class, total frame-vote weights [N] float32, 0 where none voted)."""
        if self.num_blocks == 0:
            return np.zeros((0, 3), np.int64), np.zeros((0, self.num_classes), np.float32), np.zeros(0, np.float32)
        R3 = self.block_resolution**3
        buf = from_dlpack(self._grid.hashmap().active_buf_indices().to(o3c.int64).to_dlpack()).cpu()  # [B]
        flat = (buf[:, None] * R3 + torch.arange(R3)).reshape(-1)  # [B * R^3]
        count = self._flat("semantic_count")
        flat = flat[(count[flat.to(count.device), 0] > 0).cpu()]
        log_probs = (self._flat("semantic")[flat.to(count.device)].float() / LOG_PROB_SCALE).cpu().numpy()
        vote_weight = self._flat("semantic_weight")[flat.to(count.device), 0].cpu().numpy()
        return self._flat_to_indices(flat.numpy()), log_probs, vote_weight

    def surface_points(self) -> tuple[np.ndarray, np.ndarray]:
        """Zero crossings of the TSDF where observed: (points [N, 3] float32 metres, normals [N, 3])."""
        if self.num_blocks == 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
        pcd = self._grid.extract_point_cloud(weight_threshold=self.config.surface_weight_threshold)
        if "positions" not in pcd.point or pcd.point.positions.shape[0] == 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
        return pcd.point.positions.cpu().numpy(), pcd.point.normals.cpu().numpy()

    def surface_voxel_indices(self) -> np.ndarray:
        """Integer indices [N, 3] of the voxels the observed surface passes through."""
        points, _ = self.surface_points()
        return np.unique(np.round(points / self.voxel_size_m).astype(np.int32), axis=0)

    def triangle_mesh(self) -> tuple[np.ndarray, np.ndarray]:
        """Marching-cubes mesh of the observed surface: (vertices [V, 3] float32 metres, triangles [T, 3] int32)."""
        if self.num_blocks == 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
        mesh = self._grid.extract_triangle_mesh(weight_threshold=self.config.surface_weight_threshold)
        if mesh.vertex.positions.shape[0] == 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
        return mesh.vertex.positions.cpu().numpy(), mesh.triangle.indices.cpu().numpy().astype(np.int32)

    def triangle_mesh_overlaid(
        self,
        voxel_indices: np.ndarray,  # [N, 3] int64 distinct integer voxel indices
        tsdf: np.ndarray,  # [N] float32 truncation-normalised signed distance
        colors: np.ndarray,  # [N, 3] uint8
    ) -> tuple[np.ndarray, np.ndarray]:
        """Marching-cubes mesh of the map's TSDF overlaid with other values (e.g. completion's predictions)
        where the map has not observed (weight 0), over the blocks holding the given voxels and their
        neighbours: (vertices [V, 3] float32 metres, triangles [T, 3] int32). Observed voxels keep their
        values and surface weight threshold; the given voxels count as surface-weight observations."""
        R = self.block_resolution
        idx = np.asarray(voxel_indices, dtype=np.int64).reshape(-1, 3)
        if len(idx) == 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
        neighbours = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
        blocks = np.unique((np.unique(np.floor_divide(idx, R), axis=0)[:, None] + neighbours).reshape(-1, 3), axis=0)
        names, dtypes, channels = zip(*_ATTRIBUTES[:3])  # tsdf, weight, color
        grid = o3d.t.geometry.VoxelBlockGrid(attr_names=names, attr_dtypes=dtypes, attr_channels=channels,
                                             voxel_size=self.voxel_size_m, block_resolution=R,
                                             block_count=len(blocks), device=self._o3d_device)
        buf, _ = grid.hashmap().activate(o3c.Tensor(blocks.astype(np.int32)).to(self._o3d_device))
        buf = from_dlpack(buf.to_dlpack()).long()
        attrs = {name: from_dlpack(grid.attribute(name).to_dlpack()) for name in names}  # [B, R, R, R, ch]
        flat = {name: t.view(torch.int16) if t.dtype == torch.uint16 else t for name, t in attrs.items()}
        flat["tsdf"][buf] = 1.0
        flat["weight"][buf] = 0
        flat["color"][buf] = 0
        if self.num_blocks:  # the map's blocks among them, copied whole
            map_buf, found = self._grid.hashmap().find(o3c.Tensor(blocks.astype(np.int32)).to(self._o3d_device))
            found_t = from_dlpack(found.to_dlpack()).bool()
            map_buf = from_dlpack(map_buf.to_dlpack()).long()[found_t]
            for name in names:
                source = self.attribute(name)
                source = source.view(torch.int16) if source.dtype == torch.uint16 else source
                flat[name][buf[found_t]] = source[map_buf]
        # the given voxels where unobserved (lookup's flat layout: block buffer * R^3 + (z * R + y) * R + x)
        block_of = np.floor_divide(idx, R)
        local = idx - block_of * R
        row = np.searchsorted(pack_indices(blocks), pack_indices(block_of))  # blocks are sorted like their keys
        voxel = buf.cpu()[torch.from_numpy(row)] * R**3 + torch.from_numpy((local[:, 2] * R + local[:, 1]) * R + local[:, 0])
        voxel = voxel.to(buf.device)
        weight = flat["weight"].reshape(-1)
        free = weight[voxel] == 0
        value = int(np.ceil(self.config.surface_weight_threshold)) + 1
        weight[voxel[free]] = value
        flat["tsdf"].reshape(-1)[voxel[free]] = torch.from_numpy(np.asarray(tsdf, np.float32)).to(buf.device)[free]
        flat["color"].reshape(-1, 3)[voxel[free]] = torch.from_numpy(np.asarray(colors, np.int16)).to(buf.device)[free]
        mesh = grid.extract_triangle_mesh(weight_threshold=self.config.surface_weight_threshold)
        if mesh.vertex.positions.shape[0] == 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
        return mesh.vertex.positions.cpu().numpy(), mesh.triangle.indices.cpu().numpy().astype(np.int32)

    def raycast(self, intrinsics: CameraIntrinsics, T_world_cam: np.ndarray, ignore_id: int = 255,
                with_labels: bool = True) -> RenderedView:
        """Render depth, colour, labels and confidence of the map seen from a camera (without
        `with_labels`, labels stay `ignore_id`: no label read-out)."""
        W, H = intrinsics.width_px, intrinsics.height_px
        empty = RenderedView(
            depth_m=np.zeros((H, W), np.float32),
            rgb=np.zeros((H, W, 3), np.uint8),
            labels=np.full((H, W), ignore_id, np.int32),
            confidence=np.zeros((H, W), np.float32),
        )
        if self.num_blocks == 0:
            return empty
        block_coords = self.active_block_coords()
        # Open3D keeps one range-map fragment buffer for all calls and returns an incomplete render
        # from a call that has to grow it (it logs "Could not generate full range map"), and a call
        # that grows it can crash the process. So the buffer is grown in one go, by a wide view from
        # the middle of the map, whenever the map has doubled since; then a depth-only first pass
        # sizes it for this view in the rare case it needs more.
        if self.num_blocks > 2 * self._raycast_sized_blocks:
            self._grow_raycast_buffer(block_coords, intrinsics)
        self._raycast_once(block_coords, intrinsics, T_world_cam, ["depth"])
        result = self._raycast_once(block_coords, intrinsics, T_world_cam, ["depth", "index", "interp_ratio"])
        depth = result["depth"].cpu().numpy()[..., 0]
        hit = depth > 0
        index = from_dlpack(result["index"].to_dlpack())[torch.from_numpy(hit)]  # [P, 8] int64
        ratio = from_dlpack(result["interp_ratio"].to_dlpack())[torch.from_numpy(hit)]  # [P, 8]
        ratio = ratio / ratio.sum(dim=1, keepdim=True).clamp_min(1e-6)
        v, u = np.nonzero(hit)
        rays_cam = np.stack([(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy, np.ones(len(u))], 1)
        rays_world = rays_cam @ T_world_cam[:3, :3].T  # [P, 3] world offset per metre of depth
        depth[hit] = self._refine_hit_depth(depth[hit], rays_world, index, T_world_cam[:3, 3])
        color = (self._flat("color")[index].float() * ratio[..., None]).sum(dim=1)  # [P, 3]
        empty.depth_m[hit] = depth[hit]
        empty.rgb[hit] = color.clamp(0, 255).round().to(torch.uint8).cpu().numpy()
        if not with_labels:
            return empty
        # Semantics of the voxel holding the refined surface point (the voxel fusion labels), else of
        # the nearest observed corner of Open3D's cell.
        points_world = rays_world * depth[hit][:, None] + T_world_cam[:3, 3]
        surface_flat, found = self.lookup(self.voxel_indices(points_world))
        count = self._flat("semantic_count")
        surface_flat = torch.from_numpy(np.where(found, surface_flat, 0)).to(count.device)
        surface_observed = torch.from_numpy(found).to(count.device) & (count[surface_flat, 0] > 0)
        corner_observed = count[index, 0] > 0  # [P, 8]
        nearest_corner = index.gather(1, (ratio + corner_observed).argmax(dim=1, keepdim=True))[:, 0]  # [P]
        nearest = torch.where(surface_observed, surface_flat, nearest_corner)
        observed = surface_observed | corner_observed.any(dim=1)
        conf, labels = self._label_probs(nearest).max(dim=1)
        labels = torch.where(observed, labels, torch.full_like(labels, ignore_id))
        empty.labels[hit] = labels.cpu().numpy()
        empty.confidence[hit] = torch.where(observed, conf, torch.zeros_like(conf)).cpu().numpy()
        return empty

    def _grow_raycast_buffer(self, block_coords, intrinsics: CameraIntrinsics) -> None:
        """A depth-only cast over six wide views from the centre of the map: more fragments than a
        camera view of the map needs, so later casts rarely grow Open3D's fragment buffer."""
        from semantic_mapping.geometry.pose import look_at

        centre = block_coords.cpu().numpy().mean(axis=0) * self.block_resolution * self.voxel_size_m
        wide = CameraIntrinsics(0.25 * intrinsics.width_px, 0.25 * intrinsics.width_px, intrinsics.cx, intrinsics.cy,
                                intrinsics.width_px, intrinsics.height_px)  # about 127 degrees across
        for direction in np.vstack([np.eye(3), -np.eye(3)]):
            self._raycast_once(block_coords, wide, look_at(centre, centre + direction + [1e-3, 2e-3, 0.0]), ["depth"])
        self._raycast_sized_blocks = self.num_blocks

    def _refine_hit_depth(
        self,
        hit_depth_m: np.ndarray,  # [P] Open3D's hit depth of each hit pixel
        rays_world: np.ndarray,  # [P, 3] world offset per metre of depth along each pixel's ray
        index: torch.Tensor,  # [P, 8] flat indices of the cell corners around each hit (x fastest)
        camera_origin_m: np.ndarray,  # [3] camera centre, world frame
        iterations: int = 3,
    ) -> np.ndarray:  # [P] refined depth, metres
        """Newton steps on the trilinear TSDF along each ray.

        Open3D's ray marcher locates the zero crossing from nearest-voxel values, which leaves up
        to half a voxel of bias; the cell corners it returns give the exact trilinear surface.
        """
        vs = self.voxel_size_m
        dirs = torch.from_numpy(rays_world.astype(np.float32))
        origin = torch.from_numpy(camera_origin_m.astype(np.float32))
        d = torch.from_numpy(hit_depth_m.astype(np.float32))
        corner_sdf = self._flat("tsdf")[index.to(self._flat("tsdf").device), 0].float().cpu() * self.sdf_trunc_m  # [P, 8]
        offsets = torch.tensor([[i & 1, (i >> 1) & 1, i >> 2] for i in range(8)], dtype=torch.float32)  # [8, 3]
        cell = torch.floor((origin + d[:, None] * dirs) / vs)  # [P, 3] the cell Open3D interpolated in
        for _ in range(iterations):
            f = ((origin + d[:, None] * dirs) / vs - cell).clamp(0.0, 1.0)  # [P, 3]
            w_axis = torch.where(offsets[None] > 0, f[:, None, :], 1.0 - f[:, None, :])  # [P, 8, 3]
            sdf = (w_axis.prod(dim=2) * corner_sdf).sum(dim=1)  # [P]
            sign = offsets * 2.0 - 1.0  # d w_axis / d f
            grad = torch.stack(
                [(sign[None, :, k] * w_axis[:, :, (k + 1) % 3] * w_axis[:, :, (k + 2) % 3] * corner_sdf).sum(dim=1) for k in range(3)],
                dim=1,
            ) / vs  # [P, 3] metres of sdf per metre
            slope = (grad * dirs).sum(dim=1)
            step = torch.where(slope.abs() > 1e-3, sdf / slope, torch.zeros_like(sdf)).clamp(-vs, vs)
            d = d - step
        return d.numpy()

    def _raycast_once(self, block_coords, intrinsics: CameraIntrinsics, T_world_cam: np.ndarray, attributes: list) -> dict:
        return self._grid.ray_cast(
            block_coords,
            o3c.Tensor(intrinsics.K, o3c.float64),
            o3c.Tensor(invert_pose(T_world_cam), o3c.float64),
            intrinsics.width_px, intrinsics.height_px,
            render_attributes=attributes,
            depth_scale=1.0,
            depth_min=self.config.depth_min_m,
            depth_max=self.config.depth_max_m * 2.0,
            weight_threshold=self.config.surface_weight_threshold,
            trunc_voxel_multiplier=self.config.sdf_trunc_voxels,
        )

    # ------------------------------------------------------------------ persistence
    def state_arrays(self) -> dict:
        """Plain arrays of every allocated block (for saving)."""
        hashmap = self._grid.hashmap()
        buf = hashmap.active_buf_indices().to(o3c.int64)
        arrays = {"block_coords": hashmap.key_tensor()[buf].cpu().numpy().astype(np.int32)}
        buf_t = from_dlpack(buf.to_dlpack())
        for name, _, _ in _ATTRIBUTES:
            arrays["attr_" + name] = self.attribute(name)[buf_t].cpu().numpy()
        return arrays

    def load_state_arrays(self, arrays: dict) -> None:
        """Replace the map's contents with saved block arrays."""
        coords = np.ascontiguousarray(arrays["block_coords"], dtype=np.int32)
        self._grid = self._new_grid(max(len(coords) * 2, self.config.initial_block_capacity))
        self._new_generation()
        if len(coords) == 0:
            return
        self._mark_blocks(coords)
        buf, ok = self._grid.hashmap().activate(o3c.Tensor(coords).to(self._o3d_device))
        if not bool(ok.cpu().numpy().all()):
            raise ValueError("map file holds duplicate block coordinates")
        buf_t = from_dlpack(buf.to_dlpack()).long()
        for name, _, _ in _ATTRIBUTES:
            target = self.attribute(name)
            if name == "semantic_weight" and "attr_" + name not in arrays:  # maps saved before frame votes
                target[buf_t] = 0.0
                continue
            values = torch.from_numpy(np.ascontiguousarray(arrays["attr_" + name]))
            if values.shape[1:] != target.shape[1:]:
                raise ValueError(f"map attribute {name!r} has shape {tuple(values.shape[1:])}, expected {tuple(target.shape[1:])}")
            if target.dtype == torch.uint16:  # torch cannot index_put uint16; same bits as int16
                target, values = target.view(torch.int16), values.view(torch.int16)
            target[buf_t] = values.to(target.device)

    def save(self, path: os.PathLike, extra_meta: Optional[dict] = None, extra_arrays: Optional[dict] = None) -> None:
        """Write the whole map (plus `extra_arrays`, names not starting with attr_) to one .npz file
        atomically (no pickled objects)."""
        meta = {
            "format": MAP_FORMAT,
            "version": MAP_FORMAT_VERSION,
            "voxel_size_m": self.voxel_size_m,
            "num_classes": self.num_classes,
            "fusion": config_to_dict(self.config),
            **(extra_meta or {}),
        }
        arrays = {**(extra_arrays or {}), **self.state_arrays()}
        arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        atomic_save_npz(path, arrays)

    @staticmethod
    def read_file(path: os.PathLike) -> tuple[dict, dict]:
        """(meta, arrays) of a saved map; raises ValueError on a foreign or newer file."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable map file ({exc})") from exc
        if "meta_json" not in arrays:
            raise ValueError(f"{path}: not a semantic_mapping map file (no metadata)")
        meta = json.loads(arrays.pop("meta_json").tobytes().decode("utf-8"))
        if meta.get("format") != MAP_FORMAT:
            raise ValueError(f"{path}: format {meta.get('format')!r} is not {MAP_FORMAT!r}")
        if int(meta.get("version", 0)) > MAP_FORMAT_VERSION:
            raise ValueError(f"{path}: map format version {meta['version']} is newer than this build reads ({MAP_FORMAT_VERSION})")
        return meta, arrays
