"""Reading and writing image files (PNG/JPEG) with OpenCV, RGB channel order on our side."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MM_PER_M = 1000.0
UINT16_MAX = 65535


def _imread(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"image file {path} does not exist")
        raise ValueError(f"{path}: OpenCV cannot decode this file as an image")
    return image


def read_rgb(path: Path) -> np.ndarray:
    """[H, W, 3] uint8 RGB of a colour (or grey) image file."""
    return np.ascontiguousarray(_imread(path, cv2.IMREAD_COLOR)[:, :, ::-1])


def read_unchanged(path: Path) -> np.ndarray:
    """The stored array of an image file (uint8 or uint16, channels as stored)."""
    return _imread(path, cv2.IMREAD_UNCHANGED)


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write [H, W, 3] uint8 RGB to an image file (format from the suffix)."""
    write_unchanged(path, np.ascontiguousarray(rgb[:, :, ::-1]))


def write_unchanged(path: Path, array: np.ndarray) -> None:
    """Write a uint8/uint16 [H, W] or BGR [H, W, 3] array to an image file."""
    if not cv2.imwrite(str(path), array):
        raise OSError(f"OpenCV could not write {path} (dtype {array.dtype}, shape {array.shape})")


def depth_units_to_m(depth_units: np.ndarray, units_per_m: float, invalid_values=(0,)) -> np.ndarray:
    """[H, W] float32 metres (0 = invalid) of an integer depth image in 1/units_per_m metres."""
    depth_m = depth_units.astype(np.float32) / np.float32(units_per_m)
    depth_m[np.isin(depth_units, invalid_values)] = 0.0
    return depth_m


def depth_m_to_mm_uint16(depth_m: np.ndarray) -> tuple[np.ndarray, int]:
    """([H, W] uint16 millimetres, pixels set to 0 because they were beyond 65.535 m).

    Non-finite and negative depths become 0 (invalid).
    """
    depth_mm = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0) * MM_PER_M
    depth_mm = np.rint(np.clip(depth_mm, 0.0, None))
    too_far = depth_mm > UINT16_MAX
    depth_mm[too_far] = 0.0
    return depth_mm.astype(np.uint16), int(too_far.sum())


def resize_nearest(ids: np.ndarray, width_px: int, height_px: int) -> np.ndarray:
    """[H, W] id image resampled to width_px x height_px by nearest neighbour (ids stay ids)."""
    if ids.shape[:2] == (height_px, width_px):
        return ids
    return cv2.resize(ids, (width_px, height_px), interpolation=cv2.INTER_NEAREST)
