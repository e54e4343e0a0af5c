"""Configuration: one dataclass per component, every field documented with its unit.

`config/mapping.yaml` holds the defaults the node and the CLI read; `load_config` turns a
YAML file (or a dict) into a `MapperConfig` and refuses unknown keys by name.
Runtime state never lives here.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, get_type_hints

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- map engine
@dataclass
class FusionConfig:
    """Sparse chunked TSDF/colour/semantic voxel map."""

    voxel_size_m: Optional[float] = None
    """Voxel edge length; None picks 0.02 on CUDA and 0.04 on CPU."""
    sdf_trunc_voxels: float = 4.0
    """Truncation distance of the TSDF, in voxels."""
    depth_min_m: float = 0.1
    """Depth readings nearer than this are ignored."""
    depth_max_m: float = 5.0
    """Depth readings beyond this are ignored."""
    block_resolution: int = 8
    """Voxels along each edge of a hash block."""
    initial_block_capacity: int = 2048
    """Hash blocks allocated up front; the map grows past this on demand."""
    device: str = "auto"
    """'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'."""
    surface_weight_threshold: float = 2.0
    """Integrated weight a voxel needs before it counts as observed surface."""
    chunk_shape_voxels: tuple = (64, 64, 128)
    """Chunk size (x, y, z) in voxels read by the completion network (SSR-2D subvolumes)."""


@dataclass
class SemanticFusionConfig:
    """Per-voxel class distribution updated from per-pixel 2D semantics."""

    method: str = "bayesian"
    """'bayesian' (per-voxel log-probability accumulation)."""
    label_confidence: float = 0.7
    """Probability given to a label image's class where no confidence image comes with it."""
    probability_floor: float = 1e-3
    """Per-pixel class probabilities are clipped up to this before taking logs."""
    min_log_prob: float = -30.0
    """Per-voxel log-probabilities (relative to the best class) are clamped at this."""


@dataclass
class InputConfig:
    """Validation of incoming frames."""

    allow_stamp_rewind: bool = False
    """Accept frames whose stamp is older than the last integrated one (else reject and count)."""
    rigidity_tolerance: float = 1e-3
    """Largest deviation of a pose's rotation from orthonormal before the frame is rejected."""
    min_valid_depth_fraction: float = 0.01
    """Frames with fewer valid depth pixels than this fraction are rejected."""


@dataclass
class OutputConfig:
    """Map outputs: labelled voxels, mesh, traversability grid."""

    grid_resolution_m: Optional[float] = None
    """Traversability grid cell size; None uses the voxel size."""
    robot_height_m: float = 1.2
    """Obstacles between the floor and this height above it block the robot."""
    floor_clearance_m: float = 0.1
    """Non-floor surfaces lower than this above the floor do not block (thresholds, rugs)."""


@dataclass
class MapperConfig:
    """Everything the `Mapper` needs."""

    fusion: FusionConfig = field(default_factory=FusionConfig)
    semantics: SemanticFusionConfig = field(default_factory=SemanticFusionConfig)
    inputs: InputConfig = field(default_factory=InputConfig)
    outputs: OutputConfig = field(default_factory=OutputConfig)


# ----------------------------------------------------------------------------- simulation
@dataclass
class CameraConfig:
    """Simulated RGB-D camera."""

    width_px: int = 640
    """Image width."""
    height_px: int = 480
    """Image height."""
    fx: float = 525.0
    """Focal length x, pixels."""
    fy: float = 525.0
    """Focal length y, pixels."""
    cx: float = 319.5
    """Principal point x, pixels."""
    cy: float = 239.5
    """Principal point y, pixels."""
    rate_hz: float = 30.0
    """Frame rate."""


@dataclass
class SceneConfig:
    """Procedural indoor scene."""

    min_rooms: int = 1
    """Fewest rooms."""
    max_rooms: int = 3
    """Most rooms."""


@dataclass
class TrajectoryConfig:
    """Handheld / robot camera path."""

    num_frames: int = 300
    """Frames to render."""


@dataclass
class DepthNoiseConfig:
    """Depth sensor model."""

    quantize_mm: bool = True
    """Round depth to whole millimetres."""


@dataclass
class SegmenterSimConfig:
    """Simulated 2D semantic segmenter (stands in for a real network)."""

    target_miou: float = 0.62
    """Per-frame 2D mIoU the simulator is calibrated to."""


@dataclass
class MaskSimConfig:
    """Simulated SAM-like class-agnostic mask generator."""

    min_area_fraction: float = 0.03
    """Masks smaller than this fraction of the image are dropped (DiscoNeRF §7.1)."""


@dataclass
class SimConfig:
    """A synthetic scene, its camera path and its noise models."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    scene: SceneConfig = field(default_factory=SceneConfig)
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    depth_noise: DepthNoiseConfig = field(default_factory=DepthNoiseConfig)
    segmenter: SegmenterSimConfig = field(default_factory=SegmenterSimConfig)
    masks: MaskSimConfig = field(default_factory=MaskSimConfig)


# ----------------------------------------------------------------------------- loading
class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it."""


def config_from_dict(cls, values: dict, where: str = ""):
    """Build dataclass `cls` from a nested dict, refusing unknown keys and mistyped values."""
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(values).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; known: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, hint, key = values[f.name], hints[f.name], where + f.name
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = config_from_dict(hint, value, key + ".")
        else:
            kwargs[f.name] = _coerce(value, hint, key)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    optional = hint == Optional[float] or hint == Optional[int] or hint == Optional[str]
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: a value is required")
    base = hint.__args__[0] if optional else hint
    try:
        if base is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if base is int:
            if isinstance(value, bool) or float(value) != int(value):
                raise TypeError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if base is str:
            return str(value)
        if base is tuple:
            return tuple(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {getattr(base, '__name__', base)}, got {value!r}") from None
    return value


def config_to_dict(config) -> dict:
    """Plain nested dict of a config dataclass (for saving next to outputs)."""
    return dataclasses.asdict(config)


def config_dir() -> Path:
    """Folder holding mapping.yaml and classes.yaml, in a checkout, a pip install or a colcon install."""
    candidates = []
    if os.environ.get("SEMANTIC_MAPPING_CONFIG_DIR"):
        candidates.append(Path(os.environ["SEMANTIC_MAPPING_CONFIG_DIR"]))
    candidates.append(Path(__file__).resolve().parent.parent / "config")
    candidates.append(Path(sys.prefix) / "share" / "semantic_mapping" / "config")
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "semantic_mapping" / "config")
    for path in candidates:
        if (path / "classes.yaml").is_file():
            return path
    raise FileNotFoundError(
        "semantic_mapping config folder not found (looked in: "
        + ", ".join(str(p) for p in candidates)
        + "); set SEMANTIC_MAPPING_CONFIG_DIR to the folder holding classes.yaml"
    )


def load_yaml(path: Path) -> dict:
    import yaml

    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    return data or {}


def load_config(path: Optional[os.PathLike] = None, overrides: Optional[dict] = None) -> MapperConfig:
    """MapperConfig from a YAML file (default: the package's mapping.yaml), then `overrides`."""
    data = load_yaml(Path(path) if path else config_dir() / "mapping.yaml")
    data = data.get("semantic_mapping", data)
    if overrides:
        data = _merge(data, overrides)
    return config_from_dict(MapperConfig, data)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def resolve_device(requested: str) -> str:
    """'cpu' or a CUDA device string; 'auto' and unavailable CUDA fall back to CPU with a log line."""
    import torch

    requested = (requested or "auto").lower()
    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if torch.cuda.is_available():
            return requested if ":" in requested else "cuda:0"
        log.warning("device %r requested but CUDA is not available; using the CPU", requested)
        return "cpu"
    if requested != "cpu":
        raise ConfigError(f"fusion.device: expected 'auto', 'cpu' or 'cuda[:N]', got {requested!r}")
    return "cpu"
