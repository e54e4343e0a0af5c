"""Configuration: the YAML defaults match the dataclasses; bad keys and values are refused by name."""

import pytest

from semantic_mapping.config import ConfigError, MapperConfig, config_from_dict, load_config, resolve_device


def test_mapping_yaml_matches_dataclass_defaults():
    assert load_config() == MapperConfig()


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="fusion.voxel_sise_m"):
        config_from_dict(MapperConfig, {"fusion": {"voxel_sise_m": 0.05}})


def test_mistyped_value_is_named():
    with pytest.raises(ConfigError, match="fusion.block_resolution"):
        config_from_dict(MapperConfig, {"fusion": {"block_resolution": "eight"}})
    with pytest.raises(ConfigError, match="inputs.allow_stamp_rewind"):
        config_from_dict(MapperConfig, {"inputs": {"allow_stamp_rewind": 1}})


def test_overrides_and_optional_values():
    cfg = load_config(overrides={"fusion": {"voxel_size_m": 0.05}, "outputs": {"robot_height_m": 0.8}})
    assert cfg.fusion.voxel_size_m == 0.05 and cfg.outputs.robot_height_m == 0.8
    assert cfg.fusion.depth_max_m == MapperConfig().fusion.depth_max_m
    assert config_from_dict(MapperConfig, {"fusion": {"voxel_size_m": None}}).fusion.voxel_size_m is None


def test_device_resolution():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda:0")
    with pytest.raises(ConfigError, match="fusion.device"):
        resolve_device("tpu")
