"""Quality of a fused semantic map against a simulated scene's ground truth."""

from __future__ import annotations

from typing import Optional

import numpy as np

from semantic_mapping.eval.metrics import SegmentationScores, confusion_matrix, point_to_mesh_distance
from semantic_mapping.geometry import invert_pose, project_points
from semantic_mapping.pipeline import Mapper
from semantic_mapping.sim.ground_truth import GroundTruthVoxels, SceneMesh, voxelize_surface
from semantic_mapping.types import Frame


class FrameSegmentationTally:
    """Per-frame 2D mIoU of input labels against ground truth, averaged over frames."""

    def __init__(self, num_classes: int, ignore_id: int):
        self.num_classes, self.ignore_id = num_classes, ignore_id
        self.per_frame_miou: list = []
        self.total = np.zeros((num_classes, num_classes + 1), np.int64)

    def add(self, frame: Frame) -> None:
        if frame.ground_truth is None or not frame.has_semantics:
            return
        pred = frame.class_probs.argmax(axis=2) if frame.class_probs is not None else frame.labels
        cm = confusion_matrix(pred, frame.ground_truth.labels, self.num_classes, self.ignore_id)
        if cm.sum() == 0:
            return
        self.total += cm
        self.per_frame_miou.append(SegmentationScores.from_confusion(cm).miou)

    @property
    def mean_miou(self) -> float:
        return float(np.mean(self.per_frame_miou)) if self.per_frame_miou else float("nan")


class SurfaceVisibility:
    """Which ground-truth surface voxels some integrated frame actually saw (by its noiseless depth).

    A voxel counts as seen when it projects inside a frame within the mapper's range and its depth
    agrees with the frame's ground-truth depth there within `tolerance_voxels`, so surfaces hidden
    behind others are not.
    """

    def __init__(self, gt: GroundTruthVoxels, max_depth_m: float, tolerance_voxels: float = 0.75):
        self.gt = gt
        self.max_depth_m = max_depth_m  # the mapper's range: farther surfaces are not fused, so not scored
        self.points_m = gt.positions_m().astype(np.float64)  # [N, 3]
        self.tolerance_m = tolerance_voxels * gt.voxel_size_m
        self.seen = np.zeros(len(gt.indices), bool)

    def add(self, frame: Frame) -> None:
        depth = frame.ground_truth.depth_m
        T_cam_world = invert_pose(frame.T_world_cam)
        points_cam = self.points_m @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
        uv, z = project_points(points_cam, frame.intrinsics.K)
        u, v = np.round(uv[:, 0]).astype(np.int64), np.round(uv[:, 1]).astype(np.int64)
        H, W = depth.shape
        inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        idx = np.nonzero(inside)[0]
        d = depth[v[idx], u[idx]]
        self.seen[idx[(d > 0) & (d <= self.max_depth_m) & (np.abs(d - z[idx]) < self.tolerance_m)]] = True


def evaluate_map(mapper: Mapper, mesh: SceneMesh, visibility: Optional[SurfaceVisibility] = None) -> dict:
    """3D semantics on the ground-truth surface voxels that were seen, and surface geometry error.

    - miou_3d / macc_3d: class of each seen ground-truth surface voxel (voxel size of the map, seen
      per `visibility`, else every one the map has semantics for) against the map's label there;
    - coverage: share of the seen ground-truth surface voxels that the map labelled;
    - surface_*_err_m: distance of the map's TSDF zero crossings to the ground-truth mesh.
    """
    ls = mapper.label_space
    gt = visibility.gt if visibility is not None else voxelize_surface(mesh, mapper.voxel_size_m)
    values = mapper.map.voxel_values(gt.indices)
    labelled = values["semantic_count"] > 0
    seen = visibility.seen if visibility is not None else labelled
    scored = seen & labelled
    cm = confusion_matrix(values["labels"][scored], gt.classes[scored], ls.num_classes, ls.ignore_id)
    scores = SegmentationScores.from_confusion(cm)
    points, _ = mapper.map.surface_points()
    dist = point_to_mesh_distance(points, mesh.vertices, mesh.triangles) if len(points) else np.array([np.inf])
    return {
        "miou_3d": scores.miou,
        "macc_3d": scores.macc,
        "per_class_iou_3d": {ls.names[c]: v for c, v in scores.iou.items()},
        "coverage": float(scored.sum() / max(seen.sum(), 1)),
        "scored_voxels": int(scored.sum()),
        "gt_surface_voxels": int(len(gt.indices)),
        "surface_median_err_m": float(np.median(dist)),
        "surface_mean_err_m": float(np.mean(dist)),
        "surface_points": int(len(points)),
    }
