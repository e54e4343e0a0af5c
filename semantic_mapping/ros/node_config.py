"""The mapping node's own settings and the parameter table built from the config dataclasses.

No ROS import here: the table (name, default, type, description) is plain data that the node
declares as ROS parameters and that tests and the launch file check. Parameter names are the
dotted config paths: `fusion.voxel_size_m`, `assembly.max_wait_s`, `node.queue_size`, ...
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Optional, get_type_hints

from semantic_mapping.config import ConfigError, MapperConfig, config_from_dict, config_to_dict
from semantic_mapping.io.frame_assembly import AssemblyConfig

NODE_NAME = "semantic_mapping"
"""Default node name; private topics and services live under /<namespace>/semantic_mapping/."""
SUBSCRIBED_TOPICS = {
    "rgb/image": "sensor_msgs/msg/Image",
    "rgb/camera_info": "sensor_msgs/msg/CameraInfo",
    "depth/image": "sensor_msgs/msg/Image",
    "depth/camera_info": "sensor_msgs/msg/CameraInfo",
    "pose": "geometry_msgs/msg/PoseStamped | PoseWithCovarianceStamped | nav_msgs/msg/Odometry",
    "semantic/labels": "sensor_msgs/msg/Image",
    "semantic/confidence": "sensor_msgs/msg/Image",
    "semantic/probabilities": "sensor_msgs/msg/Image",
    "instances/masks": "sensor_msgs/msg/Image",
    "~/render/pose": "geometry_msgs/msg/PoseStamped",
}
PUBLISHED_TOPICS = {
    "~/voxels": "sensor_msgs/msg/PointCloud2",
    "~/mesh": "visualization_msgs/msg/Marker",
    "~/traversability": "nav_msgs/msg/OccupancyGrid",
    "~/label_space": "semantic_mapping/msg/LabelSpace",
    "~/status": "semantic_mapping/msg/MapperStatus",
    "~/render/rgb": "sensor_msgs/msg/Image",
    "~/render/semantic": "sensor_msgs/msg/Image",
    "~/render/semantic_color": "sensor_msgs/msg/Image",
    "~/render/depth": "sensor_msgs/msg/Image",
    "~/render/camera_info": "sensor_msgs/msg/CameraInfo",
    "~/objects": "semantic_mapping/msg/ObjectSlotArray",
    "~/object_markers": "visualization_msgs/msg/MarkerArray",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}
SERVICES = {
    "~/save_map": "semantic_mapping/srv/SaveMap",
    "~/load_map": "semantic_mapping/srv/LoadMap",
    "~/reset": "std_srvs/srv/Trigger",
}


def resolved_topic(name: str, node_name: str = NODE_NAME, namespace: str = "/") -> str:
    """Absolute name of a node topic ('~/x' -> /<ns>/<node>/x, 'x' -> /<ns>/x)."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    if name.startswith("/"):
        return name
    if name.startswith("~/"):
        return f"{ns}/{node_name}/{name[2:]}"
    return f"{ns}/{name}"


POSE_SOURCES = ("pose_stamped", "pose_with_covariance", "odometry", "tf")
TIME_JUMP_POLICIES = ("reset", "refuse")
COLOR_MODES = ("label", "rgb")
OBJECT_MASK_SOURCES = ("auto", "frame", "geometric")  # semantic_mapping.objects.slots.MASK_SOURCES
OBJECT_MATCHING = ("hungarian", "argmax")


@dataclass
class NodeConfig:
    """Topics, pose source, output rates and queueing of the ROS node."""

    map_frame: str = "map"
    """Fixed frame the map and all outputs are expressed in (REP 105 'map' or 'odom')."""
    pose_source: str = "pose_stamped"
    """Where the camera pose comes from: pose_stamped, pose_with_covariance, odometry (topic 'pose') or tf."""
    camera_frame: str = ""
    """TF only: the camera optical frame looked up in map_frame; empty uses the colour image's frame_id."""
    T_pose_cam: tuple = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    """Camera optical frame in the pose's child frame as x y z (metres) qx qy qz qw; identity when the pose is the camera's."""
    reliable_inputs: bool = False
    """Subscribe to the inputs with reliable QoS (recorded or replayed streams whose publishers are reliable); default sensor-data (best effort)."""
    queue_size: int = 4
    """Assembled frames waiting for integration at most; when full the oldest is dropped (counted 'queue_full')."""
    voxels_rate_hz: float = 1.0
    """Rate of the labelled voxel cloud (only built when subscribed and the map changed); 0 disables it."""
    mesh_rate_hz: float = 0.5
    """Rate of the semantic mesh marker (only built when subscribed and the map changed); 0 disables it."""
    grid_rate_hz: float = 1.0
    """Rate of the traversability grid (only built when subscribed and the map changed); 0 disables it."""
    status_rate_hz: float = 1.0
    """Rate of the status message and /diagnostics."""
    color_by: str = "label"
    """Colour of the voxel cloud and mesh: 'label' (class colours) or 'rgb' (observed colour)."""
    on_time_jump: str = "reset"
    """When image stamps jump back (a bag restarted): 'reset' the map and go on, or 'refuse' the older frames."""
    default_map_path: str = "semantic_map.npz"
    """File SaveMap writes when its request names no path."""
    render_rate_hz: float = 2.0
    """Rate of the Gaussian-splat renders on ~/render/* (made only while someone subscribes, in their own
    thread, never holding up integration); 0 disables them."""
    render_width_px: int = 320
    """Width of the renders (the camera's intrinsics are scaled to it)."""
    render_height_px: int = 240
    """Height of the renders."""
    render_follow_camera: bool = True
    """Render from the latest integrated camera pose when no requested pose (~/render/pose) holds."""
    render_pose_hold_s: float = 10.0
    """A pose received on ~/render/pose is rendered from for this long, then following resumes; 0: for ever."""
    render_hfov_deg: float = 62.7
    """Horizontal field of view of the renders until the first camera_info arrives."""
    objects_rate_hz: float = 1.0
    """Rate of the object-slot cycle (views from queued frames, optimisation, extraction, ~/objects and
    ~/object_markers) in a thread of its own that holds the map lock only to read the map; 0 pauses it."""
    objects_max_steps_per_cycle: int = 60
    """Object-slot optimisation steps run per cycle at most; the rest stay due for the next cycles."""


@dataclass
class NodeParameters:
    """Everything the node reads from parameters."""

    mapper: MapperConfig = field(default_factory=MapperConfig)
    assembly: AssemblyConfig = field(default_factory=AssemblyConfig)
    node: NodeConfig = field(default_factory=NodeConfig)


@dataclass(frozen=True)
class ParameterSpec:
    name: str  # dotted, e.g. fusion.voxel_size_m
    default: Any  # None for "unset" (Optional fields)
    kind: str  # 'double', 'integer', 'bool', 'string', 'double_array', 'integer_array'
    description: str
    optional: bool = False


@lru_cache(maxsize=None)
def field_docs(cls) -> dict:
    """{field name: docstring} from the string literal that follows each field in the class body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for stmt, nxt in zip(body, body[1:]):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                docs[stmt.target.id] = str(nxt.value.value).strip()
    return docs


def _kind(hint, default) -> tuple[str, bool]:
    optional = hint in (Optional[float], Optional[int], Optional[str])
    base = hint.__args__[0] if optional else hint
    if base is bool:
        return "bool", optional
    if base is int:
        return "integer", optional
    if base is float:
        return "double", optional
    if base is str:
        return "string", optional
    if base is tuple:
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (default or ()))
        return ("integer_array" if ints else "double_array"), optional
    raise TypeError(f"no parameter type for {hint}")


def _specs(cls, prefix: str, defaults) -> list[ParameterSpec]:
    out = []
    hints = get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out += _specs(hint, f"{prefix}{f.name}.", value)
            continue
        kind, optional = _kind(hint, value)
        doc = docs.get(f.name, "")
        out.append(ParameterSpec(prefix + f.name, value, kind, doc, optional))
    return out


def parameter_specs(defaults: Optional[NodeParameters] = None) -> list[ParameterSpec]:
    """The node's parameters: the MapperConfig sections (fusion., semantics., inputs., outputs.),
    then assembly. and node., each with its default from `defaults` and the field's docstring."""
    defaults = defaults or NodeParameters()
    return (
        _specs(MapperConfig, "", defaults.mapper)
        + _specs(AssemblyConfig, "assembly.", defaults.assembly)
        + _specs(NodeConfig, "node.", defaults.node)
    )


def _nest(flat: dict) -> dict:
    out: dict = {}
    for name, value in flat.items():
        parts = name.split(".")
        d = out
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = value
    return out


def parameters_from_values(values: dict) -> NodeParameters:
    """NodeParameters from {dotted name: value}; ConfigError naming the parameter when a value is invalid."""
    nested = _nest(values)
    assembly = nested.pop("assembly", {})
    node = nested.pop("node", {})
    mapper = config_from_dict(MapperConfig, nested)
    params = NodeParameters(
        mapper=mapper,
        assembly=config_from_dict(AssemblyConfig, assembly, "assembly."),
        node=config_from_dict(NodeConfig, node, "node."),
    )
    check_values(params)
    return params


def _flat(prefix: str, d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(f"{prefix}{k}.", v))
        else:
            out[prefix + k] = v
    return out


def flat_values(params: NodeParameters) -> dict:
    return {
        **_flat("", config_to_dict(params.mapper)),
        **_flat("assembly.", config_to_dict(params.assembly)),
        **_flat("node.", config_to_dict(params.node)),
    }


def check_values(params: NodeParameters) -> None:
    """Range and choice checks the dataclasses' types cannot express; ConfigError names the parameter."""
    for name, value in flat_values(params).items():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}: must be finite, got {value}")
        if value is None or isinstance(value, (bool, str, tuple, list)):
            continue
        if leaf.endswith(("_m", "_hz", "_s", "_voxels")) or leaf in ("queue_size", "max_pending_frames",
                                                                       "max_buffered_messages", "block_resolution",
                                                                       "initial_block_capacity", "max_weight"):
            strictly = leaf in ("voxel_size_m", "sdf_trunc_voxels", "depth_max_m", "queue_size", "block_resolution",
                                "max_pending_frames", "max_buffered_messages", "initial_block_capacity",
                                "max_weight", "grid_resolution_m", "max_wait_s", "max_pose_gap_s",
                                "time_jump_back_s", "robot_height_m")
            if value < 0 or (strictly and value == 0):
                raise ConfigError(f"{name}: must be {'> 0' if strictly else '>= 0'}, got {value}")
    f = params.mapper.fusion
    if f.depth_max_m <= f.depth_min_m:
        raise ConfigError(f"fusion.depth_max_m ({f.depth_max_m}) must exceed fusion.depth_min_m ({f.depth_min_m})")
    n = params.node
    for name, value, choices in (
        ("node.pose_source", n.pose_source, POSE_SOURCES),
        ("node.on_time_jump", n.on_time_jump, TIME_JUMP_POLICIES),
        ("node.color_by", n.color_by, COLOR_MODES),
    ):
        if value not in choices:
            raise ConfigError(f"{name}: expected one of {list(choices)}, got {value!r}")
    if len(n.T_pose_cam) != 7:
        raise ConfigError(f"node.T_pose_cam: expected 7 numbers x y z qx qy qz qw, got {list(n.T_pose_cam)}")
    if n.render_width_px < 8 or n.render_height_px < 8:
        raise ConfigError(f"node.render_width_px/render_height_px: at least 8 pixels, got {n.render_width_px}x{n.render_height_px}")
    if not 1.0 <= n.render_hfov_deg < 179.0:
        raise ConfigError(f"node.render_hfov_deg: expected 1..179 degrees, got {n.render_hfov_deg}")
    _check_objects(params.mapper.objects)
    _check_completion(params.mapper.completion)
    if n.objects_max_steps_per_cycle < 1:
        raise ConfigError(f"node.objects_max_steps_per_cycle: must be >= 1, got {n.objects_max_steps_per_cycle}")
    splatting = params.mapper.splatting
    if splatting.backend not in ("auto", "gsplat", "cpu"):
        raise ConfigError(f"splatting.backend: expected one of ['auto', 'gsplat', 'cpu'], got {splatting.backend!r}")
    q = n.T_pose_cam[3:]
    if abs(math.sqrt(sum(v * v for v in q)) - 1.0) > 1e-3:
        raise ConfigError(f"node.T_pose_cam: the quaternion {list(q)} is not unit length")
    if params.mapper.fusion.device not in ("auto", "cpu") and not str(params.mapper.fusion.device).startswith("cuda"):
        raise ConfigError(f"fusion.device: expected 'auto', 'cpu' or 'cuda[:N]', got {params.mapper.fusion.device!r}")


def _check_completion(c) -> None:
    """Ranges and choices of the completion.* parameters; ConfigError names the parameter."""
    for name, value in (("min_updates", c.min_updates), ("threads", c.threads)):
        if value < 1:
            raise ConfigError(f"completion.{name}: must be >= 1, got {value}")
    if not 0.0 <= c.min_confidence <= 1.0:
        raise ConfigError(f"completion.min_confidence: expected [0, 1], got {c.min_confidence}")
    if c.device not in ("auto", "cpu") and not str(c.device).startswith("cuda"):
        raise ConfigError(f"completion.device: expected 'auto', 'cpu' or 'cuda[:N]', got {c.device!r}")


def _check_objects(o) -> None:
    """Choices and ranges of the objects.* parameters; ConfigError names the parameter."""
    for name, value, choices in (("objects.mask_source", o.mask_source, OBJECT_MASK_SOURCES),
                                 ("objects.matching", o.matching, OBJECT_MATCHING)):
        if value not in choices:
            raise ConfigError(f"{name}: expected one of {list(choices)}, got {value!r}")
    for name, value, low in (("view_interval_frames", o.view_interval_frames, 1), ("view_width_px", o.view_width_px, 8),
                             ("max_views", o.max_views, 1), ("feature_dim", o.feature_dim, 1),
                             ("feature_levels", o.feature_levels, 1), ("hidden_dim", o.hidden_dim, 1),
                             ("min_slots", o.min_slots, 1), ("steps_per_view", o.steps_per_view, 0),
                             ("batch_views", o.batch_views, 1), ("mask_dilation_px", o.mask_dilation_px, 0),
                             ("min_object_voxels", o.min_object_voxels, 1),
                             ("geometric.normal_window_px", o.geometric.normal_window_px, 1)):
        if value < low:
            raise ConfigError(f"objects.{name}: must be >= {low}, got {value}")
    for name, value, low, high, low_open in (
        ("min_mask_area_fraction", o.min_mask_area_fraction, 0.0, 1.0, False),
        ("contained_fraction", o.contained_fraction, 0.0, 1.0, True),
        ("join_share", o.join_share, 0.0, 1.0, False),
        ("join_class_overlap", o.join_class_overlap, 0.0, 1.0, False),
        ("unmasked_class_share", o.unmasked_class_share, 0.0, 1.0, False),
        ("render_gap_fraction", o.render_gap_fraction, 0.0, 1.0, False),
        ("geometric.depth_edge_rel", o.geometric.depth_edge_rel, 0.0, math.inf, True),
        ("geometric.normal_edge_deg", o.geometric.normal_edge_deg, 0.0, 180.0, True),
    ):
        if not (low < value <= high if low_open else low <= value <= high):
            raise ConfigError(f"objects.{name}: expected {'(' if low_open else '['}{low}, {high}], got {value}")
    for name, value in (("learning_rate", o.learning_rate), ("lambda_fp", o.lambda_fp), ("lambda_tv", o.lambda_tv)):
        if value < 0 or (name == "learning_rate" and value == 0):
            raise ConfigError(f"objects.{name}: must be {'> 0' if name == 'learning_rate' else '>= 0'}, got {value}")
