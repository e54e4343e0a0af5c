"""Readers of public layouts on tiny fixtures written here; layout detection and its error."""

import logging

import cv2
import numpy as np
import pytest

from semantic_mapping.geometry.pose import T_from_quat_xyzw, look_at, quat_xyzw_from_T
from semantic_mapping.io import (
    BagTopics,
    BagWriter,
    ReplicaReader,
    ScanNetReader,
    SevenScenesReader,
    TumRgbdReader,
    UnknownLayoutError,
    detect_layout,
    open_dataset,
)
from semantic_mapping.io.public_datasets import NOMINAL_FRAME_PERIOD_NS, TUM_INTRINSICS
from semantic_mapping.types import CameraIntrinsics, Frame

H, W = 6, 8


def write_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[:, :, ::-1].copy())


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def rgb_image(value, height=H, width=W):
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = value, 2 * value, 255 - value
    return rgb


def write_matrix(path, T):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(" ".join(f"{v:.17g}" for v in row) for row in T) + "\n")


# ----------------------------------------------------------------------------- TUM RGB-D
def make_tum(root):
    """3 colour images, 2 with a depth partner 5 ms later; ground truth at 50 Hz moving along x."""
    rgb_stamps = ["1305031102.175304", "1305031102.211214", "1305031109.000000"]
    depth_stamps = ["1305031102.180304", "1305031102.216214"]
    for i, stamp in enumerate(rgb_stamps):
        write_rgb(root / "rgb" / f"{stamp}.png", rgb_image(10 * i))
    for i, stamp in enumerate(depth_stamps):
        depth = np.full((H, W), 5000 * (i + 1), np.uint16)  # 1 m and 2 m
        depth[0, 0] = 0
        write_png(root / "depth" / f"{stamp}.png", depth)
    header = "# timestamp filename\n# file: 'x.bag'\n# note\n"
    (root / "rgb.txt").write_text(header + "".join(f"{s} rgb/{s}.png\n" for s in rgb_stamps))
    (root / "depth.txt").write_text(header + "".join(f"{s} depth/{s}.png\n" for s in depth_stamps))
    lines = ["# ground truth trajectory\n# timestamp tx ty tz qx qy qz qw\n"]
    for k in range(6):
        t = 1305031102.16 + 0.02 * k
        q = T_from_quat_xyzw([0, 0, 0], [0.0, 0.0, np.sin(0.05 * k), np.cos(0.05 * k)])
        _, quat = quat_xyzw_from_T(q)
        quat_text = " ".join(f"{v:.9f}" for v in quat)
        lines.append(f"{t:.4f} {2.0 * (t - 1305031102.0):.6f} 0.5 -1.0 {quat_text}\n")
    (root / "groundtruth.txt").write_text("".join(lines))


def test_tum_reader(tmp_path):
    root = tmp_path / "rgbd_dataset_freiburg1_xyz"
    make_tum(root)
    reader = TumRgbdReader(root)
    assert reader.intrinsics == TUM_INTRINSICS["freiburg1"]
    assert len(reader) == 2 and reader.meta["skipped"] == {"no_depth": 1, "no_pose": 0}
    frames = list(reader)
    assert frames[0].stamp_ns == 1305031102_175304000
    np.testing.assert_array_equal(frames[1].rgb, rgb_image(10))
    assert frames[0].depth_m[1, 1] == pytest.approx(1.0) and frames[1].depth_m[1, 1] == pytest.approx(2.0)
    assert frames[0].depth_m[0, 0] == 0.0
    # pose interpolated at the colour stamp: x = 2 (t - t0), yaw = 2.5 rad/s * (t - 1305031102.16)
    dt = 0.175304 - 0.16
    np.testing.assert_allclose(frames[0].T_world_cam[:3, 3], [2 * 0.175304, 0.5, -1.0], atol=1e-6)
    yaw = np.arctan2(frames[0].T_world_cam[1, 0], frames[0].T_world_cam[0, 0])
    assert yaw == pytest.approx(2 * 0.05 * dt / 0.02, abs=1e-6)

    other = tmp_path / "my_sequence"
    make_tum(other)
    assert TumRgbdReader(other).intrinsics == TUM_INTRINSICS["freiburg3"]
    custom = CameraIntrinsics(500.0, 500.0, 320.0, 240.0, 640, 480)
    assert TumRgbdReader(other, intrinsics=custom).intrinsics == custom
    assert detect_layout(root) == "tum" and isinstance(open_dataset(root), TumRgbdReader)


# ----------------------------------------------------------------------------- ScanNet
def make_scannet(root):
    """Frames 0, 1, 2 (pose of 1 is -inf); colour at twice the depth resolution; ScanNet label ids."""
    K_depth = np.array([[7.0, 0, 3.5, 0], [0, 7.0, 2.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    write_matrix(root / "intrinsic" / "intrinsic_depth.txt", K_depth)
    write_matrix(root / "intrinsic" / "intrinsic_color.txt", K_depth * [[2], [2], [1], [1]])
    for n in range(3):
        rgb = rgb_image(40 * n, 2 * H, 2 * W)
        path = root / "color" / f"{n}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), rgb[:, :, ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 100])
        write_png(root / "depth" / f"{n}.png", np.full((H, W), 1500 + n, np.uint16))
        T = np.full((4, 4), -np.inf) if n == 1 else look_at([n, 0.0, 1.0], [n, 3.0, 1.0])
        write_matrix(root / "pose" / f"{n}.txt", T)
        labels = np.zeros((2 * H, 2 * W), np.uint16)
        labels[:, :W] = 1  # wall in ScanNet ids
        labels[:, W:] = 40 + n
        write_png(root / "label-filt" / f"{n}.png", labels)
        write_png(root / "instance-filt" / f"{n}.png", (labels > 1).astype(np.uint8) * 3)


def test_scannet_reader(tmp_path, caplog):
    root = tmp_path / "scene0000_00"
    make_scannet(root)
    with caplog.at_level(logging.INFO):
        reader = ScanNetReader(root)
        frames = list(reader)
    assert len(reader) == 2 and reader.meta["skipped"] == {"invalid_pose": 1}
    assert reader.intrinsics == CameraIntrinsics(7.0, 7.0, 3.5, 2.5, W, H)
    assert [f.stamp_ns for f in frames] == [0, 2 * NOMINAL_FRAME_PERIOD_NS]
    assert frames[1].rgb.shape == (H, W, 3)
    np.testing.assert_allclose(frames[1].rgb.astype(int), rgb_image(80).astype(int), atol=3)
    assert frames[1].depth_m[0, 0] == pytest.approx(1.502)
    np.testing.assert_allclose(frames[1].T_world_cam, look_at([2, 0.0, 1.0], [2, 3.0, 1.0]), atol=1e-12)
    assert frames[0].ground_truth is None  # ids 40+ do not fit our 20 classes and no mapping was given
    assert "do not fit the label space" in caplog.text and "skipped 1 frames" in caplog.text

    mapped = list(ScanNetReader(root, label_mapping={1: "wall", 40: "object", 42: 19}))
    labels = mapped[0].ground_truth.labels
    assert labels.shape == (H, W) and labels.dtype == np.int32
    assert np.all(labels[:, : W // 2] == 0) and np.all(labels[:, W // 2 :] == 19)
    assert np.all(mapped[1].ground_truth.labels[:, W // 2 :] == 19)
    np.testing.assert_array_equal(mapped[0].ground_truth.instances[:, W // 2 :], 3)
    assert detect_layout(root) == "scannet" and isinstance(open_dataset(root), ScanNetReader)


# ----------------------------------------------------------------------------- Replica
def make_replica(scene):
    seq = scene / "Sequence_1"
    poses = [look_at([0.5 * k, 1.0, 1.2], [0.0, 0.0, 0.8]) for k in range(3)]
    for k in range(3):
        write_rgb(seq / "rgb" / f"rgb_{k}.png", rgb_image(30 * k))
        write_png(seq / "depth" / f"depth_{k}.png", np.full((H, W), 2000 + k, np.uint16))
        write_png(seq / "semantic_class" / f"semantic_class_{k}.png", np.full((H, W), 31 + k, np.uint8))
    (seq / "traj_w_c.txt").write_text("".join(" ".join(f"{v:.17g}" for v in T.ravel()) + "\n" for T in poses))
    (scene / "Sequence_2").mkdir()
    return poses


def test_replica_reader(tmp_path):
    scene = tmp_path / "room_0"
    poses = make_replica(scene)
    reader = ReplicaReader(scene)
    assert reader.root.name == "Sequence_1" and len(reader) == 3
    K = reader.intrinsics  # hfov 90 degrees: fx = W / 2
    assert (K.width_px, K.height_px, K.cx, K.cy) == (W, H, 3.5, 2.5)
    assert K.fx == pytest.approx(4.0) and K.fy == pytest.approx(4.0)
    frames = list(reader)
    for k, frame in enumerate(frames):
        np.testing.assert_allclose(frame.T_world_cam, poses[k], atol=1e-12)
        assert frame.depth_m[3, 3] == pytest.approx(2.0 + 0.001 * k)
        assert frame.stamp_ns == k * NOMINAL_FRAME_PERIOD_NS
        assert frame.ground_truth is None
    mapping_file = tmp_path / "replica_to_ours.yaml"
    mapping_file.write_text("31: chair\n32: 9\n33: null\n")
    mapped = list(ReplicaReader(scene / "Sequence_1", label_mapping=mapping_file))
    assert [int(f.ground_truth.labels[0, 0]) for f in mapped] == [7, 9, 255]
    with pytest.raises(ValueError, match="available"):
        ReplicaReader(scene, sequence=5)
    assert detect_layout(scene) == "replica" and detect_layout(scene / "Sequence_1") == "replica"


# ----------------------------------------------------------------------------- 7-Scenes
def make_seven_scenes(scene):
    seq = scene / "seq-01"
    poses = [look_at([0.2 * n, -1.0, 0.0], [0.0, 1.0, 0.0], up=(0.0, -1.0, 0.0)) for n in range(2)]
    for n in range(2):
        write_rgb(seq / f"frame-{n:06d}.color.png", rgb_image(50 * n))
        depth = np.full((H, W), 1234, np.uint16)
        depth[0, 0], depth[0, 1] = 65535, 0
        write_png(seq / f"frame-{n:06d}.depth.png", depth)
        write_matrix(seq / f"frame-{n:06d}.pose.txt", poses[n])
    (scene / "seq-02").mkdir()
    return poses


def test_seven_scenes_reader(tmp_path):
    scene = tmp_path / "chess"
    poses = make_seven_scenes(scene)
    reader = SevenScenesReader(scene)
    assert reader.intrinsics == CameraIntrinsics(585.0, 585.0, 320.0, 240.0, 640, 480)
    frames = list(reader)
    assert len(frames) == 2
    assert frames[0].depth_m[0, 0] == 0.0 and frames[0].depth_m[0, 1] == 0.0  # 65535 and 0 are invalid
    assert frames[0].depth_m[2, 2] == pytest.approx(1.234)
    np.testing.assert_allclose(frames[1].T_world_cam, poses[1], atol=1e-12)
    np.testing.assert_array_equal(frames[1].rgb, rgb_image(50))
    assert detect_layout(scene) == "7scenes" and detect_layout(scene / "seq-01") == "7scenes"
    assert isinstance(open_dataset(scene / "seq-01"), SevenScenesReader)


# ----------------------------------------------------------------------------- detection
def test_detect_bags_and_unknown(tmp_path):
    K = CameraIntrinsics(7.0, 7.0, 3.5, 2.5, W, H)
    frame = Frame(rgb_image(1), np.ones((H, W), np.float32), K, np.eye(4), stamp_ns=10)
    with BagWriter(tmp_path / "bag", storage="mcap", topics=BagTopics()) as writer:
        writer.write(frame)
    assert detect_layout(tmp_path / "bag") == "rosbag2"
    mcap_file = next((tmp_path / "bag").glob("*.mcap"))
    assert detect_layout(mcap_file) == "rosbag2"
    (tmp_path / "loose").mkdir()
    mcap_file.rename(tmp_path / "loose" / "recording.mcap")
    assert len(open_dataset(tmp_path / "loose")) == 1  # a folder holding one bag file, no metadata.yaml

    junk = tmp_path / "junk"
    (junk / "images").mkdir(parents=True)
    (junk / "notes.txt").write_text("x")
    with pytest.raises(UnknownLayoutError) as err:
        detect_layout(junk)
    message = str(err.value)
    for expected in ("TUM RGB-D", "ScanNet", "Replica", "7-Scenes", "ROS 2 bag", "dataset.json"):
        assert expected in message  # the layouts tried
    assert "images/, notes.txt" in message  # what the folder holds
    with pytest.raises(FileNotFoundError):
        detect_layout(tmp_path / "missing")
