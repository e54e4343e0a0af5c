"""Spatial context of the class distributions: labels read with their surface neighbourhood.

Many of the 2D segmenter's errors are consistent across views (a patch of wall that every view calls
picture), so no per-voxel fusion of views can undo them; the surface around the voxel can. When labels
are read, each labelled voxel's distribution p(x) is averaged with those of its 26 neighbours on the same
surface (labelled voxels whose surface normals agree: dot product at least `context_min_normal_dot`,
so the average stops at edges such as a wall meeting the floor), and that average is taken again
`context_iterations` times (a diffusion over the surface, reaching about sqrt(iterations) voxels). The
voxel's label distribution is then p(x) * mean(x)^context_weight, renormalised. The stored
distributions never change: this is a read-out, recomputed for the whole map when it has changed
(at most every `context_max_age_s`).
"""

from __future__ import annotations

import time
from typing import NamedTuple, Optional

import numpy as np
from scipy.sparse import csr_matrix

from semantic_mapping.config import SemanticFusionConfig

_FORWARD_STEPS = np.array(
    [(x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1) if (x, y, z) > (0, 0, 0)], np.int64
)  # [13, 3]: each 26-neighbour pair once
_MIN_MEAN_PROB = 1e-6  # floor of the neighbourhood mean before its log


def surface_normals(sdf_m: np.ndarray, known: np.ndarray) -> np.ndarray:  # [N, 3] unit, zero where unknown
    """Unit TSDF gradients (towards free space) at N voxels from the signed distances [N, 7] and
    observed flags [N, 7] of the voxel and its ± x, ± y, ± z neighbours (in that order): central
    differences where both neighbours were observed, one-sided where only one was, so an unobserved
    side (behind a ceiling, say) does not turn the normal round."""
    normal = np.zeros((len(sdf_m), 3))
    for axis in range(3):
        plus, minus = 1 + 2 * axis, 2 + 2 * axis
        central = (sdf_m[:, plus] - sdf_m[:, minus]) / 2
        forward = sdf_m[:, plus] - sdf_m[:, 0]
        backward = sdf_m[:, 0] - sdf_m[:, minus]
        d = np.where(known[:, plus] & known[:, minus], central,
                     np.where(known[:, plus], forward, np.where(known[:, minus], backward, 0.0)))
        normal[:, axis] = np.where(known[:, 0], d, 0.0)
    return normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)


def surface_adjacency(keys_sorted: np.ndarray, indices: np.ndarray, normals: np.ndarray,
                      min_normal_dot: float) -> csr_matrix:
    """[N, N] symmetric 0/1 adjacency of N voxels (integer indices [N, 3] whose `pack_indices` keys,
    sorted, are `keys_sorted`): 26-neighbours whose normals [N, 3] have a dot product of at least
    `min_normal_dot`."""
    rows, cols = [], []
    for step in _FORWARD_STEPS:
        key = _pack(indices + step)
        pos = np.searchsorted(keys_sorted, key).clip(0, max(len(keys_sorted) - 1, 0))
        a = np.flatnonzero(keys_sorted[pos] == key) if len(keys_sorted) else np.zeros(0, np.int64)
        b = pos[a]
        agree = (normals[a] * normals[b]).sum(1) >= min_normal_dot
        rows.append(a[agree])
        cols.append(b[agree])
    r, c = np.concatenate(rows), np.concatenate(cols)
    n = len(indices)
    return csr_matrix((np.ones(2 * len(r), np.float32), (np.r_[r, c], np.r_[c, r])), shape=(n, n))


def context_log_probs(log_probs: np.ndarray, adjacency: csr_matrix, iterations: int, weight: float) -> np.ndarray:
    """log(p * mean^weight), renormalised [N, C], from log-probabilities [N, C] and the surface
    adjacency [N, N]: mean is p averaged over each voxel and its neighbours, `iterations` times."""
    p = np.exp(log_probs - log_probs.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    degree = np.asarray(adjacency.sum(axis=1), np.float32).ravel() + 1.0  # [N] neighbours and the voxel itself
    mean = p
    for _ in range(iterations):
        mean = (adjacency @ mean + mean) / degree[:, None]
    out = np.log(np.maximum(p, 1e-30)) + weight * np.log(np.maximum(mean, _MIN_MEAN_PROB))
    out -= out.max(axis=1, keepdims=True)
    return (out - np.log(np.exp(out).sum(axis=1, keepdims=True))).astype(np.float32)


class _Decoded(NamedTuple):
    generation: int
    version: int
    computed_at_s: float
    keys_sorted: np.ndarray  # [N] int64 packed voxel indices of the labelled voxels, sorted
    log_probs: np.ndarray  # [N, C] float32 their label distributions with context


class SpatialContext:
    """The map's label read-out with surface context, cached per map version."""

    def __init__(self, config: SemanticFusionConfig):
        if config.context_iterations < 0 or config.context_weight < 0 or config.context_max_age_s < 0:
            raise ValueError("semantics.context_iterations, context_weight and context_max_age_s must be >= 0, got "
                             f"{config.context_iterations}, {config.context_weight}, {config.context_max_age_s}")
        if not -1.0 <= config.context_min_normal_dot <= 1.0:
            raise ValueError(f"semantics.context_min_normal_dot must be in [-1, 1], got {config.context_min_normal_dot}")
        self.config = config
        self._decoded: Optional[_Decoded] = None
        self.seconds = 0.0  # spent recomputing, in total
        self.refreshes = 0
        self.voxels = 0  # labelled voxels of the last recompute

    @property
    def ms_per_refresh(self) -> float:
        return 1000 * self.seconds / max(self.refreshes, 1)

    def log_probs(self, vmap, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found [N] bool, log-probabilities [N, C] with context) of voxels by packed key [N]; voxels
        labelled after the cached read-out are not found (their own distribution stands)."""
        decoded = self._current(vmap)
        n = len(decoded.keys_sorted)
        pos = np.searchsorted(decoded.keys_sorted, keys).clip(0, max(n - 1, 0))
        found = decoded.keys_sorted[pos] == keys if n else np.zeros(len(keys), bool)
        return found, decoded.log_probs[pos[found]] if n else np.zeros((0, vmap.num_classes), np.float32)

    def _current(self, vmap) -> _Decoded:
        d, now = self._decoded, time.monotonic()
        if d is not None and d.generation == vmap.generation and (
                d.version == vmap.version or now - d.computed_at_s < self.config.context_max_age_s):
            return d
        start = time.perf_counter()
        indices, log_probs, normals = vmap.semantic_voxels()
        keys = _pack(indices)
        order = np.argsort(keys)
        indices, log_probs, normals, keys = indices[order], log_probs[order], normals[order], keys[order]
        adjacency = surface_adjacency(keys, indices, normals, self.config.context_min_normal_dot)
        out = context_log_probs(log_probs, adjacency, self.config.context_iterations, self.config.context_weight)
        self._decoded = _Decoded(vmap.generation, vmap.version, now, keys, out)
        self.seconds += time.perf_counter() - start
        self.refreshes += 1
        self.voxels = len(keys)
        return self._decoded


def _pack(indices: np.ndarray) -> np.ndarray:
    """`fusion.voxel_map.pack_indices` (imported here: the voxel map imports this module)."""
    from semantic_mapping.fusion.voxel_map import pack_indices

    return pack_indices(indices)
