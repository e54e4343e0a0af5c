"""ROS 2 bags through rosbags (mcap and sqlite3), bags with other topics and pose types, image codec."""

import subprocess
import sys

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from semantic_mapping.geometry.pose import T_from_quat_xyzw, interpolate_pose, look_at, quat_xyzw_from_T
from semantic_mapping.io import BagContentError, BagFrameReader, BagTopics, BagWriter, describe_bag
from semantic_mapping.io.bag import typestore
from semantic_mapping.io.image_codec import array_to_image_fields, image_msg_to_array, to_depth_m, to_rgb8
from semantic_mapping.types import CameraIntrinsics, Frame

H, W, C = 6, 8, 4
K = CameraIntrinsics(7.5, 7.0, 3.5, 2.5, W, H)
T0 = 1_700_000_000_000_000_000


def make_frame(rng, index):
    depth_m = np.round(rng.uniform(0.3, 6.0, (H, W)), 3).astype(np.float32)
    depth_m[0, 0] = 0.0
    probs = rng.random((H, W, C)).astype(np.float32)
    labels = rng.integers(0, 20, (H, W)).astype(np.int32)
    labels[0, 0] = 255
    return Frame(
        rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        depth_m=depth_m,
        intrinsics=K,
        T_world_cam=look_at([index, -2.0, 1.5], [0.0, 0.0, 0.5]),
        stamp_ns=T0 + index * 100_000_000,
        class_probs=probs / probs.sum(axis=2, keepdims=True),
        labels=labels,
        label_confidence=rng.random((H, W)).astype(np.float32),
        instance_masks=rng.integers(0, 2000, (H, W)).astype(np.int32),
    )


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_round_trip(tmp_path, storage):
    rng = np.random.default_rng(0)
    frames = [make_frame(rng, i) for i in range(3)]
    with BagWriter(tmp_path / "bag", storage=storage) as writer:
        for frame in frames:
            writer.write(frame)

    reader = BagFrameReader(tmp_path / "bag")
    assert len(reader) == 3 and reader.intrinsics == K and reader.pose_type == "geometry_msgs/msg/PoseStamped"
    for src, got in zip(frames, reader):
        assert got.stamp_ns == src.stamp_ns
        np.testing.assert_array_equal(got.rgb, src.rgb)
        np.testing.assert_allclose(got.depth_m, src.depth_m, atol=1e-3)
        np.testing.assert_allclose(got.T_world_cam, src.T_world_cam, atol=1e-9)
        np.testing.assert_array_equal(got.labels, src.labels)
        np.testing.assert_array_equal(got.label_confidence, src.label_confidence)
        np.testing.assert_array_equal(got.class_probs, src.class_probs)
        np.testing.assert_array_equal(got.instance_masks, src.instance_masks)

    with Reader(tmp_path / "bag") as raw_reader:
        types = {c.topic: c.msgtype for c in raw_reader.connections}
        assert types == {
            "/rgb/image": "sensor_msgs/msg/Image",
            "/rgb/camera_info": "sensor_msgs/msg/CameraInfo",
            "/depth/image": "sensor_msgs/msg/Image",
            "/pose": "geometry_msgs/msg/PoseStamped",
            "/semantic/labels": "sensor_msgs/msg/Image",
            "/semantic/confidence": "sensor_msgs/msg/Image",
            "/semantic/probabilities": "sensor_msgs/msg/Image",
            "/instances/masks": "sensor_msgs/msg/Image",
        }
        encodings = {}
        for connection, bag_stamp, raw in raw_reader.messages():
            msg = typestore().deserialize_cdr(raw, connection.msgtype)
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            assert stamp == bag_stamp
            expected_frame = "map" if connection.topic == "/pose" else "camera_color_optical_frame"
            assert msg.header.frame_id == expected_frame
            if connection.msgtype == "sensor_msgs/msg/Image":
                encodings[connection.topic] = msg.encoding
            if connection.msgtype == "sensor_msgs/msg/CameraInfo":
                assert msg.distortion_model == "plumb_bob" and (msg.width, msg.height) == (W, H)
                np.testing.assert_array_equal(msg.p, [7.5, 0, 3.5, 0, 0, 7.0, 2.5, 0, 0, 0, 1, 0])
    assert encodings == {
        "/rgb/image": "rgb8",
        "/depth/image": "16UC1",
        "/semantic/labels": "mono8",
        "/semantic/confidence": "32FC1",
        "/semantic/probabilities": "32FC4",
        "/instances/masks": "16UC1",
    }
    summary = describe_bag(tmp_path / "bag")
    assert "/rgb/camera_info" in summary and "sensor_msgs/msg/CameraInfo" in summary and "(3 messages)" in summary


def _header(stamp_ns, frame_id):
    types = typestore().types
    time = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    return types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def _image(array, encoding, stamp_ns):
    fields = array_to_image_fields(array, encoding)
    fields["data"] = np.frombuffer(fields["data"], np.uint8)
    return typestore().types["sensor_msgs/msg/Image"](header=_header(stamp_ns, "cam"), **fields)


def _odometry(T, stamp_ns):
    types = typestore().types
    t, q = quat_xyzw_from_T(T)
    position, orientation = types["geometry_msgs/msg/Point"](*t), types["geometry_msgs/msg/Quaternion"](*q)
    pose = types["geometry_msgs/msg/Pose"](position, orientation)
    zero = types["geometry_msgs/msg/Vector3"](0.0, 0.0, 0.0)
    twist = types["geometry_msgs/msg/Twist"](zero, zero)
    return types["nav_msgs/msg/Odometry"](
        header=_header(stamp_ns, "odom"),
        child_frame_id="base_link",
        pose=types["geometry_msgs/msg/PoseWithCovariance"](pose, np.zeros(36)),
        twist=types["geometry_msgs/msg/TwistWithCovariance"](twist, np.zeros(36)),
    )


def write_foreign_bag(path, with_pose=True):
    """A bag as a robot records it: bgr8 colour, 32FC1 depth 5 ms late, Odometry at other stamps, no CameraInfo."""
    poses = {
        T0 + k * 60_000_000: T_from_quat_xyzw([0.6 * k, 0.0, 0.0], [0, 0, np.sin(0.1 * k), np.cos(0.1 * k)])
        for k in range(4)
    }
    image_stamps = [T0 + 30_000_000, T0 + 150_000_000]
    ts = typestore()
    writer = Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3)
    writer.open()
    rgb_conn = writer.add_connection("/camera/color/image_raw", "sensor_msgs/msg/Image", typestore=ts)
    depth_conn = writer.add_connection("/camera/aligned_depth/image_raw", "sensor_msgs/msg/Image", typestore=ts)
    odom_conn = writer.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=ts) if with_pose else None
    messages = []
    for i, stamp in enumerate(image_stamps):
        bgr = np.zeros((H, W, 3), np.uint8)
        bgr[..., 0] = 200 + i  # blue
        depth = np.full((H, W), 1.25 + i, np.float32)
        depth[0, 0] = np.nan
        messages.append((stamp, rgb_conn, _image(bgr, "bgr8", stamp), "sensor_msgs/msg/Image"))
        depth_stamp = stamp + 5_000_000
        messages.append((depth_stamp, depth_conn, _image(depth, "32FC1", depth_stamp), "sensor_msgs/msg/Image"))
    if with_pose:
        messages += [(stamp, odom_conn, _odometry(T, stamp), "nav_msgs/msg/Odometry") for stamp, T in poses.items()]
    for stamp, conn, msg, msgtype in sorted(messages, key=lambda m: m[0]):
        writer.write(conn, stamp, ts.serialize_cdr(msg, msgtype))
    writer.close()
    return poses, image_stamps


def test_foreign_bag_topics_pairing_and_pose_interpolation(tmp_path):
    poses, image_stamps = write_foreign_bag(tmp_path / "robot")
    topics = BagTopics(rgb="/camera/color/image_raw", depth="/camera/aligned_depth/image_raw", pose="/odom")
    T_base_cam = look_at([0.1, 0.0, 0.3], [1.1, 0.0, 0.3])
    reader = BagFrameReader(tmp_path / "robot", topics=topics, intrinsics=K, T_pose_cam=T_base_cam)
    assert reader.pose_type == "nav_msgs/msg/Odometry"
    frames = list(reader)
    assert [f.stamp_ns for f in frames] == image_stamps
    stamps = sorted(poses)
    for frame, stamp, k in zip(frames, image_stamps, (0, 2)):  # each image lies half-way between poses k, k+1
        expected = interpolate_pose(poses[stamps[k]], poses[stamps[k + 1]], 0.5) @ T_base_cam
        np.testing.assert_allclose(frame.T_world_cam, expected, atol=1e-9)
    assert np.all(frames[1].rgb[..., 2] == 201) and np.all(frames[1].rgb[..., :2] == 0)  # bgr8 -> rgb
    assert frames[0].depth_m[0, 0] == 0.0 and frames[0].depth_m[1, 1] == pytest.approx(1.25)
    assert frames[0].labels is None and frames[0].class_probs is None

    with pytest.raises(BagContentError, match="none of its 2 colour images"):
        BagFrameReader(tmp_path / "robot", topics=topics, intrinsics=K, max_stamp_diff_s=0.001)


def test_missing_topics_error_lists_the_bag(tmp_path):
    write_foreign_bag(tmp_path / "robot", with_pose=False)
    with pytest.raises(BagContentError) as err:
        BagFrameReader(tmp_path / "robot")
    message = str(err.value)
    for expected in (
        "no rgb image topic '/rgb/image'",
        "no depth image topic '/depth/image'",
        "no pose topic '/pose'",
        "no camera info topic '/rgb/camera_info'",
        "/camera/color/image_raw          sensor_msgs/msg/Image  (2 messages)",  # the bag's topics
        "topics=BagTopics(",
    ):
        assert expected in message


# ----------------------------------------------------------------------------- image codec
CODEC_CASES = [
    ("rgb8", np.uint8, 3),
    ("bgr8", np.uint8, 3),
    ("rgba8", np.uint8, 4),
    ("bgra8", np.uint8, 4),
    ("mono8", np.uint8, 1),
    ("mono16", np.uint16, 1),
    ("8UC1", np.uint8, 1),
    ("16UC1", np.uint16, 1),
    ("32FC1", np.float32, 1),
    ("32SC1", np.int32, 1),
    ("64FC1", np.float64, 1),
    ("32FC20", np.float32, 20),
]


def _random_image(rng, dtype, channels, height=5, width=7):
    shape = (height, width) if channels == 1 else (height, width, channels)
    if np.issubdtype(dtype, np.floating):
        return rng.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("encoding,dtype,channels", CODEC_CASES)
def test_codec_round_trip_padding_and_big_endian(encoding, dtype, channels):
    rng = np.random.default_rng(3)
    image = _random_image(rng, dtype, channels)
    fields = array_to_image_fields(image, encoding)
    assert fields["step"] == 7 * channels * np.dtype(dtype).itemsize and fields["is_bigendian"] == 0
    decoded = image_msg_to_array(**fields)
    assert decoded.dtype == np.dtype(dtype) and decoded.shape == image.shape
    np.testing.assert_array_equal(decoded, image)

    # padded rows, with garbage in the padding, big-endian data
    row_bytes = fields["step"]
    step = row_bytes + 5
    rows_be = image.astype(np.dtype(dtype).newbyteorder(">")).reshape(5, -1).view(np.uint8)
    padded = np.full((5, step), 0xAB, np.uint8)
    padded[:, :row_bytes] = rows_be
    decoded = image_msg_to_array(encoding, 5, 7, step, True, padded.tobytes())
    np.testing.assert_array_equal(decoded, image)
    assert decoded.dtype.isnative and decoded.flags.writeable


def test_codec_colour_depth_and_errors():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((2, 3, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_rgb8(rgb[:, :, ::-1], "bgr8"), rgb)
    np.testing.assert_array_equal(to_rgb8(bgra, "bgra8"), rgb)
    np.testing.assert_array_equal(to_rgb8(bgra[:, :, [2, 1, 0, 3]], "rgba8"), rgb)
    np.testing.assert_array_equal(to_rgb8(rgb[:, :, 0], "mono8"), np.repeat(rgb[:, :, :1], 3, axis=2))
    np.testing.assert_allclose(to_depth_m(np.array([[0, 1500]], np.uint16), "16UC1"), [[0.0, 1.5]])
    depth_m = to_depth_m(np.array([[np.nan, -1.0, np.inf, 2.0]], np.float32), "32FC1")
    np.testing.assert_array_equal(depth_m, [[0, 0, 0, 2]])

    with pytest.raises(ValueError, match="step 10 is smaller"):
        image_msg_to_array("16UC1", 2, 7, 10, False, bytes(28))
    with pytest.raises(ValueError, match="needs 28"):
        image_msg_to_array("16UC1", 2, 7, 14, False, bytes(27))
    with pytest.raises(ValueError, match="unsupported image encoding 'yuv422'"):
        image_msg_to_array("yuv422", 2, 2, 4, False, bytes(8))
    with pytest.raises(TypeError, match="astype"):
        array_to_image_fields(np.zeros((2, 2), np.int32), "16UC1")
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        array_to_image_fields(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="depth image encoding"):
        to_depth_m(np.zeros((2, 2), np.uint8), "mono8")


def test_library_import_does_not_pull_in_rclpy():
    code = "import sys, semantic_mapping.io; assert 'rclpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
