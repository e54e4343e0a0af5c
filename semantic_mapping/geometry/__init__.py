"""Pure geometry: projection, back-projection and pose maths (numpy and torch alike)."""

from semantic_mapping.geometry.pose import (
    T_from_quat_xyzw,
    interpolate_pose,
    invert_pose,
    is_rigid_transform,
    look_at,
    quat_xyzw_from_T,
    transform_points,
)
from semantic_mapping.geometry.projection import backproject_depth, intrinsics_from_fov, project_points

__all__ = [
    "T_from_quat_xyzw",
    "backproject_depth",
    "interpolate_pose",
    "intrinsics_from_fov",
    "invert_pose",
    "is_rigid_transform",
    "look_at",
    "project_points",
    "quat_xyzw_from_T",
    "transform_points",
]
