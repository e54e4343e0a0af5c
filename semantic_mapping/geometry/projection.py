"""Pinhole projection and depth back-projection (OpenCV camera frame: x right, y down, z forward).

The functions use only indexing and arithmetic, so they work on numpy arrays and torch tensors.
"""

from __future__ import annotations

import math

import numpy as np

from semantic_mapping.types import CameraIntrinsics


def project_points(points_cam, K):
    """Project camera-frame points to pixel coordinates.

    points_cam: [..., 3] metres, camera frame.  K: [3, 3].
    Returns (uv [..., 2] pixels, with pixel centres at integer coordinates; z [...] metres).
    Points with z <= 0 get non-finite or meaningless uv: mask them with z > 0.
    """
    x, y, z = points_cam[..., 0], points_cam[..., 1], points_cam[..., 2]
    safe_z = z + (z == 0) * 1e-12
    u = K[0, 0] * x / safe_z + K[0, 2]
    v = K[1, 1] * y / safe_z + K[1, 2]
    if isinstance(points_cam, np.ndarray):
        return np.stack([u, v], axis=-1), z
    import torch

    return torch.stack([u, v], dim=-1), z


def backproject_depth(depth_m: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points of every pixel.

    depth_m: [H, W] metres.  Returns [H, W, 3] metres (zero depth gives the origin).
    """
    H, W = depth_m.shape
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    x = (u - K[0, 2]) / K[0, 0] * depth_m
    y = (v - K[1, 2]) / K[1, 1] * depth_m
    return np.stack([x, y, depth_m], axis=-1).astype(np.float32)


def intrinsics_from_fov(width_px: int, height_px: int, hfov_deg: float) -> CameraIntrinsics:
    """Square-pixel pinhole camera with the given horizontal field of view, centred."""
    f = 0.5 * width_px / math.tan(math.radians(hfov_deg) / 2.0)
    return CameraIntrinsics(f, f, (width_px - 1) / 2.0, (height_px - 1) / 2.0, width_px, height_px)
