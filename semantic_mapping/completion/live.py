"""Scene completion inside the running map: a background worker and the predictions it keeps.

`Mapper.integrate` only tells `LiveCompletion.notify` which chunks the frame touched (a counter per
chunk, never blocking). A worker thread completes each chunk touched `completion.min_updates` times
since its last completion: it copies the chunk's input crop (with `context_voxels` of context) out
of the map holding the map lock that integration also holds (Open3D's hash map cannot be read while
it is written), runs the network without the lock, and stores the prediction in `PredictionStore`,
again under the lock and only if the map was not replaced meanwhile (reset, load).

Predictions are kept sparsely: only unobserved voxels the network puts near a surface (|tsdf| below
NEAR_SURFACE_TSDF), with their truncation-normalised tsdf, colour, label
and confidence, the softmax probability of that label. The observations are never changed; outputs
use a prediction only where the map has not observed the voxel (`fusion.outputs`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from semantic_mapping.completion.infer import complete_chunk
from semantic_mapping.completion.network import CompletionNetwork, CompletionWeightsError, load_completion_model
from semantic_mapping.config import CompletionConfig, resolve_device
from semantic_mapping.fusion.voxel_map import VoxelMap, pack_indices, unpack_indices
from semantic_mapping.types import PredictedVoxels

log = logging.getLogger(__name__)

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "completion.pt"
NEAR_SURFACE_TSDF = 0.5
"""Predicted voxels with |tsdf| below this (half the truncation distance: 2 voxels at the default) are kept,
where the input had not observed them: enough for the surface and its mesh, a few % of a chunk's voxels."""
WORKER_NICE = 10
"""Niceness added to the worker thread (Linux): integration gets the cores first."""
_STATE_PREFIX = "completion_"


@dataclass
class CompletionStats:
    """Completion counters since the last reset, and whether completion runs."""

    status: str = "off"  # 'off' (completion.enabled false), 'unavailable' (see reason), 'running', 'stopped'
    reason: str = ""  # why completion is not running
    chunks_completed: int = 0
    seconds_total: float = 0.0  # worker time over the completed chunks (read, network, store)
    last_chunk_ms: float = 0.0
    queue_length: int = 0  # chunks due and waiting for the worker
    errors: int = 0  # chunks whose completion failed (logged)

    @property
    def ms_per_chunk(self) -> float:
        return 1000.0 * self.seconds_total / self.chunks_completed if self.chunks_completed else 0.0


class PredictionStore:
    """Predicted voxels by chunk (thread-safe): packed voxel keys [M] with tsdf [M] (truncation-normalised),
    colours [M, 3] uint8, labels [M] int32 and confidence [M] float32, the probability of the label.
    `version` bumps on every change."""

    FIELDS = ("keys", "tsdf", "colors", "labels", "confidence")

    def __init__(self):
        self._lock = threading.Lock()
        self._chunks: dict = {}  # chunk index (x, y, z) -> {field: array}
        self._merged: Optional[PredictedVoxels] = None  # all chunks, built on demand
        self.version = 0

    def put(self, chunk: tuple, arrays: dict) -> None:
        """Replace chunk `chunk`'s predictions with `arrays` ({field: array} of FIELDS)."""
        with self._lock:
            self._chunks[tuple(chunk)] = {name: arrays[name] for name in self.FIELDS}
            self._changed()

    def clear(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._changed()

    def _changed(self) -> None:
        self._merged = None
        self.version += 1

    @property
    def num_voxels(self) -> int:
        with self._lock:
            return sum(len(c["keys"]) for c in self._chunks.values())

    @property
    def num_chunks(self) -> int:
        return len(self._chunks)

    def voxels(self, min_confidence: float = 0.0) -> PredictedVoxels:
        """Every predicted voxel whose confidence is at least `min_confidence`."""
        with self._lock:
            if self._merged is None:
                parts = list(self._chunks.values())
                self._merged = PredictedVoxels(
                    indices=unpack_indices(np.concatenate([c["keys"] for c in parts] or [np.zeros(0, np.int64)])),
                    tsdf=np.concatenate([c["tsdf"] for c in parts] or [np.zeros(0, np.float32)]),
                    colors=np.concatenate([c["colors"] for c in parts] or [np.zeros((0, 3), np.uint8)]),
                    labels=np.concatenate([c["labels"] for c in parts] or [np.zeros(0, np.int32)]),
                    confidence=np.concatenate([c["confidence"] for c in parts] or [np.zeros(0, np.float32)]),
                )
            merged = self._merged
        return merged if min_confidence <= 0 else merged.select(merged.confidence >= min_confidence)

    def state_arrays(self) -> dict:
        """Plain arrays of every prediction (for saving beside the map): completion_<field>."""
        merged = self.voxels()
        return {_STATE_PREFIX + "keys": pack_indices(merged.indices), _STATE_PREFIX + "tsdf": merged.tsdf,
                _STATE_PREFIX + "colors": merged.colors, _STATE_PREFIX + "labels": merged.labels,
                _STATE_PREFIX + "confidence": merged.confidence}

    def load_state_arrays(self, arrays: dict, chunk_shape_voxels: np.ndarray) -> None:
        """Replace the predictions with saved ones (none when `arrays` holds no completion_keys)."""
        chunks: dict = {}
        if _STATE_PREFIX + "keys" in arrays:
            saved = {name: np.asarray(arrays[_STATE_PREFIX + name]) for name in self.FIELDS}
            chunk_of = np.floor_divide(unpack_indices(saved["keys"]), chunk_shape_voxels)  # [M, 3]
            unique, inverse = np.unique(chunk_of, axis=0, return_inverse=True)
            for i, chunk in enumerate(unique.tolist()):
                rows = np.flatnonzero(inverse.reshape(-1) == i)
                chunks[tuple(chunk)] = {name: values[rows] for name, values in saved.items()}
        with self._lock:
            self._chunks = chunks
            self._changed()


def stored_voxels(prediction: dict) -> np.ndarray:  # [X, Y, Z] bool
    """The voxels of a chunk's prediction (`complete_chunk` arrays) that the map keeps: unobserved and
    near the predicted surface (|tsdf| below NEAR_SURFACE_TSDF)."""
    return (np.abs(prediction["tsdf"]) < NEAR_SURFACE_TSDF) & ~prediction["observed"]


def load_live_network(config: CompletionConfig, num_classes: int, voxel_size_m: float) -> CompletionNetwork:
    """The configured (or shipped) network on the configured device; CompletionWeightsError when the
    weights are missing or broken, or were trained for another voxel size than the map's."""
    path = config.weights or SHIPPED_WEIGHTS
    net = load_completion_model(path, num_classes, device=resolve_device(config.device))
    trained_m = net.meta.get("voxel_size_m")
    if trained_m is None or abs(float(trained_m) - voxel_size_m) > 1e-9:
        raise CompletionWeightsError(
            f"completion weights at {path} were trained for {trained_m if trained_m is not None else 'an unknown'} m "
            f"voxels, the map has {voxel_size_m:g} m voxels: set fusion.voxel_size_m to match or train weights for "
            "it; the map runs without completion meanwhile")
    return net


class LiveCompletion:
    """The completion worker of one map: counts chunk updates, completes due chunks in its own thread."""

    def __init__(self, net: CompletionNetwork, config: CompletionConfig, voxel_map: VoxelMap, store: PredictionStore,
                 map_lock: threading.RLock):
        self.net = net
        self.config = config
        self.stats = CompletionStats(status="running")
        self._map = voxel_map
        self._store = store
        self._map_lock = map_lock
        self._cond = threading.Condition()
        self._updates: Counter = Counter()  # chunk -> integrations touching it since its last completion started
        self._due: dict = {}  # chunks due, oldest first (an ordered set)
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="completion_worker", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ called by the mapper
    def notify(self, chunks: list) -> None:
        """Count one integration touching each chunk (x, y, z); cheap, never waits for the worker."""
        with self._cond:
            for chunk in chunks:
                self._updates[chunk] += 1
                if self._updates[chunk] >= self.config.min_updates:
                    self._due.setdefault(chunk)
            self.stats.queue_length = len(self._due)
            if self._due:
                self._cond.notify_all()

    def wait(self, timeout_s: Optional[float] = None) -> bool:
        """Wait until no chunk is due or being completed; False when `timeout_s` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._stopping or (not self._due and not self._busy), timeout_s)

    def reset(self) -> None:
        """Forget the counters and the due chunks (call with the map lock held, after the map was replaced:
        a chunk being completed now is then not stored)."""
        with self._cond:
            self._updates.clear()
            self._due.clear()
            self.stats.chunks_completed = self.stats.errors = self.stats.queue_length = 0
            self.stats.seconds_total = self.stats.last_chunk_ms = 0.0

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the worker (after the chunk it is completing, waiting `timeout_s` at most)."""
        with self._cond:
            self._stopping = True
            self.stats.status = "stopped"
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        torch.set_num_threads(max(1, int(self.config.threads)))  # this thread's intra-op threads
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICE)
        except (AttributeError, OSError):  # not Linux, or not permitted: same priority as integration
            pass
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._due)
                if self._stopping:
                    return
                chunk = next(iter(self._due))
                del self._due[chunk]
                self._updates[chunk] = 0
                self._busy = True
                self.stats.queue_length = len(self._due)
            try:
                self._complete(chunk)
            except Exception as exc:  # noqa: BLE001 - one chunk failing must not stop completion
                log.error("completion of chunk %s failed: %s: %s", chunk, type(exc).__name__, exc)
                with self._cond:
                    self.stats.errors += 1
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _complete(self, chunk: tuple) -> None:
        t0 = time.perf_counter()
        generation = []

        def read(origin_index: np.ndarray, shape: np.ndarray) -> dict:  # a copy, taken under the map lock
            with self._map_lock:
                generation.append(self._map.generation)
                return self._map.read_region(origin_index, shape)

        result = complete_chunk(self.net, self._map, chunk, self.config.context_voxels, read=read)
        near = stored_voxels(result)
        arrays = {"keys": pack_indices(np.argwhere(near) + result["origin_index"]), "tsdf": result["tsdf"][near],
                  "colors": result["color"][near], "labels": result["labels"][near],
                  "confidence": result["label_probability"][near]}
        with self._map_lock:
            stored = self._map.generation == generation[0]  # else the map was reset or loaded meanwhile
            if stored:
                self._store.put(chunk, arrays)
        seconds = time.perf_counter() - t0
        with self._cond:
            if stored:
                self.stats.chunks_completed += 1
                self.stats.seconds_total += seconds
                self.stats.last_chunk_ms = 1000.0 * seconds
