"""Core data types shared by every stage: camera, frames, map outputs.

Conventions: camera frames are OpenCV (x right, y down, z forward); poses are 4x4
homogeneous matrices named `T_<to>_<from>` (so `T_world_cam @ p_cam = p_world`);
depth is in metres with 0 meaning "no return"; class ids index `config/classes.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of an image of `width_px` x `height_px` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width_px: int
    height_px: int

    @property
    def K(self) -> np.ndarray:  # [3, 3]
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_K(cls, K: np.ndarray, width_px: int, height_px: int) -> "CameraIntrinsics":
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width_px), int(height_px))

    def scaled(self, width_px: int, height_px: int) -> "CameraIntrinsics":
        """The same camera resampled to another resolution (pixel centres kept aligned)."""
        sx, sy = width_px / self.width_px, height_px / self.height_px
        return CameraIntrinsics(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, width_px, height_px
        )


@dataclass
class FrameGroundTruth:
    """Per-pixel ground truth that only simulators and annotated datasets have."""

    labels: np.ndarray  # [H, W] int32 class ids, ignore id where unlabelled
    instances: Optional[np.ndarray] = None  # [H, W] int32 instance ids, 0 = none
    depth_m: Optional[np.ndarray] = None  # [H, W] float32 noiseless depth, 0 = no surface
    normals_cam: Optional[np.ndarray] = None  # [H, W, 3] float32 unit surface normals, camera frame


@dataclass
class Frame:
    """One posed RGB-D observation with optional 2D semantics.

    Semantics come as per-pixel class probabilities, or as labels with an optional
    per-pixel confidence; `instance_masks` holds class-agnostic instance ids (0 = none).
    """

    rgb: np.ndarray  # [H, W, 3] uint8
    depth_m: np.ndarray  # [H, W] float32 metres, 0 = invalid
    intrinsics: CameraIntrinsics
    T_world_cam: np.ndarray  # [4, 4] float64
    stamp_ns: int = 0
    class_probs: Optional[np.ndarray] = None  # [H, W, C] float32, sums to 1 over C
    labels: Optional[np.ndarray] = None  # [H, W] int32 class ids, ignore id where unknown
    label_confidence: Optional[np.ndarray] = None  # [H, W] float32 in (0, 1]
    instance_masks: Optional[np.ndarray] = None  # [H, W] int32, 0 = none
    ground_truth: Optional[FrameGroundTruth] = None

    @property
    def height_px(self) -> int:
        return int(self.depth_m.shape[0])

    @property
    def width_px(self) -> int:
        return int(self.depth_m.shape[1])

    @property
    def has_semantics(self) -> bool:
        return self.class_probs is not None or self.labels is not None


@dataclass
class LabelledVoxels:
    """Surface voxels of the map with their semantics."""

    positions_m: np.ndarray  # [N, 3] float32 world frame, voxel centres
    colors: np.ndarray  # [N, 3] uint8
    labels: np.ndarray  # [N] int32 class ids
    confidence: np.ndarray  # [N] float32 probability of the label
    predicted: np.ndarray = field(default=None)  # [N] bool, True where completion predicted it
    object_ids: np.ndarray = field(default=None)  # [N] int32 object slot id, 0 = no object

    def __post_init__(self) -> None:
        if self.predicted is None:
            self.predicted = np.zeros(len(self.labels), dtype=bool)
        if self.object_ids is None:
            self.object_ids = np.zeros(len(self.labels), dtype=np.int32)


@dataclass
class PredictedVoxels:
    """Voxels near a surface that scene completion predicted, kept beside the observations (which win)."""

    indices: np.ndarray  # [M, 3] int64 integer voxel indices
    tsdf: np.ndarray  # [M] float32 predicted signed distance / truncation, in (-1, 1)
    colors: np.ndarray  # [M, 3] uint8 predicted colour
    labels: np.ndarray  # [M] int32 predicted class ids
    confidence: np.ndarray  # [M] float32 probability of the label (the network's softmax)

    def select(self, mask: np.ndarray) -> "PredictedVoxels":
        """The voxels where mask [M] (bool or row indices) holds."""
        return PredictedVoxels(self.indices[mask], self.tsdf[mask], self.colors[mask], self.labels[mask],
                               self.confidence[mask])


@dataclass
class SemanticMesh:
    """Triangle mesh of the fused surface with a class label per vertex."""

    vertices_m: np.ndarray  # [V, 3] float32 world frame
    triangles: np.ndarray  # [T, 3] int32
    vertex_colors: np.ndarray  # [V, 3] uint8 observed (or predicted) colour
    vertex_labels: np.ndarray  # [V] int32 class ids
    vertex_predicted: np.ndarray = field(default=None)  # [V] bool, True where completion predicted the surface

    def __post_init__(self) -> None:
        if self.vertex_predicted is None:
            self.vertex_predicted = np.zeros(len(self.vertices_m), dtype=bool)


@dataclass
class TraversabilityGrid:
    """2D navigation grid in the world x-y plane (z up)."""

    cells: np.ndarray  # [rows, cols] int8: 0 free, 100 occupied, -1 unknown (nav_msgs convention)
    resolution_m: float
    origin_xy_m: tuple  # world (x, y) of the corner of cell [0, 0]
    predicted: np.ndarray = field(default=None)  # [rows, cols] bool, True where only predicted voxels made the cell free/occupied

    def __post_init__(self) -> None:
        if self.predicted is None:
            self.predicted = np.zeros(self.cells.shape, dtype=bool)

    FREE = 0
    OCCUPIED = 100
    UNKNOWN = -1


@dataclass
class RenderedView:
    """A raycast of the map at one camera."""

    depth_m: np.ndarray  # [H, W] float32, 0 = no surface
    rgb: np.ndarray  # [H, W, 3] uint8
    labels: np.ndarray  # [H, W] int32, ignore id where no surface
    confidence: np.ndarray  # [H, W] float32


@dataclass
class MapObject:
    """One object of the map: a connected part of an object slot, with its class and box (world frame)."""

    id: int  # stable across extractions of the same map
    slot: int  # slot of the field it comes from
    class_id: int  # most likely class over its voxels, -1 when none of them is labelled
    class_name: str  # "" when class_id is -1
    class_confidence: float  # mean probability of class_id over its labelled voxels
    slot_confidence: float  # mean over its voxels of the highest slot probability (DiscoNeRF §6.1)
    centroid_m: np.ndarray  # [3] mean voxel centre
    box_center_m: np.ndarray  # [3] centre of the gravity-aligned oriented box
    box_quat_xyzw: np.ndarray  # [4] box axes (rotation about z)
    box_size_m: np.ndarray  # [3] full extents along the box axes
    voxel_count: int
    first_seen_ns: int  # stamp of the first view whose masks matched its slot, -1 if none did yet
    last_seen_ns: int  # stamp of the latest such view
    observed_fraction: float  # share of its voxels that were observed (not predicted by completion)
    voxel_indices: np.ndarray  # [n, 3] int64 integer voxel indices

    def summary(self) -> dict:
        """JSON-ready description (no voxel list)."""
        return {
            "id": self.id, "slot": self.slot, "class_id": self.class_id, "class_name": self.class_name,
            "class_confidence": round(self.class_confidence, 4), "slot_confidence": round(self.slot_confidence, 4),
            "centroid_m": [round(float(v), 4) for v in self.centroid_m],
            "box_center_m": [round(float(v), 4) for v in self.box_center_m],
            "box_quat_xyzw": [round(float(v), 6) for v in self.box_quat_xyzw],
            "box_size_m": [round(float(v), 4) for v in self.box_size_m],
            "voxel_count": self.voxel_count, "first_seen_ns": self.first_seen_ns, "last_seen_ns": self.last_seen_ns,
            "observed_fraction": round(self.observed_fraction, 4),
        }

    @classmethod
    def from_summary(cls, summary: dict, voxel_indices: np.ndarray) -> "MapObject":
        """The object `summary()` described, with its voxels [n, 3]."""
        fields = dict(summary)
        for name in ("centroid_m", "box_center_m", "box_quat_xyzw", "box_size_m"):
            fields[name] = np.asarray(fields[name], np.float64)
        return cls(**fields, voxel_indices=np.asarray(voxel_indices, np.int64))
