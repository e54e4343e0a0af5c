"""The Mapper: validates frames, fuses them into the voxel map, and produces map outputs."""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from semantic_mapping.completion.live import CompletionStats, LiveCompletion, PredictionStore, load_live_network
from semantic_mapping.completion.network import CompletionWeightsError
from semantic_mapping.config import MapperConfig, config_to_dict
from semantic_mapping.fusion.outputs import build_labelled_voxels, build_mesh, build_traversability
from semantic_mapping.fusion.voxel_map import VoxelMap
from semantic_mapping.geometry import is_rigid_transform
from semantic_mapping.objects.slots import ObjectSlots
from semantic_mapping.semantics.bayesian import PixelSemantics
from semantic_mapping.semantics.label_space import LabelSpace, default_label_space
from semantic_mapping.splatting.gaussians import GaussianScene
from semantic_mapping.splatting.render import SplatRender
from semantic_mapping.types import (
    CameraIntrinsics,
    Frame,
    LabelledVoxels,
    MapObject,
    PredictedVoxels,
    RenderedView,
    SemanticMesh,
    TraversabilityGrid,
)

log = logging.getLogger(__name__)

SEMANTIC_METHODS = ("bayesian", "voting")


class FrameRejected(ValueError):
    """A frame that cannot be integrated; `reason` is a short counter key, the message says what to fix."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class MapperStats:
    """Counters since the last reset."""

    frames_integrated: int = 0
    frames_rejected: collections.Counter = field(default_factory=collections.Counter)
    pixels_cleaned: collections.Counter = field(default_factory=collections.Counter)
    integrate_seconds_total: float = 0.0
    last_stamp_ns: Optional[int] = None
    completion: CompletionStats = field(default_factory=CompletionStats)  # the worker's, live

    @property
    def frames_rejected_total(self) -> int:
        return int(sum(self.frames_rejected.values()))


@dataclass
class IntegrationResult:
    """Outcome of `Mapper.integrate`."""

    accepted: bool
    reason: str = ""
    message: str = ""
    seconds: float = 0.0


def validate_frame(frame: Frame, num_classes: int, ignore_id: int, config: MapperConfig,
                   last_stamp_ns: Optional[int]) -> tuple[Frame, dict]:
    """Check a frame and clean what can be cleaned.

    Returns (frame with cleaned depth/labels, {counter key: pixels cleaned}); raises FrameRejected
    for what cannot be used: wrong dtypes or sizes, bad poses, stamps going backwards.
    """
    cleaned: dict = {}
    depth = frame.depth_m
    if not isinstance(depth, np.ndarray) or depth.ndim != 2:
        raise FrameRejected("depth_shape", f"depth must be a 2-D array [H, W], got {getattr(depth, 'shape', type(depth))}")
    if depth.dtype not in (np.float32, np.float64):
        raise FrameRejected(
            "depth_dtype",
            f"depth must be float metres, got {depth.dtype}; divide 16UC1 millimetre depth by 1000 first",
        )
    H, W = depth.shape
    rgb = frame.rgb
    if not isinstance(rgb, np.ndarray) or rgb.shape != (H, W, 3):
        raise FrameRejected("rgb_shape", f"rgb must be [H, W, 3] = {(H, W, 3)} like depth, got {getattr(rgb, 'shape', None)}")
    if rgb.dtype != np.uint8:
        raise FrameRejected("rgb_dtype", f"rgb must be uint8, got {rgb.dtype}")
    intr = frame.intrinsics
    if (intr.width_px, intr.height_px) != (W, H):
        raise FrameRejected("intrinsics_size", f"intrinsics are for {intr.width_px}x{intr.height_px}, image is {W}x{H}")
    if not (np.isfinite([intr.fx, intr.fy, intr.cx, intr.cy]).all() and intr.fx > 0 and intr.fy > 0):
        raise FrameRejected("intrinsics_invalid", f"intrinsics must be finite with positive focal lengths: {intr}")
    if not is_rigid_transform(np.asarray(frame.T_world_cam, dtype=np.float64), config.inputs.rigidity_tolerance):
        raise FrameRejected("pose_invalid", "T_world_cam must be a finite 4x4 rigid transform (orthonormal rotation)")
    if last_stamp_ns is not None and frame.stamp_ns < last_stamp_ns and not config.inputs.allow_stamp_rewind:
        raise FrameRejected(
            "stamp_backwards",
            f"stamp {frame.stamp_ns} ns is older than the last integrated {last_stamp_ns} ns "
            "(reset the map to replay, or set inputs.allow_stamp_rewind)",
        )

    # NaN fails every comparison; +inf and "no return" codes such as 65535 are far out of range;
    # returns nearer than fusion.depth_min_m are dropped (0 already means "no return").
    usable = (depth == 0) | ((depth >= config.fusion.depth_min_m) & (depth <= config.fusion.depth_max_m * 4.0))
    unusable = depth.size - int(np.count_nonzero(usable))
    if unusable:
        cleaned["depth_non_finite_or_out_of_range"] = unusable
    depth = np.where(usable, depth, 0.0).astype(np.float32, copy=False)
    if np.count_nonzero(depth) < config.inputs.min_valid_depth_fraction * depth.size:
        raise FrameRejected("depth_empty", f"only {np.count_nonzero(depth)} of {depth.size} depth pixels are valid")

    out = Frame(
        rgb=rgb, depth_m=depth, intrinsics=intr, T_world_cam=np.asarray(frame.T_world_cam, dtype=np.float64),
        stamp_ns=int(frame.stamp_ns), instance_masks=frame.instance_masks, ground_truth=frame.ground_truth,
    )
    if frame.class_probs is not None:
        probs = frame.class_probs
        if probs.shape != (H, W, num_classes):
            raise FrameRejected("probs_shape", f"class_probs must be [H, W, C] = {(H, W, num_classes)}, got {probs.shape}")
        out.class_probs = probs  # values are checked where the map samples them (PixelSemantics)
    elif frame.labels is not None:
        labels = frame.labels
        if labels.shape != (H, W):
            raise FrameRejected("labels_shape", f"labels must be [H, W] = {(H, W)}, got {labels.shape}")
        labels = labels.astype(np.int32, copy=True)
        outside = ((labels < 0) | (labels >= num_classes)) & (labels != ignore_id)
        if outside.any():
            cleaned["labels_outside_label_space"] = int(outside.sum())
            labels[outside] = ignore_id
        out.labels = labels
        if frame.label_confidence is not None:
            conf = frame.label_confidence
            if conf.shape != (H, W):
                raise FrameRejected("confidence_shape", f"label_confidence must be [H, W] = {(H, W)}, got {conf.shape}")
            conf = np.nan_to_num(conf.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0).clip(0.0, 1.0)
            out.label_confidence = conf
    return out, cleaned


class Mapper:
    """Owns the voxel map and the per-stage state; turns frames into a semantic 3D map."""

    def __init__(self, config: Optional[MapperConfig] = None, label_space: Optional[LabelSpace] = None, segmenter=None,
                 objects_in_background: bool = False):
        """`objects_in_background`: `integrate` only queues object views; the caller runs `update_objects`
        (the node does, in its own thread). Otherwise every integrate brings the object slots up to date."""
        self.config = config or MapperConfig()
        self.label_space = label_space or default_label_space()
        self.segmenter = segmenter
        self.map = VoxelMap(self.config.fusion, self.label_space.num_classes, self.config.semantics)
        # held while the map is written (integrate, reset, load) and while the completion worker copies
        # a crop out of it or stores a prediction
        self.map_lock = threading.RLock()
        self.predictions = PredictionStore()
        self.completion, completion_stats = self._make_completion()
        self.stats = MapperStats(completion=completion_stats)
        self.voting = self._make_voting()
        self._gaussians: Optional[GaussianScene] = None  # built on first use; follows the map's changed blocks
        self.object_slots = ObjectSlots(self.config.objects, self.label_space, self.map.device) if self.config.objects.enabled else None
        self.objects_in_background = objects_in_background
        log.info(
            "mapper: device %s, voxel %.3f m, semantics %s, segmenter %s",
            self.map.device, self.map.voxel_size_m, self.semantics_method,
            type(segmenter).__name__ if segmenter else "none (frames bring their own)",
        )

    def _make_voting(self):
        """The soft voting of semantics.method 'voting', or None ('bayesian', or weights unusable: fallback)."""
        method = self.config.semantics.method
        if method not in SEMANTIC_METHODS:
            raise ValueError(f"semantics.method must be one of {SEMANTIC_METHODS}, got {method!r}")
        if method != "voting":
            return None
        from semantic_mapping.semantics.voting import CheckpointError
        from semantic_mapping.semantics.voting_fusion import SoftVoting

        try:
            voting, meta = SoftVoting.from_config(self.config.voting, self.config.semantics, self.label_space.num_classes)
        except CheckpointError as exc:
            log.error("semantics: %s; falling back to Bayesian fusion (semantics.method 'bayesian')", exc)
            return None
        cfg = self.config.voting
        prior = f"geometry prior weight {cfg.prior_weight}" if voting.semantic_prior else "no geometry prior"
        if not meta.get("learned", True):
            log.info("semantics: soft voting with equal view weights (voting.learned false), no weights read, %s", prior)
            return voting
        log.info("semantics: soft voting with %s view weights, %s; weights %s (%s votes, trained on seeds %s, "
                 "validation rendered accuracy %.3f vs %.3f uniform)", "learned" if cfg.learned else "equal", prior,
                 cfg.weights or "shipped", meta.get("vote_space", "?"), meta.get("train_seeds", "?"),
                 meta.get("val_learned", {}).get("pixel_accuracy", float("nan")),
                 meta.get("val_uniform", {}).get("pixel_accuracy", float("nan")))
        if voting.frame_net is not None:
            frame = meta["frame_votes"]
            log.info("semantics: frames vote into weighted means of their %s, weights %s (trained on seeds %s, "
                     "validation accuracy %.3f vs %.3f equal weights)", voting.frame_vote_space,
                     cfg.frame_vote_weights or "shipped", frame.get("train_seeds", "?"),
                     frame.get("val_learned", {}).get("accuracy", float("nan")),
                     frame.get("val_uniform", {}).get("accuracy", float("nan")))
        return voting

    def _make_completion(self) -> tuple[Optional[LiveCompletion], CompletionStats]:
        """The completion worker (or None: disabled, or weights unusable, logged once) and its stats."""
        cfg = self.config.completion
        if not cfg.enabled:
            return None, CompletionStats(status="off", reason="completion.enabled is false")
        try:
            net = load_live_network(cfg, self.label_space.num_classes, self.map.voxel_size_m)
        except CompletionWeightsError as exc:
            log.error("completion: %s", exc)
            return None, CompletionStats(status="unavailable", reason=str(exc))
        completion = LiveCompletion(net, cfg, self.map, self.predictions, self.map_lock)
        weakref.finalize(self, completion.close)  # the worker stops with its mapper, or at exit
        log.info("completion: chunks of %s voxels after %d updates, weights %s (%s), %d thread(s)",
                 tuple(int(n) for n in self.map.chunk_shape_voxels), cfg.min_updates, cfg.weights or "shipped",
                 ", ".join(f"{k} {v}" for k, v in net.meta.items() if k in ("voxel_size_m", "train_seeds", "steps")),
                 cfg.threads)
        return completion, completion.stats

    @property
    def semantics_method(self) -> str:
        """The semantic fusion in use: 'voting' only when its weights loaded."""
        return "voting" if self.voting is not None else "bayesian"

    @property
    def voxel_size_m(self) -> float:
        return self.map.voxel_size_m

    def integrate(self, frame: Frame) -> IntegrationResult:
        """Validate and fuse one frame. Bad frames are refused and counted; the map is never touched by them."""
        start = time.perf_counter()
        try:
            clean, cleaned = validate_frame(
                frame, self.label_space.num_classes, self.label_space.ignore_id, self.config, self.stats.last_stamp_ns
            )
            if not clean.has_semantics and self.segmenter is not None:
                clean.class_probs = self.segmenter.predict(clean)
                clean, _ = validate_frame(
                    clean, self.label_space.num_classes, self.label_space.ignore_id, self.config, self.stats.last_stamp_ns
                )
        except FrameRejected as exc:
            return self._reject(frame, exc)
        semantics = None
        if clean.has_semantics:
            pixels = self.map.sample_pixels(clean.depth_m.shape, clean.intrinsics)
            try:
                semantics = PixelSemantics(clean, pixels, self.label_space.num_classes, self.config.semantics)
                if self.voting is not None and self.voting.config.frame_votes:
                    semantics.weights = self.voting.frame_vote_weights(clean, semantics)
                    semantics.vote_space = self.voting.frame_vote_space
            except ValueError as exc:
                return self._reject(frame, FrameRejected("semantics_invalid", str(exc)))
        self.stats.pixels_cleaned.update(cleaned)
        with self.map_lock:
            prior = None if self.voting is None else self.voting.semantic_prior
            fused = self.map.integrate(clean.depth_m, clean.rgb, clean.intrinsics, clean.T_world_cam, semantics, prior)
            if semantics is not None and semantics.weights is not None:
                self.voting.stats.frame_vote_voxels += fused.voxels_semantic_updated
            if self.voting is not None:
                if semantics is not None:
                    self.voting.observe(self.map, clean)
                self.voting.update(self.map)
        if self.completion is not None:
            self.completion.notify(fused.chunks_touched)
        if self.object_slots is not None:
            self.object_slots.offer(clean)
            if not self.objects_in_background:
                self.update_objects()
        seconds = time.perf_counter() - start
        self.stats.frames_integrated += 1
        self.stats.integrate_seconds_total += seconds
        self.stats.last_stamp_ns = clean.stamp_ns
        return IntegrationResult(True, seconds=seconds)

    def _reject(self, frame: Frame, exc: FrameRejected) -> IntegrationResult:
        self.stats.frames_rejected[exc.reason] += 1
        log.warning("frame at %s ns rejected (%s): %s", getattr(frame, "stamp_ns", "?"), exc.reason, exc)
        return IntegrationResult(False, exc.reason, str(exc))

    # ------------------------------------------------------------------ completion
    def wait_for_completion(self, timeout_s: Optional[float] = None) -> bool:
        """Wait until the completion worker has completed every chunk due (benchmarks, tests); True when
        it has (or completion is off), False when `timeout_s` passed first."""
        return True if self.completion is None else self.completion.wait(timeout_s)

    def close(self) -> None:
        """Stop the completion worker (the map stays usable; no more completions)."""
        if self.completion is not None:
            self.completion.close()

    def predicted_voxels(self, include_predicted: Optional[bool] = None) -> Optional[PredictedVoxels]:
        """Predictions the outputs use: None when excluded (`include_predicted`, default
        completion.include_predicted) or there are none; else those of at least completion.min_confidence."""
        include = self.config.completion.include_predicted if include_predicted is None else include_predicted
        if not include or self.predictions.num_chunks == 0:
            return None
        return self.predictions.voxels(self.config.completion.min_confidence)

    # ------------------------------------------------------------------ outputs
    def labelled_voxels(self, include_predicted: Optional[bool] = None) -> LabelledVoxels:
        """Surface voxels with labels, and the object id of the last `extract_objects`; predicted surface
        voxels (flagged) where unobserved unless `include_predicted` is False (default: the config's)."""
        voxels = build_labelled_voxels(self.map, self.label_space, self.predicted_voxels(include_predicted))
        if self.object_slots is not None and self.object_slots.objects:
            indices = self.map.voxel_indices(voxels.positions_m)
            voxels.object_ids = self.object_slots.object_ids(indices).astype(np.int32)
        return voxels

    def mesh(self, include_predicted: Optional[bool] = None) -> SemanticMesh:
        """Semantic mesh; predicted surface (vertices flagged) where unobserved unless `include_predicted` is False."""
        return build_mesh(self.map, self.label_space, self.predicted_voxels(include_predicted))

    def traversability(self, include_predicted: Optional[bool] = None) -> TraversabilityGrid:
        """Traversability grid; predicted surfaces count (cells flagged) unless `include_predicted` is False."""
        return build_traversability(self.labelled_voxels(include_predicted), self.label_space, self.config.outputs,
                                    self.voxel_size_m)

    def render(self, intrinsics: CameraIntrinsics, T_world_cam: np.ndarray) -> RenderedView:
        """Raycast render of the TSDF surface (nearest voxel's label)."""
        return self.map.raycast(intrinsics, T_world_cam, self.label_space.ignore_id)

    def gaussians(self) -> GaussianScene:
        """The map as Gaussians (RT-GS2), brought up to date with the blocks changed since the last call."""
        if self._gaussians is None:
            self._gaussians = GaussianScene(self.label_space.num_classes, self.voxel_size_m, self.config.splatting,
                                            device=self.map.device)
        self._gaussians.update(self.map)
        return self._gaussians

    def render_splats(self, intrinsics: CameraIntrinsics, T_world_cam: np.ndarray) -> SplatRender:
        """Gaussian-splat render: rgb, class probabilities, labels, depth and opacity in one pass."""
        return self.gaussians().render(intrinsics, T_world_cam, ignore_id=self.label_space.ignore_id)

    def update_objects(self, max_steps: Optional[int] = None) -> int:
        """Turn queued frames into object views and run the optimisation steps they ask for (at most
        `max_steps`); returns the steps run. No-op when objects are disabled."""
        if self.object_slots is None:
            return 0
        self.object_slots.prepare(self.map)
        return self.object_slots.optimise(max_steps)

    def extract_objects(self) -> list[MapObject]:
        """Objects of the map now (DiscoNeRF slots split into connected parts, stable ids); [] when disabled."""
        if self.object_slots is None:
            return []
        return self.object_slots.extract(self.map)

    def render_objects(self, intrinsics: CameraIntrinsics, T_world_cam: np.ndarray) -> np.ndarray:
        """Object id image [H, W] int32 (0 = none) at a camera, from the last `extract_objects`."""
        if self.object_slots is None:
            return np.zeros((intrinsics.height_px, intrinsics.width_px), np.int32)
        return self.object_slots.render_ids(self.map, intrinsics, T_world_cam)

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Empty the map, its predictions and the counters."""
        with self.map_lock:
            self.map.reset()
            self.predictions.clear()
            if self.completion is not None:
                self.completion.reset()
        self.stats = MapperStats(completion=self.stats.completion)
        if self.voting is not None:
            self.voting.reset()
        if self.object_slots is not None:
            self.object_slots.reset()

    def save(self, path: os.PathLike) -> None:
        """Write the map to one file atomically, with its predictions and the objects extracted now."""
        meta = {
            "label_names": list(self.label_space.names),
            "semantics": config_to_dict(self.config.semantics),
            "last_stamp_ns": self.stats.last_stamp_ns,
        }
        arrays = self.predictions.state_arrays()
        if self.object_slots is not None:
            self.extract_objects()
            meta["objects"], object_arrays = self.object_slots.state()
            arrays.update(object_arrays)
        self.map.save(path, extra_meta=meta, extra_arrays=arrays)

    @classmethod
    def from_file(cls, path: os.PathLike, config: Optional[MapperConfig] = None) -> "Mapper":
        """A mapper holding a saved map, with the voxel size the map was saved with."""
        meta, arrays = VoxelMap.read_file(path)
        config = config or MapperConfig()
        config = replace(config, fusion=replace(config.fusion, voxel_size_m=float(meta["voxel_size_m"])))
        mapper = cls(config)
        mapper._load(path, meta, arrays)
        return mapper

    def load(self, path: os.PathLike) -> None:
        """Replace the map with a saved one; refuses files of another voxel size or label space."""
        self._load(path, *VoxelMap.read_file(path))

    def _load(self, path: os.PathLike, meta: dict, arrays: dict) -> None:
        if list(meta.get("label_names", [])) != list(self.label_space.names):
            raise ValueError(f"{path}: saved with label space {meta.get('label_names')}, this mapper uses {list(self.label_space.names)}")
        if abs(float(meta["voxel_size_m"]) - self.voxel_size_m) > 1e-9:
            raise ValueError(f"{path}: voxel size {meta['voxel_size_m']} m differs from this mapper's {self.voxel_size_m} m")
        with self.map_lock:
            self.map.load_state_arrays(arrays)
            self.predictions.load_state_arrays(arrays, self.map.chunk_shape_voxels)
            if self.completion is not None:
                self.completion.reset()
        self.stats = MapperStats(last_stamp_ns=meta.get("last_stamp_ns"), completion=self.stats.completion)
        if self.voting is not None:
            self.voting.reset()  # keyframes and queued voxels belonged to the map replaced
        if self.object_slots is not None:
            if "objects" in meta and "objects_keys" in arrays:
                self.object_slots.load_state(meta["objects"], arrays)
            else:
                self.object_slots.reset()
