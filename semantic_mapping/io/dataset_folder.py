"""Our dataset folder: posed RGB-D frames with 2D semantics and ground truth, as PNGs and text.

Layout (see docs/dataset_format.md), frame i stored as `<stream>/<i:06d>.<ext>`:

    dataset.json          format name/version, camera, depth scale, streams present, meta
    poses.txt             one line per frame: stamp_ns tx ty tz qx qy qz qw  (T_world_cam)
    rgb/                  PNG 8-bit RGB
    depth/                PNG uint16 millimetres, 0 = invalid
    labels/               PNG uint8 (uint16 when an id exceeds 255) class ids, 255 = unknown
    confidence/           PNG uint16, confidence = value / 65535 (uint8 files: value / 255)
    probabilities/        NPZ (compressed), key 'probabilities': [H, W, C] float16
    instances/            PNG uint16 instance ids, 0 = none
    gt_labels/            PNG ground-truth class ids (as labels/)
    gt_instances/         PNG uint16 ground-truth instance ids, 0 = none
    gt_depth/             PNG uint16 millimetres, noiseless ground-truth depth
    ground_truth/         3D ground truth put there by the caller (meshes, voxel grids, ...)

World frame z-up, camera frame OpenCV (x right, y down, z forward).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np

from semantic_mapping.geometry.pose import T_from_quat_xyzw, is_rigid_transform, quat_xyzw_from_T
from semantic_mapping.io.frame_source import IndexedFrameSource
from semantic_mapping.io.image_files import (
    MM_PER_M,
    UINT16_MAX,
    depth_m_to_mm_uint16,
    depth_units_to_m,
    read_rgb,
    read_unchanged,
    write_rgb,
    write_unchanged,
)
from semantic_mapping.atomic_files import atomic_write_text
from semantic_mapping.types import CameraIntrinsics, Frame, FrameGroundTruth

log = logging.getLogger(__name__)

FORMAT_NAME = "semantic_mapping_dataset"
FORMAT_VERSION = 1
METADATA_FILE = "dataset.json"
POSES_FILE = "poses.txt"
GROUND_TRUTH_DIR = "ground_truth"
POSE_CONVENTION = "T_world_cam; world z-up; camera OpenCV (x right, y down, z forward)"
UNKNOWN_LABEL = 255

# stream name -> file suffix
STREAMS = {
    "rgb": ".png",
    "depth": ".png",
    "labels": ".png",
    "confidence": ".png",
    "probabilities": ".npz",
    "instances": ".png",
    "gt_labels": ".png",
    "gt_instances": ".png",
    "gt_depth": ".png",
}


def _frame_file(root: Path, stream: str, index: int) -> Path:
    return root / stream / f"{index:06d}{STREAMS[stream]}"


def _ids_to_png_array(ids: np.ndarray, what: str) -> np.ndarray:
    """[H, W] non-negative ids as uint8 when they fit, else uint16."""
    ids = np.asarray(ids)
    if ids.size and ids.min() < 0:
        raise ValueError(f"{what} must be >= 0 (use {UNKNOWN_LABEL} for unknown labels), got {ids.min()}")
    max_id = int(ids.max()) if ids.size else 0
    if max_id > UINT16_MAX:
        raise ValueError(f"{what} up to {max_id} do not fit a 16-bit PNG (max {UINT16_MAX})")
    return ids.astype(np.uint8 if max_id <= 255 else np.uint16)


def _confidence_to_png_array(confidence: np.ndarray) -> np.ndarray:
    """[H, W] float confidence in [0, 1] -> uint16 scaled by 65535."""
    return np.rint(np.clip(np.nan_to_num(confidence, nan=0.0), 0.0, 1.0) * UINT16_MAX).astype(np.uint16)


def _confidence_from_png_array(stored: np.ndarray) -> np.ndarray:
    """[H, W] float32 confidence from a uint8 or uint16 PNG array (value / dtype max)."""
    return stored.astype(np.float32) / np.float32(np.iinfo(stored.dtype).max)


class DatasetWriter:
    """Writes Frames into a new dataset folder; `close()` (or leaving a with-block) finalises it.

    Every frame must use the writer's camera. Optional fields of a frame (labels, confidence,
    probabilities, instance masks, ground truth) are written when present.
    """

    def __init__(self, out_dir: os.PathLike, intrinsics: CameraIntrinsics, meta: Optional[dict] = None):
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and any(self.out_dir.iterdir()):
            raise FileExistsError(f"{self.out_dir} exists and is not empty; write a dataset into a new or empty folder")
        self.intrinsics = intrinsics
        self.meta = dict(meta or {})
        try:
            json.dumps(self.meta)
        except TypeError as exc:
            raise TypeError(f"meta must be JSON-serialisable (str/number/bool/list/dict): {exc}") from None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._pose_lines: list[str] = []
        self._stream_counts: dict[str, int] = {}
        self._num_classes: Optional[int] = None
        self._depth_pixels_too_far = 0
        self._closed = False

    @property
    def ground_truth_dir(self) -> Path:
        """Folder for 3D ground truth files (created on first access)."""
        path = self.out_dir / GROUND_TRUTH_DIR
        path.mkdir(exist_ok=True)
        return path

    def __len__(self) -> int:
        return len(self._pose_lines)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def write(self, frame: Frame) -> None:
        """Write one frame's images and queue its pose line (poses.txt is written by close())."""
        if self._closed:
            raise RuntimeError(f"DatasetWriter for {self.out_dir} is closed")
        self._check_frame(frame)
        index = len(self._pose_lines)
        self._write_stream("rgb", index, frame.rgb)
        depth_mm, too_far = depth_m_to_mm_uint16(frame.depth_m)
        self._depth_pixels_too_far += too_far
        self._write_stream("depth", index, depth_mm)
        if frame.labels is not None:
            self._write_stream("labels", index, _ids_to_png_array(frame.labels, "labels"))
        if frame.label_confidence is not None:
            self._write_stream("confidence", index, _confidence_to_png_array(frame.label_confidence))
        if frame.class_probs is not None:
            self._write_stream("probabilities", index, frame.class_probs)
        if frame.instance_masks is not None:
            ids = _ids_to_png_array(frame.instance_masks, "instance ids").astype(np.uint16)
            self._write_stream("instances", index, ids)
        gt = frame.ground_truth
        if gt is not None:
            self._write_stream("gt_labels", index, _ids_to_png_array(gt.labels, "ground-truth labels"))
            if gt.instances is not None:
                ids = _ids_to_png_array(gt.instances, "ground-truth instance ids").astype(np.uint16)
                self._write_stream("gt_instances", index, ids)
            if gt.depth_m is not None:
                gt_depth_mm, too_far = depth_m_to_mm_uint16(gt.depth_m)
                self._depth_pixels_too_far += too_far
                self._write_stream("gt_depth", index, gt_depth_mm)
        translation_m, quat_xyzw = quat_xyzw_from_T(frame.T_world_cam)
        values = " ".join(repr(float(v)) for v in (*translation_m, *quat_xyzw))
        self._pose_lines.append(f"{int(frame.stamp_ns)} {values}\n")

    def close(self) -> None:
        """Write poses.txt and dataset.json atomically; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        if self._depth_pixels_too_far:
            log.warning(
                "%s: %d depth pixels beyond 65.535 m were stored as 0 (invalid)",
                self.out_dir,
                self._depth_pixels_too_far,
            )
        # dataset.json goes last: its presence marks a complete dataset
        atomic_write_text(self.out_dir / POSES_FILE, "".join(self._pose_lines))
        K = self.intrinsics
        metadata = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "num_frames": len(self._pose_lines),
            "camera": {
                "width_px": K.width_px,
                "height_px": K.height_px,
                "fx": K.fx,
                "fy": K.fy,
                "cx": K.cx,
                "cy": K.cy,
            },
            "depth_scale": MM_PER_M,
            "label_unknown_id": UNKNOWN_LABEL,
            "num_classes": self._num_classes,
            "poses": {"file": POSES_FILE, "convention": POSE_CONVENTION},
            "streams": dict(sorted(self._stream_counts.items())),
            "meta": self.meta,
        }
        atomic_write_text(self.out_dir / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")

    def _check_frame(self, frame: Frame) -> None:
        if frame.intrinsics != self.intrinsics:
            raise ValueError(
                f"frame intrinsics {frame.intrinsics} differ from the dataset's {self.intrinsics}; "
                "a dataset folder holds one camera"
            )
        size = (self.intrinsics.height_px, self.intrinsics.width_px)
        if frame.rgb.shape != (*size, 3) or frame.rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8 {(*size, 3)}, got {frame.rgb.dtype} {frame.rgb.shape}")
        for name in ("depth_m", "labels", "label_confidence", "instance_masks"):
            array = getattr(frame, name)
            if array is not None and array.shape != size:
                raise ValueError(f"{name} must be {size} like the camera, got {array.shape}")
        if frame.class_probs is not None:
            if frame.class_probs.shape[:2] != size or frame.class_probs.ndim != 3:
                raise ValueError(f"class_probs must be [{size[0]}, {size[1]}, C], got {frame.class_probs.shape}")
            if self._num_classes not in (None, frame.class_probs.shape[2]):
                raise ValueError(
                    f"class_probs have {frame.class_probs.shape[2]} classes, earlier frames {self._num_classes}"
                )
            self._num_classes = frame.class_probs.shape[2]
        if not is_rigid_transform(frame.T_world_cam):
            raise ValueError(f"T_world_cam of the frame at stamp {frame.stamp_ns} ns is not a rigid transform")
        if frame.stamp_ns < 0:
            raise ValueError(f"stamp_ns must be >= 0, got {frame.stamp_ns}")

    def _write_stream(self, stream: str, index: int, array: np.ndarray) -> None:
        path = _frame_file(self.out_dir, stream, index)
        path.parent.mkdir(exist_ok=True)
        if stream == "rgb":
            write_rgb(path, array)
        elif stream == "probabilities":
            np.savez_compressed(path, probabilities=array.astype(np.float16))
        else:
            write_unchanged(path, array)
        self._stream_counts[stream] = self._stream_counts.get(stream, 0) + 1


class DatasetFolderReader(IndexedFrameSource):
    """Frames of a dataset folder written by DatasetWriter (random access by index)."""

    layout = "semantic_mapping"

    def __init__(self, path: os.PathLike):
        self.root = Path(path)
        meta_path = self.root / METADATA_FILE
        if not meta_path.is_file():
            hint = (
                " (poses.txt is there: the writer was not closed; call close() or use a with-block)"
                if (self.root / POSES_FILE).is_file()
                else ""
            )
            raise FileNotFoundError(f"{self.root} has no {METADATA_FILE}, so it is not a dataset folder{hint}")
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        if metadata.get("format") != FORMAT_NAME:
            raise ValueError(f"{meta_path}: format is {metadata.get('format')!r}, expected {FORMAT_NAME!r}")
        if int(metadata.get("version", 0)) > FORMAT_VERSION:
            raise ValueError(
                f"{meta_path}: format version {metadata['version']} is newer than this reader "
                f"(version {FORMAT_VERSION}); update semantic_mapping"
            )
        camera = metadata["camera"]
        self.intrinsics = CameraIntrinsics(
            float(camera["fx"]),
            float(camera["fy"]),
            float(camera["cx"]),
            float(camera["cy"]),
            int(camera["width_px"]),
            int(camera["height_px"]),
        )
        self.depth_units_per_m = float(metadata["depth_scale"])
        self.streams = dict(metadata["streams"])
        self.meta = dict(metadata.get("meta", {}))
        self.stamps_ns, self.poses = self._read_poses(int(metadata["num_frames"]))

    @property
    def ground_truth_dir(self) -> Path:
        """Folder of the caller's 3D ground truth files (may not exist)."""
        return self.root / GROUND_TRUTH_DIR

    def __len__(self) -> int:
        return len(self.stamps_ns)

    def _read_poses(self, num_frames: int) -> tuple[list[int], list[np.ndarray]]:
        path = self.root / POSES_FILE
        lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(lines) != num_frames:
            raise ValueError(f"{path} has {len(lines)} poses, {METADATA_FILE} says {num_frames} frames")
        stamps_ns, poses = [], []
        for line_no, fields in enumerate(lines, start=1):
            if len(fields) != 8:
                raise ValueError(
                    f"{path}:{line_no}: expected 'stamp_ns tx ty tz qx qy qz qw', got {len(fields)} fields"
                )
            stamps_ns.append(int(fields[0]))
            values = [float(v) for v in fields[1:]]
            poses.append(T_from_quat_xyzw(values[:3], values[3:]))
        return stamps_ns, poses

    def _optional(self, stream: str, index: int) -> Optional[np.ndarray]:
        """Stored array of a stream for frame `index`, or None when the frame lacks it."""
        if stream not in self.streams:
            return None
        path = _frame_file(self.root, stream, index)
        if not path.is_file():
            return None
        if stream == "probabilities":
            with np.load(path) as npz:
                return npz["probabilities"]
        return read_unchanged(path)

    def _load_frame(self, index: int) -> Frame:
        rgb = read_rgb(_frame_file(self.root, "rgb", index))
        depth_m = depth_units_to_m(read_unchanged(_frame_file(self.root, "depth", index)), self.depth_units_per_m)
        labels = self._optional("labels", index)
        confidence = self._optional("confidence", index)
        probs = self._optional("probabilities", index)
        if probs is not None:
            probs = probs.astype(np.float32)
            probs /= np.maximum(probs.sum(axis=2, keepdims=True), np.float32(1e-12))  # float16 rounding
        instances = self._optional("instances", index)
        ground_truth = None
        gt_labels = self._optional("gt_labels", index)
        if gt_labels is not None:
            gt_instances = self._optional("gt_instances", index)
            gt_depth = self._optional("gt_depth", index)
            ground_truth = FrameGroundTruth(
                labels=gt_labels.astype(np.int32),
                instances=None if gt_instances is None else gt_instances.astype(np.int32),
                depth_m=None if gt_depth is None else depth_units_to_m(gt_depth, self.depth_units_per_m),
            )
        return Frame(
            rgb=rgb,
            depth_m=depth_m,
            intrinsics=self.intrinsics,
            T_world_cam=self.poses[index].copy(),
            stamp_ns=self.stamps_ns[index],
            class_probs=probs,
            labels=None if labels is None else labels.astype(np.int32),
            label_confidence=None if confidence is None else _confidence_from_png_array(confidence),
            instance_masks=None if instances is None else instances.astype(np.int32),
            ground_truth=ground_truth,
        )
