"""sensor_msgs/Image fields <-> numpy arrays, without cv_bridge.

Pure functions over the message fields (encoding, height, width, step, is_bigendian, data) so
that the bag reader and the ROS node share them. Accepted encodings: rgb8, bgr8, rgba8, bgra8,
mono8, mono16 and the generic `<bits><U|S|F>C<channels>` family (8UC1, 16UC1, 32FC1, 32SC1,
32FC20, ...). Rows may be padded (step > width * bytes per pixel); big-endian data is swapped
to the machine's byte order.
"""

from __future__ import annotations

import re

import numpy as np

_NAMED_ENCODINGS = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "mono16": (np.uint16, 1),
}
_GENERIC_ENCODING = re.compile(r"^(8|16|32|64)(U|S|F)C(\d+)$")
_GENERIC_DTYPES = {
    ("8", "U"): np.uint8,
    ("8", "S"): np.int8,
    ("16", "U"): np.uint16,
    ("16", "S"): np.int16,
    ("32", "S"): np.int32,
    ("32", "F"): np.float32,
    ("64", "F"): np.float64,
}
_MAX_CHANNELS = 1024

COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
ID_ENCODINGS = ("mono8", "8UC1", "mono16", "16UC1", "32SC1")


def encoding_layout(encoding: str) -> tuple[np.dtype, int]:
    """(element dtype, channels) of an image encoding; ValueError for unsupported ones."""
    if encoding in _NAMED_ENCODINGS:
        dtype, channels = _NAMED_ENCODINGS[encoding]
        return np.dtype(dtype), channels
    match = _GENERIC_ENCODING.match(encoding)
    if match:
        bits, kind, channels = match.group(1), match.group(2), int(match.group(3))
        if (bits, kind) in _GENERIC_DTYPES and 1 <= channels <= _MAX_CHANNELS:
            return np.dtype(_GENERIC_DTYPES[(bits, kind)]), channels
    raise ValueError(
        f"unsupported image encoding {encoding!r}; expected one of {sorted(_NAMED_ENCODINGS)} or "
        f"<bits><U|S|F>C<channels> such as 16UC1, 32FC1, 32SC1 (compressed images are not supported)"
    )


def image_msg_to_array(
    encoding: str, height: int, width: int, step: int, is_bigendian: bool, data: bytes
) -> np.ndarray:
    """Decode image message fields into a new array in machine byte order.

    Returns [H, W] for one-channel encodings and [H, W, C] otherwise, channels in the order the
    encoding names them (bgr8 stays B, G, R; see `to_rgb8`).
    """
    dtype, channels = encoding_layout(encoding)
    shape = (height, width) if channels == 1 else (height, width, channels)
    if height == 0 or width == 0:
        return np.zeros(shape, dtype)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ValueError(
            f"image step {step} is smaller than width * bytes per pixel = {width} * "
            f"{channels * dtype.itemsize} = {row_bytes} for encoding {encoding!r}"
        )
    needed_bytes = (height - 1) * step + row_bytes
    buffer = memoryview(data).cast("B")
    if len(buffer) < needed_bytes:
        raise ValueError(
            f"image data holds {len(buffer)} bytes, a {width}x{height} {encoding!r} image with step "
            f"{step} needs {needed_bytes}"
        )
    stored = dtype.newbyteorder(">" if is_bigendian else "<")
    rows = np.ndarray(
        (height, width * channels), dtype=stored, buffer=buffer, strides=(step, dtype.itemsize)
    )
    return rows.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def array_to_image_fields(array: np.ndarray, encoding: str) -> dict:
    """Image message fields (height, width, encoding, is_bigendian, step, data: bytes) of an array.

    The array's dtype and channel count must match the encoding exactly (e.g. uint16 [H, W] for
    16UC1, uint8 [H, W, 3] for rgb8); data is written little-endian without row padding.
    """
    dtype, channels = encoding_layout(encoding)
    array = np.asarray(array)
    if channels == 1 and array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    expected_ndim = 2 if channels == 1 else 3
    if array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        want = "[H, W]" if channels == 1 else f"[H, W, {channels}]"
        raise ValueError(f"encoding {encoding!r} needs an array of shape {want}, got {array.shape}")
    if array.dtype.kind != dtype.kind or array.dtype.itemsize != dtype.itemsize:
        raise TypeError(
            f"array dtype {array.dtype} does not match encoding {encoding!r} ({dtype}); "
            f"convert it first, e.g. array.astype(np.{dtype.name})"
        )
    height, width = array.shape[:2]
    data = np.ascontiguousarray(array, dtype=dtype.newbyteorder("<")).tobytes()
    return {
        "height": int(height),
        "width": int(width),
        "encoding": encoding,
        "is_bigendian": 0,
        "step": int(width * channels * dtype.itemsize),
        "data": data,
    }


def to_rgb8(array: np.ndarray, encoding: str) -> np.ndarray:
    """[H, W, 3] uint8 RGB from a decoded colour image of encoding rgb8/bgr8/rgba8/bgra8/mono8."""
    if encoding == "rgb8":
        return array
    if encoding == "bgr8":
        return np.ascontiguousarray(array[:, :, ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(array[:, :, :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(array[:, :, 2::-1])
    if encoding in ("mono8", "8UC1"):
        return np.repeat(array[:, :, None], 3, axis=2)
    raise ValueError(f"colour image encoding {encoding!r} is not supported; expected one of {COLOR_ENCODINGS}")


def to_depth_m(array: np.ndarray, encoding: str) -> np.ndarray:
    """[H, W] float32 metres (0 = invalid) from 16UC1/mono16 millimetres or 32FC1 metres."""
    if encoding in ("16UC1", "mono16"):
        return array.astype(np.float32) * np.float32(1e-3)
    if encoding == "32FC1":
        depth_m = array.astype(np.float32, copy=True)
        depth_m[~np.isfinite(depth_m) | (depth_m < 0.0)] = 0.0
        return depth_m
    raise ValueError(
        f"depth image encoding {encoding!r} is not supported; expected one of {DEPTH_ENCODINGS} "
        "(16UC1 and mono16 in millimetres, 32FC1 in metres)"
    )


def to_int_ids(array: np.ndarray, encoding: str) -> np.ndarray:
    """[H, W] int32 ids (class ids or instance ids) from mono8/8UC1/mono16/16UC1/32SC1."""
    if encoding in ID_ENCODINGS:
        return array.astype(np.int32)
    raise ValueError(f"id image encoding {encoding!r} is not supported; expected one of {ID_ENCODINGS}")
