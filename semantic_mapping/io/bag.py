"""ROS 2 bags without a ROS install (rosbags): Frames to a bag, and Frames from any RGB-D bag.

Messages written per frame, all stamped with the frame's stamp (header and bag time):
colour sensor_msgs/Image rgb8, CameraInfo (plumb_bob, zero distortion), depth Image 16UC1
millimetres, pose geometry_msgs/PoseStamped (T_world_cam in frame 'map'), and when the frame
has them: labels Image mono8 (16UC1 when an id exceeds 255), confidence 32FC1, class
probabilities 32FC<C>, instance masks 16UC1. Images carry frame_id 'camera_color_optical_frame'.
"""

from __future__ import annotations

import logging
import os
import struct
from collections import defaultdict
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from semantic_mapping.geometry.pose import T_from_quat_xyzw, quat_xyzw_from_T
from semantic_mapping.io.frame_source import FrameSource
from semantic_mapping.io.image_codec import (
    array_to_image_fields,
    image_msg_to_array,
    to_depth_m,
    to_int_ids,
    to_rgb8,
)
from semantic_mapping.io.image_files import UINT16_MAX, depth_m_to_mm_uint16
from semantic_mapping.io.stamps import NS_PER_S, PoseTrajectory, associate_nearest
from semantic_mapping.types import CameraIntrinsics, Frame

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
POSE_WITH_COVARIANCE_STAMPED = "geometry_msgs/msg/PoseWithCovarianceStamped"
ODOMETRY = "nav_msgs/msg/Odometry"
POSE_TYPES = (POSE_STAMPED, POSE_WITH_COVARIANCE_STAMPED, ODOMETRY)

CAMERA_FRAME_ID = "camera_color_optical_frame"
WORLD_FRAME_ID = "map"
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
BAG_FORMAT_VERSION = 8  # rosbag2 metadata version written (Iron and newer; rosbags writes 8 or 9)

# image roles of a frame, in the order they are decoded
IMAGE_ROLES = ("rgb", "depth", "labels", "confidence", "probabilities", "masks")


@dataclass(frozen=True)
class BagTopics:
    """Topic names of the frame streams in a bag (defaults: DESIGN.md's ROS interface)."""

    rgb: str = "/rgb/image"
    camera_info: str = "/rgb/camera_info"
    depth: str = "/depth/image"
    pose: str = "/pose"
    labels: str = "/semantic/labels"
    confidence: str = "/semantic/confidence"
    probabilities: str = "/semantic/probabilities"
    masks: str = "/instances/masks"


class BagContentError(ValueError):
    """A bag lacks a topic the reader needs, or carries it with an unusable type."""


@lru_cache(maxsize=1)
def typestore():
    """The rosbags type store used to (de)serialise messages (ROS 2 Humble definitions)."""
    return get_typestore(Stores.ROS2_HUMBLE)


def _header(stamp_ns: int, frame_id: str):
    """std_msgs/Header with the stamp split into sec / nanosec."""
    types = typestore().types
    stamp = types["builtin_interfaces/msg/Time"](sec=int(stamp_ns // NS_PER_S), nanosec=int(stamp_ns % NS_PER_S))
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * NS_PER_S + int(header.stamp.nanosec)


def _cdr_header_stamp_ns(raw: bytes) -> int:
    """Header stamp of a serialised message that starts with a std_msgs/Header, without decoding it."""
    if len(raw) < 12 or raw[0] != 0 or raw[1] not in (0, 1):
        raise ValueError("message is not plain CDR (expected encapsulation 0x0000 or 0x0001)")
    sec, nanosec = struct.unpack_from("<iI" if raw[1] == 1 else ">iI", raw, 4)
    return sec * NS_PER_S + nanosec


def _image_msg(array: np.ndarray, encoding: str, header):
    """sensor_msgs/Image of an array whose dtype and channels match `encoding`."""
    fields = array_to_image_fields(array, encoding)
    fields["data"] = np.frombuffer(fields["data"], dtype=np.uint8)
    return typestore().types[IMAGE](header=header, **fields)


def _camera_info_msg(intrinsics: CameraIntrinsics, header):
    """sensor_msgs/CameraInfo of an undistorted pinhole camera (k, p, identity r, zero plumb_bob d)."""
    types = typestore().types
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return types[CAMERA_INFO](
        header=header,
        height=intrinsics.height_px,
        width=intrinsics.width_px,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=np.array([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]),
        r=np.eye(3).ravel(),
        p=np.array([fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def _pose_stamped_msg(T_world_cam: np.ndarray, header):
    """geometry_msgs/PoseStamped of a 4x4 pose (quaternion x, y, z, w)."""
    types = typestore().types
    translation_m, quat_xyzw = quat_xyzw_from_T(T_world_cam)
    position = types["geometry_msgs/msg/Point"](*map(float, translation_m))
    orientation = types["geometry_msgs/msg/Quaternion"](*map(float, quat_xyzw))
    return types[POSE_STAMPED](header=header, pose=types["geometry_msgs/msg/Pose"](position, orientation))


class BagWriter:
    """Writes Frames into a new ROS 2 bag (storage 'mcap' or 'sqlite3'); use as a context manager."""

    def __init__(
        self,
        path: os.PathLike,
        storage: str = "mcap",
        topics: BagTopics = BagTopics(),
        camera_frame_id: str = CAMERA_FRAME_ID,
        world_frame_id: str = WORLD_FRAME_ID,
    ):
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(
                f"{self.path} exists; rosbag2 writes a new folder, so choose a path that does not exist"
            )
        self.topics = topics
        self.camera_frame_id = camera_frame_id
        self.world_frame_id = world_frame_id
        self._writer = Writer(self.path, version=BAG_FORMAT_VERSION, storage_plugin=STORAGES[storage])
        self._writer.open()
        self._connections: dict[str, object] = {}
        self.frames_written = 0

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _write(self, topic: str, msgtype: str, msg, stamp_ns: int) -> None:
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=typestore())
        self._writer.write(self._connections[topic], stamp_ns, typestore().serialize_cdr(msg, msgtype))

    def write(self, frame: Frame) -> None:
        """Write one frame's messages, bag time = header stamp = frame.stamp_ns."""
        if self._writer is None:
            raise RuntimeError(f"BagWriter for {self.path} is closed")
        stamp_ns = int(frame.stamp_ns)
        if stamp_ns < 0:
            raise ValueError(f"stamp_ns must be >= 0, got {stamp_ns}")
        topics = self.topics
        camera = _header(stamp_ns, self.camera_frame_id)
        self._write(topics.rgb, IMAGE, _image_msg(frame.rgb, "rgb8", camera), stamp_ns)
        self._write(topics.camera_info, CAMERA_INFO, _camera_info_msg(frame.intrinsics, camera), stamp_ns)
        depth_mm, too_far = depth_m_to_mm_uint16(frame.depth_m)
        if too_far:
            log.warning("frame at %d ns: %d depth pixels beyond 65.535 m written as 0 (invalid)", stamp_ns, too_far)
        self._write(topics.depth, IMAGE, _image_msg(depth_mm, "16UC1", camera), stamp_ns)
        pose_msg = _pose_stamped_msg(frame.T_world_cam, _header(stamp_ns, self.world_frame_id))
        self._write(topics.pose, POSE_STAMPED, pose_msg, stamp_ns)
        if frame.labels is not None:
            labels = self._checked_ids(frame.labels, "labels")
            encoding, dtype = ("mono8", np.uint8) if labels.max(initial=0) <= 255 else ("16UC1", np.uint16)
            self._write(topics.labels, IMAGE, _image_msg(labels.astype(dtype), encoding, camera), stamp_ns)
        if frame.label_confidence is not None:
            confidence = frame.label_confidence.astype(np.float32)
            self._write(topics.confidence, IMAGE, _image_msg(confidence, "32FC1", camera), stamp_ns)
        if frame.class_probs is not None:
            probs = frame.class_probs.astype(np.float32)
            self._write(topics.probabilities, IMAGE, _image_msg(probs, f"32FC{probs.shape[2]}", camera), stamp_ns)
        if frame.instance_masks is not None:
            masks = self._checked_ids(frame.instance_masks, "instance ids").astype(np.uint16)
            self._write(topics.masks, IMAGE, _image_msg(masks, "16UC1", camera), stamp_ns)
        self.frames_written += 1

    @staticmethod
    def _checked_ids(ids: np.ndarray, what: str) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() > UINT16_MAX):
            raise ValueError(
                f"{what} must lie in 0..{UINT16_MAX} to be written as an image, got {ids.min()}..{ids.max()}"
            )
        return ids

    def close(self) -> None:
        """Finish the bag (writes metadata.yaml); later calls do nothing."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _topic_table(reader: Reader) -> list[str]:
    """One line per topic: name, type, message count (columns aligned)."""
    rows = sorted((topic, info.msgtype or "?", info.msgcount) for topic, info in reader.topics.items())
    topic_width = max((len(topic) for topic, _, _ in rows), default=0)
    type_width = max((len(msgtype) for _, msgtype, _ in rows), default=0)
    return [f"  {topic:<{topic_width}}  {msgtype:<{type_width}}  ({n} messages)" for topic, msgtype, n in rows]


def describe_bag(path: os.PathLike) -> str:
    """Human-readable summary of a bag: duration, and each topic with its type and message count."""
    with Reader(Path(path)) as reader:
        duration_s = reader.duration / NS_PER_S if reader.message_count else 0.0
        lines = [f"{path}: {reader.message_count} messages, {duration_s:.3f} s, {len(reader.topics)} topics"]
        lines += _topic_table(reader)
    return "\n".join(lines)


def _span(stamps_ns) -> str:
    """'[first, last] s' of a list of stamps, for error messages."""
    if len(stamps_ns) == 0:
        return "(none)"
    return f"[{min(stamps_ns) / NS_PER_S:.3f}, {max(stamps_ns) / NS_PER_S:.3f}] s"


def _pose_msg_to_T(msg, msgtype: str) -> Optional[np.ndarray]:
    """T_world_pose [4, 4] of a pose message; None when its quaternion is zero or not finite."""
    pose = msg.pose if msgtype == POSE_STAMPED else msg.pose.pose
    q, p = pose.orientation, pose.position
    quat_xyzw = np.array([q.x, q.y, q.z, q.w])
    translation_m = np.array([p.x, p.y, p.z])
    if not (np.all(np.isfinite(quat_xyzw)) and np.all(np.isfinite(translation_m))) or np.linalg.norm(quat_xyzw) < 1e-9:
        return None
    return T_from_quat_xyzw(translation_m, quat_xyzw / np.linalg.norm(quat_xyzw))


class BagFrameReader(FrameSource):
    """Frames from a ROS 2 bag (folder with metadata.yaml, or a .mcap / .db3 file).

    Colour images drive the frames: each is paired with the depth (required), labels,
    confidence, probabilities and masks images whose header stamps are nearest within
    `max_stamp_diff_s` (exact stamps always pair), and gets the pose interpolated at its stamp
    from the pose topic (PoseStamped, PoseWithCovarianceStamped or Odometry, detected from the
    bag; gaps over `max_pose_gap_s` are not bridged). `T_pose_cam` is the camera optical frame
    in the pose's child frame when the pose topic tracks a body rather than the camera.
    Intrinsics come from the first CameraInfo message, or `intrinsics=` when the bag has none.
    Colour images that cannot be completed are skipped and counted in `meta['skipped']`.
    """

    layout = "rosbag2"

    def __init__(
        self,
        path: os.PathLike,
        topics: BagTopics = BagTopics(),
        intrinsics: Optional[CameraIntrinsics] = None,
        T_pose_cam: Optional[np.ndarray] = None,
        max_stamp_diff_s: float = 0.02,
        max_pose_gap_s: float = 0.5,
    ):
        self.path = Path(path)
        self.topics = topics
        self.T_pose_cam = np.eye(4) if T_pose_cam is None else np.asarray(T_pose_cam, dtype=np.float64)
        with Reader(self.path) as reader:
            self._role_topics = self._check_topics(reader, intrinsics is not None)
            self.pose_type = next(c.msgtype for c in reader.connections if c.topic == topics.pose)
            stamps, trajectory, camera_info, invalid_poses = self._scan(reader, max_pose_gap_s, intrinsics is None)
        self.intrinsics = intrinsics or self._intrinsics_from(camera_info)
        self._plan, skipped = self._plan_frames(stamps, trajectory, int(max_stamp_diff_s * NS_PER_S))
        if any(skipped.values()) or invalid_poses:
            log.info("%s: skipped colour images %s; invalid pose messages: %d", self.path, skipped, invalid_poses)
        self.meta = {
            "layout": self.layout,
            "source": str(self.path),
            "topics": asdict(self.topics),
            "pose_type": self.pose_type,
            "skipped": {**skipped, "invalid_pose_messages": invalid_poses},
        }

    # -------------------------------------------------------------------------- setup
    def _check_topics(self, reader: Reader, have_intrinsics: bool) -> dict[str, str]:
        """{image role: topic} of the image streams present; BagContentError when a required one is missing."""
        types_by_topic: dict[str, set] = defaultdict(set)
        for connection in reader.connections:
            types_by_topic[connection.topic].add(connection.msgtype)
        problems = []

        def check(topic: str, allowed: tuple, what: str, required: bool) -> bool:
            found = types_by_topic.get(topic)
            if not found:
                if required:
                    problems.append(f"no {what} topic {topic!r} ({' or '.join(allowed)})")
                return False
            if not found <= set(allowed):
                problems.append(f"{what} topic {topic!r} has type {sorted(found)}, expected {' or '.join(allowed)}")
                return False
            return True

        t = self.topics
        role_topics = {}
        for role, topic, required in (
            ("rgb", t.rgb, True),
            ("depth", t.depth, True),
            ("labels", t.labels, False),
            ("confidence", t.confidence, False),
            ("probabilities", t.probabilities, False),
            ("masks", t.masks, False),
        ):
            if check(topic, (IMAGE,), f"{role} image", required):
                role_topics[role] = topic
        check(t.pose, POSE_TYPES, "pose", True)
        if not have_intrinsics:
            check(t.camera_info, (CAMERA_INFO,), "camera info", True)
        if problems:
            hints = []
            if t.pose not in types_by_topic and any(topic in types_by_topic for topic in ("/tf", "/tf_static")):
                hints.append(
                    "poses from /tf are not read here; record a PoseStamped, PoseWithCovarianceStamped or "
                    "Odometry topic"
                )
            image_topics = sorted(topic for topic, types in types_by_topic.items() if IMAGE in types)
            hints.append(
                "select the bag's topics with topics=BagTopics(rgb=..., depth=..., pose=..., camera_info=...)"
                + (f"; its Image topics are {image_topics}" if image_topics else "")
                + " (or pass intrinsics= when it has no CameraInfo)"
            )
            raise BagContentError(
                f"bag {self.path} cannot be read as RGB-D frames:\n"
                + "".join(f"  - {problem}\n" for problem in problems)
                + "The bag holds:\n"
                + "\n".join(_topic_table(reader) or ["  (no topics)"])
                + "\n"
                + "\n".join(f"Fix: {hint}" for hint in hints)
            )
        return role_topics

    def _scan(self, reader: Reader, max_pose_gap_s: float, read_camera_info: bool):
        """(header stamps per image role, pose trajectory, first CameraInfo or None, invalid pose count)."""
        role_of_topic = {topic: role for role, topic in self._role_topics.items()}
        wanted = set(role_of_topic) | {self.topics.pose} | ({self.topics.camera_info} if read_camera_info else set())
        stamps: dict[str, list[int]] = {role: [] for role in self._role_topics}
        pose_stamps, poses, invalid_poses = [], [], 0
        camera_info = None
        connections = [c for c in reader.connections if c.topic in wanted]
        for connection, _, raw in reader.messages(connections=connections):
            if connection.topic in role_of_topic:
                stamps[role_of_topic[connection.topic]].append(_cdr_header_stamp_ns(raw))
            elif connection.topic == self.topics.pose:
                msg = typestore().deserialize_cdr(raw, connection.msgtype)
                T_world_pose = _pose_msg_to_T(msg, connection.msgtype)
                if T_world_pose is None:
                    invalid_poses += 1
                    continue
                pose_stamps.append(_stamp_ns(msg.header))
                poses.append(T_world_pose)
            elif camera_info is None:
                camera_info = typestore().deserialize_cdr(raw, connection.msgtype)
        trajectory = PoseTrajectory(pose_stamps, np.array(poses).reshape(-1, 4, 4), int(max_pose_gap_s * NS_PER_S))
        return stamps, trajectory, camera_info, invalid_poses

    def _intrinsics_from(self, camera_info) -> CameraIntrinsics:
        if camera_info is None:
            raise BagContentError(
                f"bag {self.path}: topic {self.topics.camera_info!r} has no messages; pass intrinsics= instead"
            )
        if np.any(np.asarray(camera_info.d) != 0.0):
            log.warning(
                "%s: camera info has distortion %s (%s); images are used as if undistorted",
                self.path,
                list(camera_info.d),
                camera_info.distortion_model,
            )
        K = np.asarray(camera_info.k, dtype=np.float64).reshape(3, 3)
        return CameraIntrinsics.from_K(K, camera_info.width, camera_info.height)

    def _plan_frames(self, stamps, trajectory: PoseTrajectory, max_diff_ns: int) -> tuple[list, dict]:
        """([(stamp_ns, T_world_cam, {role: image stamp})] of the colour images that make frames, skip counts)."""
        rgb_stamps = np.unique(np.array(stamps["rgb"], dtype=np.int64))
        partners = {
            role: (np.array(role_stamps, dtype=np.int64), associate_nearest(rgb_stamps, role_stamps, max_diff_ns))
            for role, role_stamps in stamps.items()
            if role != "rgb"
        }
        plan = []
        skipped = {"no_depth": 0, "no_pose": 0}
        for i, stamp_ns in enumerate(map(int, rgb_stamps)):
            if i not in partners["depth"][1]:
                skipped["no_depth"] += 1
                continue
            T_world_pose = trajectory.at(stamp_ns)
            if T_world_pose is None:
                skipped["no_pose"] += 1
                continue
            parts = {"rgb": stamp_ns}
            for role, (role_stamps, pairs) in partners.items():
                if i in pairs and (role != "confidence" or "labels" in parts):
                    parts[role] = int(role_stamps[pairs[i]])
            plan.append((stamp_ns, T_world_pose @ self.T_pose_cam, parts))
        if len(rgb_stamps) and not plan:
            raise BagContentError(
                f"bag {self.path}: none of its {len(rgb_stamps)} colour images makes a frame ({skipped}). "
                f"Colour stamps span {_span(rgb_stamps)}, depth {_span(stamps['depth'])}, poses "
                f"{_span(trajectory.stamps_ns)}; widen max_stamp_diff_s / max_pose_gap_s or check the topics"
            )
        return plan, skipped

    # -------------------------------------------------------------------------- frames
    def __len__(self) -> int:
        return len(self._plan)

    def __iter__(self) -> Iterator[Frame]:
        wanted = {  # (role, image stamp) -> frame index
            (role, part_stamp): index
            for index, (_, _, parts) in enumerate(self._plan)
            for role, part_stamp in parts.items()
        }
        role_of_topic = {topic: role for role, topic in self._role_topics.items()}
        collected: dict[int, dict[str, bytes]] = defaultdict(dict)
        complete: set[int] = set()
        next_index = 0
        with Reader(self.path) as reader:
            connections = [c for c in reader.connections if c.topic in role_of_topic]
            for connection, _, raw in reader.messages(connections=connections):
                index = wanted.pop((role_of_topic[connection.topic], _cdr_header_stamp_ns(raw)), None)
                if index is None:
                    continue
                collected[index][role_of_topic[connection.topic]] = raw
                if len(collected[index]) == len(self._plan[index][2]):
                    complete.add(index)
                while next_index in complete:  # yield in stamp order
                    complete.discard(next_index)
                    yield self._decode(next_index, collected.pop(next_index))
                    next_index += 1
        if next_index != len(self._plan):
            raise RuntimeError(
                f"bag {self.path} changed while reading: frame {next_index} of {len(self._plan)} is incomplete"
            )

    def _decode_image(self, raw: bytes, role: str) -> tuple[str, np.ndarray]:
        msg = typestore().deserialize_cdr(raw, IMAGE)
        try:
            array = image_msg_to_array(msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data)
        except ValueError as exc:
            raise ValueError(f"bag {self.path}, {role} topic {self._role_topics[role]!r}: {exc}") from None
        return msg.encoding, array

    def _decode(self, index: int, raws: dict[str, bytes]) -> Frame:
        stamp_ns, T_world_cam, _ = self._plan[index]
        arrays = {role: self._decode_image(raws[role], role) for role in IMAGE_ROLES if role in raws}
        size = (self.intrinsics.height_px, self.intrinsics.width_px)
        for role, (encoding, array) in arrays.items():
            if array.shape[:2] != size:
                raise ValueError(
                    f"bag {self.path}: {role} image at {stamp_ns} ns is {array.shape[1]}x{array.shape[0]}, the camera "
                    f"info says {size[1]}x{size[0]}; depth and semantics must be registered to the colour image "
                    f"(e.g. record the aligned depth topic)"
                )
        labels = confidence = probs = masks = None
        if "labels" in arrays:
            labels = to_int_ids(arrays["labels"][1], arrays["labels"][0])
        if "confidence" in arrays:
            confidence = self._float_image(arrays["confidence"], "confidence", 1)
        if "probabilities" in arrays:
            probs = self._float_image(arrays["probabilities"], "probabilities", None)
        if "masks" in arrays:
            masks = to_int_ids(arrays["masks"][1], arrays["masks"][0])
        return Frame(
            rgb=to_rgb8(arrays["rgb"][1], arrays["rgb"][0]),
            depth_m=to_depth_m(arrays["depth"][1], arrays["depth"][0]),
            intrinsics=self.intrinsics,
            T_world_cam=T_world_cam.copy(),
            stamp_ns=stamp_ns,
            class_probs=probs,
            labels=labels,
            label_confidence=confidence,
            instance_masks=masks,
        )

    def _float_image(self, encoded: tuple[str, np.ndarray], role: str, channels: Optional[int]) -> np.ndarray:
        """float32 [H, W] (channels=1) or [H, W, C] of a 32FC<C> image; ValueError for other encodings."""
        encoding, array = encoded
        if not encoding.startswith("32FC") or (channels is not None and encoding != f"32FC{channels}"):
            expected = f"32FC{channels}" if channels else "32FC<C>"
            topic = self._role_topics[role]
            raise ValueError(f"bag {self.path}: {role} topic {topic!r} is {encoding!r}, expected {expected}")
        return array if channels == 1 or array.ndim == 3 else array[:, :, None]
