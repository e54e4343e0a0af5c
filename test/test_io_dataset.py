"""Our dataset folder: write -> read round trip, layout on disk, and the errors it gives."""

import json

import numpy as np
import pytest

from semantic_mapping.geometry.pose import look_at
from semantic_mapping.io import DatasetFolderReader, DatasetWriter, detect_layout, open_dataset
from semantic_mapping.types import CameraIntrinsics, Frame, FrameGroundTruth

H, W, C = 6, 8, 5
K = CameraIntrinsics(7.5, 7.0, 3.5, 2.5, W, H)


def make_frame(rng, index, full=True, label_max=19):
    depth_m = rng.uniform(0.3, 6.0, (H, W)).astype(np.float32)
    depth_m[0, :3] = 0.0
    probs = rng.random((H, W, C)).astype(np.float32)
    probs /= probs.sum(axis=2, keepdims=True)
    labels = rng.integers(0, label_max + 1, (H, W)).astype(np.int32)
    labels[1, 1] = 255
    return Frame(
        rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        depth_m=depth_m,
        intrinsics=K,
        T_world_cam=look_at([0.3 * index, -2.0, 1.5], [0.0, 0.0, 0.5]),
        stamp_ns=1_700_000_000_123_456_789 + index * 33_333_333,
        class_probs=probs if full else None,
        labels=labels if full else None,
        label_confidence=rng.uniform(0.05, 1.0, (H, W)).astype(np.float32) if full else None,
        instance_masks=rng.integers(0, 300, (H, W)).astype(np.int32) if full else None,
        ground_truth=FrameGroundTruth(
            labels=rng.integers(0, 20, (H, W)).astype(np.int32),
            instances=rng.integers(0, 1000, (H, W)).astype(np.int32),
            depth_m=depth_m + np.float32(0.01),
        )
        if full
        else None,
    )


def test_round_trip_every_stream(tmp_path):
    rng = np.random.default_rng(0)
    frames = [make_frame(rng, i) for i in range(3)]
    meta = {"scene": "unit", "seed": 0, "nested": {"noise": [0.1, 0.2]}}
    out = tmp_path / "ds"
    with DatasetWriter(out, K, meta=meta) as writer:
        for frame in frames:
            writer.write(frame)
        (writer.ground_truth_dir / "mesh.ply").write_text("ply\n")
        assert not (out / "dataset.json").exists()  # written on close only

    reader = DatasetFolderReader(out)
    assert len(reader) == 3 and reader.intrinsics == K and reader.meta == meta
    assert (reader.ground_truth_dir / "mesh.ply").is_file()
    assert not list(out.glob(".*.tmp"))
    read = list(reader)
    for src, got in zip(frames, read):
        assert got.stamp_ns == src.stamp_ns
        np.testing.assert_allclose(got.T_world_cam, src.T_world_cam, atol=1e-9)
        np.testing.assert_array_equal(got.rgb, src.rgb)
        assert got.depth_m.dtype == np.float32
        np.testing.assert_allclose(got.depth_m, src.depth_m, atol=1e-3)
        assert np.all(got.depth_m[0, :3] == 0.0)
        np.testing.assert_array_equal(got.labels, src.labels)
        assert got.labels.dtype == np.int32
        np.testing.assert_allclose(got.label_confidence, src.label_confidence, atol=1.0 / 65535)
        np.testing.assert_allclose(got.class_probs, src.class_probs, atol=2e-3)
        np.testing.assert_allclose(got.class_probs.sum(axis=2), 1.0, atol=1e-5)
        np.testing.assert_array_equal(got.instance_masks, src.instance_masks)
        np.testing.assert_array_equal(got.ground_truth.labels, src.ground_truth.labels)
        np.testing.assert_array_equal(got.ground_truth.instances, src.ground_truth.instances)
        np.testing.assert_allclose(got.ground_truth.depth_m, src.ground_truth.depth_m, atol=1e-3)
    np.testing.assert_array_equal(reader[-1].rgb, frames[-1].rgb)

    metadata = json.loads((out / "dataset.json").read_text())
    assert metadata["format"] == "semantic_mapping_dataset" and metadata["version"] == 1
    assert metadata["camera"] == {"width_px": W, "height_px": H, "fx": 7.5, "fy": 7.0, "cx": 3.5, "cy": 2.5}
    assert metadata["depth_scale"] == 1000.0 and metadata["num_classes"] == C
    assert set(metadata["streams"]) == {
        "rgb", "depth", "labels", "confidence", "probabilities", "instances", "gt_labels", "gt_instances", "gt_depth"
    }
    first_pose = (out / "poses.txt").read_text().splitlines()[0].split()
    assert int(first_pose[0]) == frames[0].stamp_ns and len(first_pose) == 8
    assert sorted(p.name for p in (out / "depth").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert detect_layout(out) == "semantic_mapping"
    assert isinstance(open_dataset(out), DatasetFolderReader)


def test_optional_fields_absent_and_wide_label_ids(tmp_path):
    rng = np.random.default_rng(1)
    bare = make_frame(rng, 0, full=False)
    wide = make_frame(rng, 1, full=False)
    wide.labels = np.full((H, W), 1000, np.int32)
    wide.depth_m[2, 2] = 70.0  # beyond a 16-bit millimetre PNG
    with DatasetWriter(tmp_path / "ds", K) as writer:
        writer.write(bare)
        writer.write(wide)
    got_bare, got_wide = DatasetFolderReader(tmp_path / "ds")
    assert got_bare.labels is None and got_bare.class_probs is None and got_bare.label_confidence is None
    assert got_bare.instance_masks is None and got_bare.ground_truth is None
    np.testing.assert_array_equal(got_wide.labels, wide.labels)
    assert got_wide.depth_m[2, 2] == 0.0


def test_writer_and_reader_errors(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        DatasetWriter(tmp_path / "full", K)

    writer = DatasetWriter(tmp_path / "ds", K)
    other_camera = make_frame(rng, 0)
    other_camera.intrinsics = CameraIntrinsics(9.0, 9.0, 3.5, 2.5, W, H)
    with pytest.raises(ValueError, match="one camera"):
        writer.write(other_camera)
    negative = make_frame(rng, 0)
    negative.labels[0, 0] = -1
    with pytest.raises(ValueError, match="255 for unknown"):
        writer.write(negative)
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        DatasetFolderReader(tmp_path / "ds")  # not closed yet
    writer.close()
    assert len(DatasetFolderReader(tmp_path / "ds")) == 0
    with pytest.raises(TypeError, match="JSON"):
        DatasetWriter(tmp_path / "ds2", K, meta={"bad": object()})
