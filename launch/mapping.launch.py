"""Launch the semantic mapping node (and optionally RViz).

    ros2 launch semantic_mapping mapping.launch.py [params_file:=...] [ros_params_file:=...]
        [namespace:=robot1] [use_sim_time:=true] [camera:=realsense|namespace|none]
        [camera_namespace:=/camera] [voting_voxels_per_frame:=400] [objects:=true|false]
        [object_masks:=auto|frame|geometric] [objects_rate_hz:=1.0] [completion:=true|false] [rviz:=true]

params_file is the engine's YAML (config/mapping.yaml format); ros_params_file an optional ROS 2
parameter file (node.*, assembly.*, fusion.*, ... under ros__parameters) applied on top.
camera:=realsense remaps the inputs to realsense2_camera's topics (aligned depth) under
camera_namespace; camera:=namespace to <camera_namespace>/rgb/image, .../depth/image, ...
objects:=true|false turns the object slots on or off (objects.enabled); object_masks picks where their
2D masks come from (objects.mask_source: the instances/masks topic, the built-in geometric generator,
or auto: the topic when it publishes); both default to params_file's values. objects_rate_hz is the
rate of the object-slot cycle and of ~/objects and ~/object_markers (node.objects_rate_hz).
completion:=true (the default) runs SSR-2D scene completion in the node (completion.enabled; the library
and the CLI leave it off); without usable weights the node logs why and maps without it. Values in
ros_params_file override these arguments.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "semantic_mapping"
NODE_EXECUTABLE = "mapping_node"
PARAMS_FILE = os.path.join("config", "mapping.yaml")
RVIZ_CONFIG = os.path.join("config", "semantic_mapping.rviz")
OBJECT_MASK_SOURCES = ("auto", "frame", "geometric")

# node input -> topic of a RealSense (realsense2_camera >= 4.51: /camera/camera/...)
REALSENSE_REMAPS = {
    "rgb/image": "color/image_raw",
    "rgb/camera_info": "color/camera_info",
    "depth/image": "aligned_depth_to_color/image_raw",
    "depth/camera_info": "aligned_depth_to_color/camera_info",
}
NAMESPACE_REMAPS = {
    "rgb/image": "rgb/image",
    "rgb/camera_info": "rgb/camera_info",
    "depth/image": "depth/image",
    "depth/camera_info": "depth/camera_info",
    "semantic/labels": "semantic/labels",
    "semantic/confidence": "semantic/confidence",
    "semantic/probabilities": "semantic/probabilities",
    "instances/masks": "instances/masks",
}


def _remaps(camera: str, camera_namespace: str) -> list:
    ns = "/" + camera_namespace.strip("/") if camera_namespace.strip("/") else ""
    if camera == "realsense":
        base = ns or "/camera/camera"
        return [(src, f"{base}/{dst}") for src, dst in REALSENSE_REMAPS.items()]
    if camera == "namespace":
        return [(src, f"{ns}/{dst}") for src, dst in NAMESPACE_REMAPS.items()]
    if camera in ("", "none"):
        return []
    raise RuntimeError(f"camera:={camera!r}: expected realsense, namespace or none")


def _flag(context, name: str):
    """A true/false launch argument as a bool; None when empty."""
    value = LaunchConfiguration(name).perform(context).strip().lower()
    if not value:
        return None
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise RuntimeError(f"{name}:={value!r}: expected true or false")
    return value in ("true", "1", "yes")


def _object_parameters(context) -> dict:
    """objects.* / node.objects_* parameters from the launch arguments (empty ones: params_file's value)."""
    out = {"node.objects_rate_hz": float(LaunchConfiguration("objects_rate_hz").perform(context))}
    enabled = _flag(context, "objects")
    if enabled is not None:
        out["objects.enabled"] = enabled
    masks = LaunchConfiguration("object_masks").perform(context).strip()
    if masks:
        if masks not in OBJECT_MASK_SOURCES:
            raise RuntimeError(f"object_masks:={masks!r}: expected one of {', '.join(OBJECT_MASK_SOURCES)}")
        out["objects.mask_source"] = masks
    return out


def _launch_setup(context, *args, **kwargs):
    share = get_package_share_directory(PACKAGE)
    params_file = LaunchConfiguration("params_file").perform(context) or os.path.join(share, PARAMS_FILE)
    ros_params_file = LaunchConfiguration("ros_params_file").perform(context)
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1", "yes")
    parameters = [{"config_file": params_file, "use_sim_time": use_sim_time,
                   "voting.max_voxels_per_frame": int(LaunchConfiguration("voting_voxels_per_frame").perform(context)),
                   "semantics.context_max_age_s": 2.0,  # the labels' context thread refreshes at most every 2 s
                   **_object_parameters(context)}]
    completion = _flag(context, "completion")
    if completion is not None:
        parameters[0]["completion.enabled"] = completion
    if ros_params_file:
        parameters.append(ros_params_file)
    remaps = _remaps(LaunchConfiguration("camera").perform(context),
                     LaunchConfiguration("camera_namespace").perform(context))
    mapping = Node(
        package=PACKAGE,
        executable=NODE_EXECUTABLE,
        name="semantic_mapping",
        namespace=LaunchConfiguration("namespace"),
        parameters=parameters,
        remappings=remaps,
        output="screen",
        emulate_tty=True,
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", os.path.join(share, RVIZ_CONFIG)],
        parameters=[{"use_sim_time": use_sim_time}],
        condition=IfCondition(LaunchConfiguration("rviz")),
        output="screen",
    )
    return [mapping, rviz]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value="",
                              description="engine YAML (config/mapping.yaml format); empty: the package's"),
        DeclareLaunchArgument("ros_params_file", default_value="",
                              description="optional ROS 2 parameter file applied on top"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag playback)"),
        DeclareLaunchArgument("camera", default_value="none",
                              description="input remaps: realsense, namespace or none"),
        DeclareLaunchArgument("camera_namespace", default_value="",
                              description="camera namespace for camera:=realsense (default /camera/camera) or namespace"),
        DeclareLaunchArgument("voting_voxels_per_frame", default_value="400",
                              description="voxels soft-voted per integrated frame at most (keeps the input rate live)"),
        DeclareLaunchArgument("objects", default_value="",
                              description="true|false: object slots (DiscoNeRF) on ~/objects and ~/object_markers; "
                                          "empty: params_file's objects.enabled (on by default)"),
        DeclareLaunchArgument("object_masks", default_value="",
                              description="object masks from: frame (instances/masks topic), geometric (built in) or "
                                          "auto; empty: params_file's objects.mask_source"),
        DeclareLaunchArgument("objects_rate_hz", default_value="1.0",
                              description="rate of the object-slot cycle (optimisation, ~/objects, ~/object_markers); 0 pauses it"),
        DeclareLaunchArgument("completion", default_value="true",
                              description="true|false: SSR-2D scene completion in the map (completion.enabled); "
                                          "empty: params_file's value"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz with config/semantic_mapping.rviz"),
        OpaqueFunction(function=_launch_setup),
    ])
