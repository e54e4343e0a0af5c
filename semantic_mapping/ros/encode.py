"""Byte layouts of the node's outputs, as pure numpy (no ROS import: testable anywhere).

PointCloud2 of the labelled voxel map, little-endian, one point per voxel:

    x y z        float32  voxel centre, metres, map frame
    rgb          float32  packed 0x00RRGGBB (RViz convention): class colour or observed colour
    label        uint32   class id (the LabelSpace's ignore_id where unknown)
    confidence   float32  probability of the label
    predicted    uint8    1 where scene completion predicted the voxel, 0 where observed
    slot         uint32   id of the object (ObjectSlot.id on ~/objects) the voxel belongs to, 0 = none
"""

from __future__ import annotations

import numpy as np

from semantic_mapping.types import LabelledVoxels

POINT_FIELDS = (
    ("x", 0, "float32"),
    ("y", 4, "float32"),
    ("z", 8, "float32"),
    ("rgb", 12, "float32"),
    ("label", 16, "uint32"),
    ("confidence", 20, "float32"),
    ("predicted", 24, "uint8"),
    ("slot", 28, "uint32"),
)
POINT_STEP = 32

CLOUD_DTYPE = np.dtype({
    "names": [n for n, _, _ in POINT_FIELDS],
    "formats": ["<" + np.dtype(t).str[1:] if np.dtype(t).itemsize > 1 else t for _, _, t in POINT_FIELDS],
    "offsets": [o for _, o, _ in POINT_FIELDS],
    "itemsize": POINT_STEP,
})


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """[N, 3] uint8 -> [N] float32 whose bits are 0x00RRGGBB."""
    c = colors.astype(np.uint32)
    packed = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    return packed.view(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(packed, dtype=np.float32).view(np.uint32)
    return np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=1).astype(np.uint8)


def voxels_to_cloud_bytes(voxels: LabelledVoxels, label_colors: np.ndarray, color_by: str = "label") -> tuple[bytes, int]:
    """(data, point_step) of the voxel cloud; colour_by 'label' (class colours) or 'rgb' (observed)."""
    n = len(voxels.labels)
    cloud = np.zeros(n, dtype=CLOUD_DTYPE)
    if n:
        cloud["x"], cloud["y"], cloud["z"] = (voxels.positions_m[:, i] for i in range(3))
        if color_by == "label":
            table = np.full((max(int(voxels.labels.max()) + 1, len(label_colors)), 3), 128, np.uint8)
            table[: len(label_colors)] = label_colors
            colors = table[np.clip(voxels.labels, 0, None)]
        else:
            colors = voxels.colors
        cloud["rgb"] = pack_rgb(colors)
        cloud["label"] = voxels.labels.astype(np.uint32)
        cloud["confidence"] = voxels.confidence
        cloud["predicted"] = voxels.predicted.astype(np.uint8)
        cloud["slot"] = np.clip(voxels.object_ids, 0, None).astype(np.uint32)
    return cloud.tobytes(), POINT_STEP


def object_color(object_id: int) -> tuple[float, float, float]:
    """Display colour (r, g, b in [0, 1]) of an object id: hues spread by the golden ratio, so that
    neighbouring ids differ and an object keeps its colour while its id is stable."""
    import colorsys

    hue = (int(object_id) * 0.618033988749895) % 1.0
    return colorsys.hsv_to_rgb(hue, 0.75, 0.95)


def cloud_bytes_to_arrays(data: bytes, point_step: int, n: int) -> dict:
    """{field: [N] array} from cloud bytes written by voxels_to_cloud_bytes."""
    if point_step != POINT_STEP:
        raise ValueError(f"point_step {point_step} is not this layout's {POINT_STEP}")
    cloud = np.frombuffer(data, dtype=CLOUD_DTYPE, count=n)
    out = {name: np.array(cloud[name]) for name in CLOUD_DTYPE.names}
    out["positions_m"] = np.stack([out["x"], out["y"], out["z"]], axis=1)
    out["colors"] = unpack_rgb(out["rgb"])
    return out
