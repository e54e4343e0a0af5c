"""Rigid-transform maths on 4x4 matrices. Quaternions are (x, y, z, w), as in ROS."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation, Slerp


def transform_points(T_b_a: np.ndarray, points_a: np.ndarray) -> np.ndarray:
    """Map points [..., 3] from frame a to frame b with T_b_a [4, 4]."""
    return points_a @ T_b_a[:3, :3].T + T_b_a[:3, 3]


def invert_pose(T_b_a: np.ndarray) -> np.ndarray:
    """T_a_b from T_b_a (rigid inverse, no general matrix inversion)."""
    R, t = T_b_a[:3, :3], T_b_a[:3, 3]
    T = np.eye(4)
    T[:3, :3] = R.T
    T[:3, 3] = -R.T @ t
    return T


def is_rigid_transform(T: np.ndarray, tol: float = 1e-3) -> bool:
    """True when T is a finite 4x4 rigid transform (orthonormal rotation, det +1, last row 0 0 0 1)."""
    T = np.asarray(T)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return False
    R = T[:3, :3]
    return (
        np.allclose(R @ R.T, np.eye(3), atol=tol)
        and abs(np.linalg.det(R) - 1.0) < tol
        and np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=tol)
    )


def T_from_quat_xyzw(translation_m, quat_xyzw) -> np.ndarray:
    """4x4 transform from a translation [3] and a unit quaternion (x, y, z, w)."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(np.asarray(quat_xyzw, dtype=np.float64)).as_matrix()
    T[:3, 3] = np.asarray(translation_m, dtype=np.float64)
    return T


def quat_xyzw_from_T(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(translation [3], quaternion (x, y, z, w) [4]) of a 4x4 transform."""
    return T[:3, 3].copy(), Rotation.from_matrix(T[:3, :3]).as_quat()


def interpolate_pose(T0: np.ndarray, T1: np.ndarray, alpha: float) -> np.ndarray:
    """Pose at fraction alpha in [0, 1] between T0 and T1: linear translation, slerp rotation."""
    slerp = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([T0[:3, :3], T1[:3, :3]])))
    T = np.eye(4)
    T[:3, :3] = slerp([alpha]).as_matrix()[0]
    T[:3, 3] = (1.0 - alpha) * T0[:3, 3] + alpha * T1[:3, 3]
    return T


def look_at(eye_m, target_m, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """T_world_cam of an OpenCV camera at `eye_m` looking at `target_m`, image-up towards `up`."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye_m, target_m, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:  # looking straight along `up`: pick any perpendicular
        x = np.cross(z, [1.0, 0.0, 0.0] if abs(z[0]) < 0.9 else [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T
