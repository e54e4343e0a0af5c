"""Node parameters from the config dataclasses, and the output byte layouts (no ROS needed)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from semantic_mapping.config import ConfigError, MapperConfig
from semantic_mapping.ros.encode import POINT_STEP, cloud_bytes_to_arrays, voxels_to_cloud_bytes
from semantic_mapping.ros.node_config import parameter_specs, parameters_from_values, resolved_topic
from semantic_mapping.types import LabelledVoxels


def _leaf_fields(cls, prefix=""):
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type) or (isinstance(f.type, str) and f.type.endswith("Config")):
            out += _leaf_fields(getattr(cls(), f.name).__class__, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def test_every_engine_field_is_a_described_parameter():
    specs = {s.name: s for s in parameter_specs()}
    for name in _leaf_fields(MapperConfig):
        assert name in specs, f"{name} is not declared as a parameter"
        assert specs[name].description, f"{name} has no description"
    assert specs["fusion.voxel_size_m"].optional and specs["fusion.voxel_size_m"].kind == "double"
    assert specs["fusion.chunk_shape_voxels"].kind == "integer_array"
    assert specs["node.queue_size"].kind == "integer" and specs["assembly.max_wait_s"].kind == "double"
    assert all(s.description for s in specs.values())


def test_parameter_values_are_checked_and_errors_name_the_parameter():
    values = {s.name: s.default for s in parameter_specs()}
    params = parameters_from_values({**values, "fusion.voxel_size_m": 0.05, "node.queue_size": 2})
    assert params.mapper.fusion.voxel_size_m == 0.05 and params.node.queue_size == 2
    for name, bad in (("fusion.voxel_size_m", -1.0), ("node.queue_size", 0), ("node.pose_source", "gps"),
                      ("assembly.max_wait_s", float("nan")), ("fusion.depth_max_m", "far"),
                      ("node.T_pose_cam", (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0)), ("node.on_time_jump", "ignore")):
        with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
            parameters_from_values({**values, name: bad})


def test_cloud_layout_round_trip():
    voxels = LabelledVoxels(
        positions_m=np.array([[0.0, 1.0, 2.0], [-1.5, 0.25, 3.0]], np.float32),
        colors=np.array([[255, 0, 10], [1, 2, 3]], np.uint8),
        labels=np.array([3, 255], np.int32),
        confidence=np.array([0.5, 0.0], np.float32),
    )
    colors = np.arange(60, dtype=np.uint8).reshape(20, 3)
    data, step = voxels_to_cloud_bytes(voxels, colors, "label")
    assert step == POINT_STEP and len(data) == 2 * POINT_STEP
    back = cloud_bytes_to_arrays(data, step, 2)
    np.testing.assert_array_equal(back["positions_m"], voxels.positions_m)
    np.testing.assert_array_equal(back["label"], [3, 255])
    np.testing.assert_array_equal(back["colors"][0], colors[3])
    np.testing.assert_array_equal(back["colors"][1], [128, 128, 128])  # ignore id: grey
    data, _ = voxels_to_cloud_bytes(voxels, colors, "rgb")
    np.testing.assert_array_equal(cloud_bytes_to_arrays(data, step, 2)["colors"], voxels.colors)
    assert len(voxels_to_cloud_bytes(LabelledVoxels(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8),
                                                    np.zeros(0, np.int32), np.zeros(0, np.float32)), colors)[0]) == 0


def test_resolved_topic_names():
    assert resolved_topic("~/voxels") == "/semantic_mapping/voxels"
    assert resolved_topic("~/voxels", namespace="robot1") == "/robot1/semantic_mapping/voxels"
    assert resolved_topic("/diagnostics", namespace="robot1") == "/diagnostics"
    assert resolved_topic("rgb/image", namespace="/cam") == "/cam/rgb/image"
