"""ROS message <-> library types, at the edge of the node. Decoding uses io/image_codec.py.

Message construction from arrays goes through `array.array` so that rclpy copies buffers instead
of checking element by element.
"""

from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from semantic_mapping.geometry.pose import T_from_quat_xyzw, quat_xyzw_from_T
from semantic_mapping.io.image_codec import (
    array_to_image_fields,
    image_msg_to_array,
    to_depth_m,
    to_int_ids,
    to_rgb8,
)
from semantic_mapping.msg import ObjectSlot, ObjectSlotArray
from semantic_mapping.ros.encode import POINT_FIELDS, object_color, voxels_to_cloud_bytes
from semantic_mapping.types import CameraIntrinsics, LabelledVoxels, MapObject, SemanticMesh, TraversabilityGrid

NS_PER_S = 1_000_000_000


class ConversionError(ValueError):
    """A message that cannot be converted; `reason` is a counter key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# ----------------------------------------------------------------------------------- time
def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Time:
    return Time(sec=int(stamp_ns // NS_PER_S), nanosec=int(stamp_ns % NS_PER_S))


# ----------------------------------------------------------------------------------- images
def decode_image(msg: Image, role: str) -> np.ndarray:
    """Decoded array of an image message for a frame role; ConversionError(reason='bad_<role>')."""
    try:
        arr = image_msg_to_array(msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data)
        if role == "rgb":
            return to_rgb8(arr, msg.encoding)
        if role == "depth":
            return to_depth_m(arr, msg.encoding)
        if role in ("labels", "masks"):
            return to_int_ids(arr, msg.encoding)
        if role in ("confidence", "probabilities"):
            if not msg.encoding.startswith("32FC") or (role == "confidence" and msg.encoding != "32FC1"):
                raise ValueError(f"{role} images must be {'32FC1' if role == 'confidence' else '32FC<C>'}, got {msg.encoding!r}")
            return arr
    except (ValueError, TypeError) as exc:
        raise ConversionError(f"bad_{role}", f"{role} image: {exc}") from None
    raise ValueError(f"unknown role {role!r}")


def image_msg(array_: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Image:
    """sensor_msgs/Image of an array whose dtype/channels match the encoding."""
    fields = array_to_image_fields(array_, encoding)
    msg = Image()
    msg.header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)
    msg.height, msg.width, msg.encoding = fields["height"], fields["width"], fields["encoding"]
    msg.is_bigendian, msg.step = fields["is_bigendian"], fields["step"]
    msg.data = array.array("B", fields["data"])
    return msg


def intrinsics_from_camera_info(msg: CameraInfo) -> CameraIntrinsics:
    """Pinhole intrinsics of a CameraInfo (k); ConversionError when they are unusable."""
    k = np.asarray(msg.k, dtype=np.float64)
    if msg.width <= 0 or msg.height <= 0 or k.shape != (9,) or not np.all(np.isfinite(k)) or k[0] <= 0 or k[4] <= 0:
        raise ConversionError("bad_camera_info", f"CameraInfo has no usable k/size: k={list(k)}, {msg.width}x{msg.height}")
    return CameraIntrinsics(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(msg.width), int(msg.height))


def camera_info_msg(intr: CameraIntrinsics, stamp_ns: int, frame_id: str) -> CameraInfo:
    msg = CameraInfo()
    msg.header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)
    msg.width, msg.height = intr.width_px, intr.height_px
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


# ----------------------------------------------------------------------------------- poses
def pose_to_T(pose) -> np.ndarray:
    """4x4 of a geometry_msgs/Pose; ConversionError('pose_invalid') when not finite or zero quaternion."""
    q, p = pose.orientation, pose.position
    quat = np.array([q.x, q.y, q.z, q.w], dtype=np.float64)
    t = np.array([p.x, p.y, p.z], dtype=np.float64)
    norm = np.linalg.norm(quat)
    if not (np.all(np.isfinite(quat)) and np.all(np.isfinite(t))) or not np.isfinite(norm) or norm < 1e-6:
        raise ConversionError("pose_invalid", f"pose is not finite or has a zero quaternion: {t}, {quat}")
    return T_from_quat_xyzw(t, quat / norm)


def T_to_pose(T: np.ndarray, pose) -> None:
    """Write a 4x4 into a geometry_msgs/Pose in place."""
    t, q = quat_xyzw_from_T(T)
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in t)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)


def transform_to_T(transform) -> np.ndarray:
    """4x4 of a geometry_msgs/Transform."""
    r, t = transform.rotation, transform.translation
    quat = np.array([r.x, r.y, r.z, r.w])
    return T_from_quat_xyzw([t.x, t.y, t.z], quat / np.linalg.norm(quat))


# ----------------------------------------------------------------------------------- outputs
def voxels_to_cloud(voxels: LabelledVoxels, label_colors: np.ndarray, stamp_ns: int, frame_id: str,
                    color_by: str = "label") -> PointCloud2:
    """PointCloud2 with fields x y z rgb label confidence predicted slot (see encode.POINT_FIELDS)."""
    data, point_step = voxels_to_cloud_bytes(voxels, label_colors, color_by)
    msg = PointCloud2()
    msg.header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)
    msg.height, msg.width = 1, len(voxels.labels)
    datatype = {"float32": PointField.FLOAT32, "uint32": PointField.UINT32, "uint8": PointField.UINT8,
                "int32": PointField.INT32}
    msg.fields = [PointField(name=n, offset=o, datatype=datatype[t], count=1) for n, o, t in POINT_FIELDS]
    msg.is_bigendian = False
    msg.point_step = point_step
    msg.row_step = point_step * msg.width
    msg.is_dense = True
    msg.data = array.array("B", data)
    return msg


def cloud_to_arrays(msg: PointCloud2) -> dict:
    """{field name: [N] array} of a PointCloud2 written by voxels_to_cloud (for tests and consumers)."""
    from semantic_mapping.ros.encode import cloud_bytes_to_arrays

    return cloud_bytes_to_arrays(bytes(msg.data), msg.point_step, msg.width * msg.height)


PREDICTED_ALPHA = 0.5
"""Vertex alpha of the mesh surface scene completion predicted (observed surface: 1)."""


def mesh_to_marker(mesh: SemanticMesh, label_colors: np.ndarray, stamp_ns: int, frame_id: str,
                   color_by: str = "label", ns: str = "semantic_mesh") -> Marker:
    """TRIANGLE_LIST marker, one colour per vertex (class colour or observed colour); vertices of the
    predicted surface have alpha PREDICTED_ALPHA."""
    msg = Marker()
    msg.header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)
    msg.ns, msg.id = ns, 0
    msg.type, msg.action = Marker.TRIANGLE_LIST, Marker.ADD
    msg.pose.orientation.w = 1.0
    msg.scale.x = msg.scale.y = msg.scale.z = 1.0
    msg.color.a = 1.0
    if len(mesh.triangles) == 0:
        return msg
    corners = mesh.triangles.reshape(-1)
    xyz = mesh.vertices_m[corners].astype(np.float64).tolist()
    if color_by == "label":
        table = np.zeros((max(int(mesh.vertex_labels.max(initial=0)) + 1, len(label_colors)), 3), np.uint8)
        table[: len(label_colors)] = label_colors
        table[len(label_colors):] = 128
        rgb = table[mesh.vertex_labels[corners]]
    else:
        rgb = mesh.vertex_colors[corners]
    rgbaf = np.concatenate([rgb.astype(np.float64) / 255.0,
                            np.where(mesh.vertex_predicted[corners], PREDICTED_ALPHA, 1.0)[:, None]], axis=1).tolist()
    msg.points = [Point(x=p[0], y=p[1], z=p[2]) for p in xyz]
    msg.colors = [ColorRGBA(r=c[0], g=c[1], b=c[2], a=c[3]) for c in rgbaf]
    return msg


def grid_to_occupancy(grid: TraversabilityGrid, stamp_ns: int, frame_id: str, z_m: float = 0.0) -> OccupancyGrid:
    msg = OccupancyGrid()
    msg.header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)
    msg.info.map_load_time = ns_to_stamp(stamp_ns)
    msg.info.resolution = float(grid.resolution_m)
    rows, cols = grid.cells.shape
    msg.info.width, msg.info.height = int(cols), int(rows)
    msg.info.origin.position.x, msg.info.origin.position.y = (float(v) for v in grid.origin_xy_m)
    msg.info.origin.position.z = float(z_m)
    msg.info.origin.orientation.w = 1.0
    msg.data = array.array("b", np.ascontiguousarray(grid.cells, dtype=np.int8).tobytes())
    return msg


# ----------------------------------------------------------------------------------- objects
OBJECT_BOX_NS = "object_boxes"
OBJECT_LABEL_NS = "object_labels"
OBJECT_BOX_ALPHA = 0.4
OBJECT_TEXT_HEIGHT_M = 0.15


def _time_or_zero(stamp_ns: int) -> Time:
    return ns_to_stamp(stamp_ns) if stamp_ns is not None and stamp_ns >= 0 else Time()


def object_to_slot(obj: MapObject, header: Header) -> ObjectSlot:
    """ObjectSlot of one extracted object (ids and counts clipped to the message's unsigned ranges)."""
    msg = ObjectSlot()
    msg.header = header
    msg.id = int(obj.id)
    msg.class_id = ObjectSlot.CLASS_UNKNOWN if obj.class_id < 0 else int(obj.class_id)
    msg.class_name = obj.class_name if obj.class_id >= 0 else ""
    msg.confidence = float(obj.class_confidence) if obj.class_id >= 0 else 0.0
    msg.slot_confidence = float(obj.slot_confidence)
    msg.centroid.x, msg.centroid.y, msg.centroid.z = (float(v) for v in obj.centroid_m)
    p, q = msg.box_pose.position, msg.box_pose.orientation
    p.x, p.y, p.z = (float(v) for v in obj.box_center_m)
    q.x, q.y, q.z, q.w = (float(v) for v in obj.box_quat_xyzw)
    msg.box_size.x, msg.box_size.y, msg.box_size.z = (float(v) for v in obj.box_size_m)
    msg.voxel_count = int(obj.voxel_count)
    msg.first_seen = _time_or_zero(obj.first_seen_ns)
    msg.last_seen = _time_or_zero(obj.last_seen_ns)
    msg.observed_fraction = float(obj.observed_fraction)
    return msg


def objects_to_msg(objects: list, stamp_ns: int, frame_id: str) -> ObjectSlotArray:
    """ObjectSlotArray of the map's objects, sorted by id; every slot carries the array's header."""
    header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)
    msg = ObjectSlotArray()
    msg.header = header
    msg.slots = [object_to_slot(o, header) for o in sorted(objects, key=lambda o: o.id)]
    return msg


def objects_to_markers(objects: list, stamp_ns: int, frame_id: str) -> MarkerArray:
    """RViz markers of the objects: a DELETEALL first (objects that vanished disappear), then per object
    an oriented CUBE (colour from its id, translucent) and a TEXT_VIEW_FACING "<class> #<id>" above it."""
    header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)
    clear = Marker()
    clear.header = header
    clear.action = Marker.DELETEALL
    markers = [clear]
    for obj in sorted(objects, key=lambda o: o.id):
        r, g, b = object_color(obj.id)
        box = Marker()
        box.header = header
        box.ns, box.id = OBJECT_BOX_NS, int(obj.id)
        box.type, box.action = Marker.CUBE, Marker.ADD
        box.pose.position.x, box.pose.position.y, box.pose.position.z = (float(v) for v in obj.box_center_m)
        q = box.pose.orientation
        q.x, q.y, q.z, q.w = (float(v) for v in obj.box_quat_xyzw)
        box.scale.x, box.scale.y, box.scale.z = (max(float(v), 1e-3) for v in obj.box_size_m)
        box.color = ColorRGBA(r=float(r), g=float(g), b=float(b), a=OBJECT_BOX_ALPHA)
        text = Marker()
        text.header = header
        text.ns, text.id = OBJECT_LABEL_NS, int(obj.id)
        text.type, text.action = Marker.TEXT_VIEW_FACING, Marker.ADD
        text.pose.position.x, text.pose.position.y = float(obj.box_center_m[0]), float(obj.box_center_m[1])
        text.pose.position.z = float(obj.box_center_m[2] + obj.box_size_m[2] / 2.0 + OBJECT_TEXT_HEIGHT_M)
        text.pose.orientation.w = 1.0
        text.scale.z = OBJECT_TEXT_HEIGHT_M
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        text.text = f"{obj.class_name if obj.class_id >= 0 else 'unknown'} #{obj.id}"
        markers += [box, text]
    return MarkerArray(markers=markers)
