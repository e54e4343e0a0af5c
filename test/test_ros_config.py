"""Node parameters from the config dataclasses, and the output byte layouts (no ROS needed)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from semantic_mapping.config import ConfigError, MapperConfig
from semantic_mapping.ros.encode import POINT_FIELDS, POINT_STEP, cloud_bytes_to_arrays, object_color, voxels_to_cloud_bytes
from semantic_mapping.ros.node_config import (
    OBJECT_MASK_SOURCES,
    PUBLISHED_TOPICS,
    parameter_specs,
    parameters_from_values,
    resolved_topic,
)
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
    # object slots: every field, the nested mask generator's too, and the node's own cycle settings
    assert specs["objects.mask_source"].kind == "string" and specs["objects.mask_source"].default == "auto"
    assert specs["objects.geometric.normal_edge_deg"].kind == "double"
    assert specs["objects.enabled"].kind == "bool" and specs["objects.steps_per_view"].kind == "integer"
    assert specs["node.objects_rate_hz"].default == 1.0 and specs["node.objects_max_steps_per_cycle"].kind == "integer"


def test_parameter_values_are_checked_and_errors_name_the_parameter():
    values = {s.name: s.default for s in parameter_specs()}
    params = parameters_from_values({**values, "fusion.voxel_size_m": 0.05, "node.queue_size": 2})
    assert params.mapper.fusion.voxel_size_m == 0.05 and params.node.queue_size == 2
    for name, bad in (("fusion.voxel_size_m", -1.0), ("node.queue_size", 0), ("node.pose_source", "gps"),
                      ("assembly.max_wait_s", float("nan")), ("fusion.depth_max_m", "far"),
                      ("node.T_pose_cam", (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0)), ("node.on_time_jump", "ignore"),
                      ("objects.mask_source", "sam"), ("objects.matching", "greedy"), ("objects.view_interval_frames", 0),
                      ("objects.view_width_px", 4), ("objects.min_slots", 0), ("objects.learning_rate", 0.0),
                      ("objects.min_mask_area_fraction", 1.5), ("objects.contained_fraction", 0.0), ("objects.join_share", 1.5),
                      ("objects.lambda_tv", -0.1), ("objects.geometric.normal_edge_deg", 200.0),
                      ("objects.geometric.depth_edge_rel", 0.0), ("objects.geometric.normal_window_px", 0),
                      ("node.objects_rate_hz", -1.0), ("node.objects_max_steps_per_cycle", 0)):
        with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
            parameters_from_values({**values, name: bad})
    for source in OBJECT_MASK_SOURCES:
        assert parameters_from_values({**values, "objects.mask_source": source}).mapper.objects.mask_source == source
    params = parameters_from_values({**values, "objects.enabled": False, "node.objects_rate_hz": 0.0})
    assert not params.mapper.objects.enabled and params.node.objects_rate_hz == 0.0


def test_object_choices_match_the_library():
    from semantic_mapping.objects.slots import MASK_SOURCES

    assert tuple(OBJECT_MASK_SOURCES) == tuple(MASK_SOURCES)
    assert PUBLISHED_TOPICS["~/objects"] == "semantic_mapping/msg/ObjectSlotArray"
    assert PUBLISHED_TOPICS["~/object_markers"] == "visualization_msgs/msg/MarkerArray"


def test_cloud_layout_round_trip():
    voxels = LabelledVoxels(
        positions_m=np.array([[0.0, 1.0, 2.0], [-1.5, 0.25, 3.0]], np.float32),
        colors=np.array([[255, 0, 10], [1, 2, 3]], np.uint8),
        labels=np.array([3, 255], np.int32),
        confidence=np.array([0.5, 0.0], np.float32),
        object_ids=np.array([0, 42], np.int32),
    )
    colors = np.arange(60, dtype=np.uint8).reshape(20, 3)
    assert [n for n, _, _ in POINT_FIELDS] == ["x", "y", "z", "rgb", "label", "confidence", "predicted", "slot"]
    data, step = voxels_to_cloud_bytes(voxels, colors, "label")
    assert step == POINT_STEP and len(data) == 2 * POINT_STEP
    back = cloud_bytes_to_arrays(data, step, 2)
    np.testing.assert_array_equal(back["positions_m"], voxels.positions_m)
    np.testing.assert_array_equal(back["label"], [3, 255])
    np.testing.assert_array_equal(back["colors"][0], colors[3])
    np.testing.assert_array_equal(back["colors"][1], [128, 128, 128])  # ignore id: grey
    np.testing.assert_array_equal(back["slot"], [0, 42])
    assert back["slot"].dtype == np.uint32
    data, _ = voxels_to_cloud_bytes(voxels, colors, "rgb")
    np.testing.assert_array_equal(cloud_bytes_to_arrays(data, step, 2)["colors"], voxels.colors)
    assert len(voxels_to_cloud_bytes(LabelledVoxels(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8),
                                                    np.zeros(0, np.int32), np.zeros(0, np.float32)), colors)[0]) == 0


def test_object_colors_are_valid_and_differ_between_neighbouring_ids():
    colors = [object_color(i) for i in range(1, 40)]
    assert all(0.0 <= c <= 1.0 for rgb in colors for c in rgb)
    assert all(np.abs(np.subtract(a, b)).max() > 0.1 for a, b in zip(colors, colors[1:]))
    assert object_color(5) == object_color(5)


def test_resolved_topic_names():
    assert resolved_topic("~/voxels") == "/semantic_mapping/voxels"
    assert resolved_topic("~/voxels", namespace="robot1") == "/robot1/semantic_mapping/voxels"
    assert resolved_topic("/diagnostics", namespace="robot1") == "/diagnostics"
    assert resolved_topic("rgb/image", namespace="/cam") == "/cam/rgb/image"
