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

    def __post_init__(self) -> None:
        if self.predicted is None:
            self.predicted = np.zeros(len(self.labels), dtype=bool)


@dataclass
class SemanticMesh:
    """Triangle mesh of the fused surface with a class label per vertex."""

    vertices_m: np.ndarray  # [V, 3] float32 world frame
    triangles: np.ndarray  # [T, 3] int32
    vertex_colors: np.ndarray  # [V, 3] uint8 observed colour
    vertex_labels: np.ndarray  # [V] int32 class ids


@dataclass
class TraversabilityGrid:
    """2D navigation grid in the world x-y plane (z up)."""

    cells: np.ndarray  # [rows, cols] int8: 0 free, 100 occupied, -1 unknown (nav_msgs convention)
    resolution_m: float
    origin_xy_m: tuple  # world (x, y) of the corner of cell [0, 0]

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
