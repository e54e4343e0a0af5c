"""The semantic mapping ROS 2 node: topics in, semantic map out. Thin: converts at the edge, calls the library.

Threads: the executor runs the subscription callbacks, which only decode messages and hand them
to the library's FrameAssembler; assembled frames go into a bounded queue (the oldest is dropped
and counted when it is full) that a worker thread integrates into the Mapper; the same worker
builds and publishes the map outputs between frames, and only for outputs someone subscribes to.
Object slots (DiscoNeRF) are fitted in a thread of their own at node.objects_rate_hz: integration
only queues object views; that thread turns them into views and extracts the objects holding the
map lock briefly, and runs the optimisation steps (at most node.objects_max_steps_per_cycle per
cycle) without it, so integration never waits for the optimisation. Scene completion (completion.enabled)
runs in the library's own worker thread (semantic_mapping.completion.live); outputs are rebuilt when its
predictions change, and include them (flagged) per completion.include_predicted.

Subscribed (relative names, remappable): rgb/image, rgb/camera_info, depth/image,
depth/camera_info (only when depth is not registered to rgb), pose (PoseStamped,
PoseWithCovarianceStamped or Odometry per node.pose_source; or TF), semantic/labels,
semantic/confidence, semantic/probabilities, instances/masks; ~/render/pose (PoseStamped, map frame).
Published: ~/voxels (PointCloud2, field `predicted` 1 for completed voxels), ~/mesh (Marker; completed
surface drawn with vertex alpha PREDICTED_ALPHA), ~/traversability (OccupancyGrid),
~/label_space (LabelSpace), ~/status (MapperStatus), ~/objects (ObjectSlotArray: the objects of
the map, sorted by id), ~/object_markers (MarkerArray: a box and a "<class> #<id>" label per
object, after a DELETEALL), /diagnostics (DiagnosticArray), and
Gaussian-splat renders ~/render/{rgb, semantic (mono8 class ids), semantic_color, depth (32FC1),
camera_info}: a render thread of their own makes them while someone subscribes, from the requested
pose or following the camera; it holds the map lock only to bring the Gaussians up to date.
Services: ~/save_map (SaveMap), ~/load_map (LoadMap), ~/reset (std_srvs/Trigger).
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from typing import Optional

import numpy as np
import rclpy
import rclpy.exceptions
import rclpy.time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import OccupancyGrid, Odometry
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import ColorRGBA, Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from semantic_mapping.config import ConfigError, load_config
from semantic_mapping.geometry.pose import T_from_quat_xyzw
from semantic_mapping.io.frame_assembly import (
    ACCEPTED,
    OUT_OF_ORDER,
    TIME_JUMP_BACK,
    AssemblyError,
    FrameAssembler,
    frame_from_parts,
)
from semantic_mapping.msg import LabelSpace as LabelSpaceMsg
from semantic_mapping.msg import MapperStatus, ObjectSlotArray
from semantic_mapping.pipeline import Mapper
from semantic_mapping.ros import conversions as conv
from semantic_mapping.ros.node_config import (
    NODE_NAME,
    PUBLISHED_TOPICS,
    NodeParameters,
    parameter_specs,
    parameters_from_values,
)
from semantic_mapping.srv import LoadMap, SaveMap

IMAGE_TOPICS = {
    "rgb": "rgb/image",
    "depth": "depth/image",
    "labels": "semantic/labels",
    "confidence": "semantic/confidence",
    "probabilities": "semantic/probabilities",
    "masks": "instances/masks",
}
POSE_TYPES = {"pose_stamped": PoseStamped, "pose_with_covariance": PoseWithCovarianceStamped, "odometry": Odometry}
OUTPUT_TOPICS = {
    "voxels": ("~/voxels", PointCloud2),
    "mesh": ("~/mesh", Marker),
    "grid": ("~/traversability", OccupancyGrid),
    "label_space": ("~/label_space", LabelSpaceMsg),
    "status": ("~/status", MapperStatus),
    "objects": ("~/objects", ObjectSlotArray),
    "object_markers": ("~/object_markers", MarkerArray),
}
RENDER_TOPICS = {
    "rgb": ("~/render/rgb", Image),
    "semantic": ("~/render/semantic", Image),
    "semantic_color": ("~/render/semantic_color", Image),
    "depth": ("~/render/depth", Image),
    "camera_info": ("~/render/camera_info", CameraInfo),
}
RENDER_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1)
# parameters that may change while the node runs; the rest need a restart
RUNTIME_PARAMETERS = {"node.voxels_rate_hz", "node.mesh_rate_hz", "node.grid_rate_hz", "node.status_rate_hz",
                      "node.color_by", "node.default_map_path", "node.render_rate_hz", "node.render_width_px",
                      "node.render_height_px", "node.render_follow_camera", "node.render_pose_hold_s",
                      "node.objects_rate_hz", "node.objects_max_steps_per_cycle", "completion.include_predicted"}
# object-slot optimisation steps run per hold of the objects lock (a reset waits for one chunk at most)
OBJECT_STEPS_PER_CHUNK = 2
# before each chunk the objects thread lets queued frames be integrated first, waiting this long at most
OBJECT_YIELD_MAX_S = 0.25
# the labels' context thread checks this often whether a read asked for a refresh
CONTEXT_POLL_S = 0.05

SENSOR_QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=10,
                        durability=DurabilityPolicy.VOLATILE)
POSE_QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=100)
MAP_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class _Rate:
    """Events per second over a sliding window (of receipt times)."""

    def __init__(self, window_s: float = 5.0):
        self.window_ns = int(window_s * 1e9)
        self.times: collections.deque = collections.deque()

    def tick(self, now_ns: int) -> None:
        self.times.append(now_ns)

    def hz(self, now_ns: int) -> float:
        while self.times and now_ns - self.times[0] > self.window_ns:
            self.times.popleft()
        if len(self.times) < 2:
            return 0.0
        span = max(now_ns - self.times[0], 1)
        return (len(self.times) - 1) * 1e9 / span if span > 0 else 0.0


def _guarded(method):
    """Callback wrapper: an exception is logged and counted, never allowed to stop the executor."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the node must keep running
            with self._lock:
                self._bad_messages["callback_error"] += 1
            self.get_logger().error(f"{method.__name__}: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)
            return None

    return wrapper


class MappingNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.params = self._declare_parameters()
        p = self.params
        # integrate() only queues object views; the objects thread fits and extracts them
        self.mapper = Mapper(p.mapper, objects_in_background=True)
        self.label_space = self.mapper.label_space
        self._T_pose_cam = T_from_quat_xyzw(p.node.T_pose_cam[:3], p.node.T_pose_cam[3:])

        self._lock = threading.Lock()  # assembler, queue, counters
        self._mapper_lock = threading.Lock()
        # the object-slot field: held by the objects thread for each piece of its work and, before the
        # mapper lock, by whatever resets the map (lock order: objects, then mapper, then _lock)
        self._objects_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque = collections.deque()
        self._drops: collections.Counter = collections.Counter()  # frames, by reason
        self._bad_messages: collections.Counter = collections.Counter()  # messages refused at conversion
        self._rates = {role: _Rate() for role in (*IMAGE_TOPICS, "pose", "assembled", "integrated")}
        self._latencies_ms: collections.deque = collections.deque(maxlen=300)
        self._integrate_ms: collections.deque = collections.deque(maxlen=300)
        self._frames_assembled = 0
        self._map_version = 0
        self._objects_version = 0  # extractions so far: the voxel cloud's slot field follows them
        self._published_version = {"voxels": -1, "mesh": -1, "grid": -1}
        self._last_publish = {"voxels": 0.0, "mesh": 0.0, "grid": 0.0}
        self._last_subscribers = {"voxels": 0, "mesh": 0, "grid": 0}
        self._reset_requested = False
        self._time_jump_resets = 0
        self._warned: set = set()
        self.intrinsics = None
        self.depth_intrinsics = None
        self._camera_frame_id = p.node.camera_frame
        self._camera_view = None  # (T_world_cam, stamp_ns, intrinsics) of the latest integrated frame
        self._requested_view = None  # (T_world_cam, stamp_ns, monotonic receipt s) from ~/render/pose
        self._render_stats = {"renders": 0, "last_ms": 0.0, "gaussians": 0}
        self._objects_stats = {"count": 0, "views": 0, "views_without_masks": 0, "frames_dropped": 0, "steps_due": 0,
                               "steps_skipped": 0, "steps": 0, "slots": 0, "field_voxels": 0, "cycles": 0, "errors": 0,
                               "last_ms": 0.0, "optimise_ms": 0.0, "map_lock_ms": 0.0}

        self.assembler = FrameAssembler(p.assembly, pose_lookup=self._tf_lookup() if p.node.pose_source == "tf" else None)

        sensor_qos, pose_qos = SENSOR_QOS, POSE_QOS
        if p.node.reliable_inputs:
            sensor_qos = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10)
            pose_qos = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=100)
        sensors = MutuallyExclusiveCallbackGroup()
        services = MutuallyExclusiveCallbackGroup()
        timers = MutuallyExclusiveCallbackGroup()
        for role, topic in IMAGE_TOPICS.items():
            self.create_subscription(Image, topic, lambda msg, r=role: self._on_image(r, msg), sensor_qos,
                                     callback_group=sensors)
        self.create_subscription(CameraInfo, "rgb/camera_info", self._on_camera_info, sensor_qos, callback_group=sensors)
        self.create_subscription(CameraInfo, "depth/camera_info", self._on_depth_camera_info, sensor_qos,
                                 callback_group=sensors)
        if p.node.pose_source in POSE_TYPES:
            self.create_subscription(POSE_TYPES[p.node.pose_source], "pose", self._on_pose, pose_qos,
                                     callback_group=sensors)

        self.pubs = {name: self.create_publisher(t, topic, MAP_QOS) for name, (topic, t) in OUTPUT_TOPICS.items()}
        self.render_pubs = {name: self.create_publisher(t, topic, RENDER_QOS) for name, (topic, t) in RENDER_TOPICS.items()}
        self.create_subscription(PoseStamped, "~/render/pose", self._on_render_pose, RENDER_QOS, callback_group=sensors)
        assert {topic for topic, _ in (*OUTPUT_TOPICS.values(), *RENDER_TOPICS.values())} | {"/diagnostics"} == set(
            PUBLISHED_TOPICS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(SaveMap, "~/save_map", self._on_save, callback_group=services)
        self.create_service(LoadMap, "~/load_map", self._on_load, callback_group=services)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=services)
        # steady timers: with use_sim_time the ROS clock stops when a bag ends (and jumps back when it loops),
        # but pairing timeouts and status keep running on receipt time
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(0.05, self._pump, callback_group=timers, clock=steady)
        self.create_timer(1.0 / max(p.node.status_rate_hz, 0.01), self._publish_status, callback_group=timers,
                          clock=steady)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._publish_label_space()
        self._publish_objects([], self._stamp_ns())  # consumers see "no objects yet", not silence

        self._running = True
        self._worker = threading.Thread(target=self._work, name="mapping_worker", daemon=True)
        self._worker.start()
        self._render_thread = threading.Thread(target=self._render_loop, name="render_worker", daemon=True)
        self._render_thread.start()
        self._objects_thread = threading.Thread(target=self._objects_loop, name="objects_worker", daemon=True)
        self._objects_thread.start()
        self._context_thread = None
        if self.mapper.map.context is not None:  # labels' surface context: refreshed here, off the map lock
            self.mapper.map.context.background = True
            self._context_thread = threading.Thread(target=self._context_loop, name="context_worker", daemon=True)
            self._context_thread.start()
        self.get_logger().info(
            f"ready: voxel {self.mapper.voxel_size_m:.3f} m on {self.mapper.map.device}, pose from "
            f"{p.node.pose_source}, map frame '{p.node.map_frame}', queue {p.node.queue_size}, semantics "
            f"{self.mapper.semantics_method}" + (f" (weights {p.mapper.voting.weights or 'shipped'}, frame votes "
                                                 f"{'on' if p.mapper.voting.frame_votes else 'off'}, keyframe votes "
                                                 f"{'on' if p.mapper.voting.keyframe_votes else 'off'}, at most "
                                                 f"{p.mapper.voting.max_voxels_per_frame or 'all'} voxels voted per frame)"
                                                 if self.mapper.voting is not None else "")
            + (f", objects from {p.mapper.objects.mask_source} masks at {p.node.objects_rate_hz:g} Hz"
               if self.mapper.object_slots is not None else ", objects off")
            + f", completion {self.mapper.stats.completion.status}"
        )

    # ------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> NodeParameters:
        self.declare_parameter("config_file", "", ParameterDescriptor(
            description="YAML file with the engine defaults (config/mapping.yaml format); empty: the package's own"))
        config_file = self.get_parameter("config_file").value or None
        defaults = NodeParameters(mapper=load_config(config_file))
        values = {}
        for spec in parameter_specs(defaults):
            descriptor = ParameterDescriptor(description=f"{spec.description} [{spec.kind}"
                                             f"{', optional' if spec.optional else ''}]", dynamic_typing=True)
            default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
            values[spec.name] = self.declare_parameter(spec.name, default, descriptor).value
        values = {k: (tuple(v) if isinstance(v, (list, tuple)) or type(v).__name__ == "array" else v)
                  for k, v in values.items()}
        return parameters_from_values(values)  # ConfigError names the parameter

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        from semantic_mapping.ros.node_config import flat_values

        changed = {}
        for param in parameters:
            if param.name in ("use_sim_time", "config_file") or param.name.startswith("qos_overrides"):
                if param.name == "config_file":
                    return SetParametersResult(successful=False, reason="config_file is read at start-up only")
                continue
            if param.name not in RUNTIME_PARAMETERS:
                return SetParametersResult(
                    successful=False, reason=f"{param.name} cannot change while the node runs; restart it with the new value")
            changed[param.name] = param.value
        if not changed:
            return SetParametersResult(successful=True)
        values = {**flat_values(self.params), **changed}
        try:
            self.params = parameters_from_values(values)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        with self._lock:
            self._map_version += 1  # re-publish with the new settings
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ TF
    def _tf_lookup(self):
        try:
            import tf2_ros
        except ImportError:
            raise ConfigError("node.pose_source: 'tf' needs tf2_ros, which is not installed; use a pose topic") from None
        self._tf_buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self)

        def lookup(stamp_ns: int):
            frame = self._camera_frame_id
            if not frame:
                return None
            try:
                t = self._tf_buffer.lookup_transform(self.params.node.map_frame, frame,
                                                     rclpy.time.Time(nanoseconds=stamp_ns))
            except Exception:  # not available yet (or never): the assembler waits, then drops
                return None
            return conv.transform_to_T(t.transform)

        return lookup

    # ------------------------------------------------------------------ inputs
    def _count_bad(self, reason: str, message: str) -> None:
        with self._lock:
            self._bad_messages[reason] += 1
        self.get_logger().warning(f"{message} (counted as '{reason}')", throttle_duration_sec=5.0)

    @_guarded
    def _on_image(self, role: str, msg: Image) -> None:
        now = time.monotonic_ns()
        try:
            array = conv.decode_image(msg, role)
        except conv.ConversionError as exc:
            self._count_bad(exc.reason, str(exc))
            return
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        with self._lock:
            self._rates[role].tick(now)
            if role == "rgb" and not self.params.node.camera_frame:
                self._camera_frame_id = msg.header.frame_id
            result = self.assembler.add_image(role, stamp_ns, array, now)
            if result == TIME_JUMP_BACK:
                if not self._on_time_jump(role, stamp_ns):
                    return
                result = self.assembler.add_image(role, stamp_ns, array, now)
            if result == OUT_OF_ORDER and role == "rgb":
                self.get_logger().warning(f"colour image stamped {stamp_ns / 1e9:.3f} s is out of order: dropped",
                                       throttle_duration_sec=5.0)
            self._collect(now)

    @_guarded
    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            intrinsics = conv.intrinsics_from_camera_info(msg)
        except conv.ConversionError as exc:
            self._count_bad(exc.reason, str(exc))
            return
        with self._lock:
            self.intrinsics = intrinsics

    @_guarded
    def _on_depth_camera_info(self, msg: CameraInfo) -> None:
        try:
            intrinsics = conv.intrinsics_from_camera_info(msg)
        except conv.ConversionError as exc:
            self._count_bad("bad_depth_camera_info", str(exc))
            return
        with self._lock:
            self.depth_intrinsics = intrinsics

    @_guarded
    def _on_pose(self, msg) -> None:
        now = time.monotonic_ns()
        pose = msg.pose if isinstance(msg, PoseStamped) else msg.pose.pose
        try:
            T_world_pose = conv.pose_to_T(pose)
        except conv.ConversionError as exc:
            self._count_bad(exc.reason, str(exc))
            return
        frame_id = msg.header.frame_id
        if frame_id and frame_id != self.params.node.map_frame and "frame" not in self._warned:
            self._warned.add("frame")
            self.get_logger().warning(f"pose is in frame '{frame_id}', the map frame is '{self.params.node.map_frame}'; "
                                   "the map is expressed in the pose's frame")
        with self._lock:
            self._rates["pose"].tick(now)
            stamp_ns = conv.stamp_to_ns(msg.header.stamp)
            T_world_cam = T_world_pose @ self._T_pose_cam
            result = self.assembler.add_pose(stamp_ns, T_world_cam, now)
            if result == TIME_JUMP_BACK:
                if not self._on_time_jump("pose", stamp_ns):
                    return
                result = self.assembler.add_pose(stamp_ns, T_world_cam, now)
            if result != ACCEPTED:
                self.get_logger().warning(f"pose refused: {result}", throttle_duration_sec=5.0)
            self._collect(now)

    def _on_time_jump(self, role: str, stamp_ns: int) -> bool:
        """A stream's stamps jumped back (a bag restarted); reset the map or refuse per node.on_time_jump.
        True when the message should be added again (after the reset). Lock held."""
        if self.params.node.on_time_jump == "reset":
            self.get_logger().warning(
                f"{role} stamps jumped back in time (to {stamp_ns / 1e9:.3f} s): a bag restarted? "
                "resetting the map (node.on_time_jump=reset)")
            self.assembler.restart(role, stamp_ns)
            self._drops["queue_cleared_on_reset"] += len(self._queue)
            self._queue.clear()
            self._reset_requested = True
            self._time_jump_resets += 1
            self._wake.notify_all()
            return True
        self._drops["time_jump_back"] += role == "rgb"
        self.get_logger().error(
            f"refusing {role} stamped {stamp_ns / 1e9:.3f} s: stamps jumped back in time; call ~/reset "
            "or set node.on_time_jump:=reset to map the replay", throttle_duration_sec=5.0)
        return False

    def _collect(self, now: int) -> None:
        """Move assembled frames into the integration queue (lock held)."""
        for assembled in self.assembler.poll(now):
            self._frames_assembled += 1
            self._rates["assembled"].tick(now)
            self._queue.append((assembled, self.intrinsics, self.depth_intrinsics))
            while len(self._queue) > self.params.node.queue_size:
                self._queue.popleft()
                self._drops["queue_full"] += 1
            self._wake.notify()

    @_guarded
    def _pump(self) -> None:
        with self._lock:
            self._collect(time.monotonic_ns())

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while self._running and self.context.ok():
            with self._lock:
                if not self._queue and not self._reset_requested:
                    self._wake.wait(timeout=0.05)
                item = self._queue.popleft() if self._queue else None
                reset, self._reset_requested = self._reset_requested, False
            try:
                if reset:
                    with self._objects_lock, self._mapper_lock:
                        self.mapper.reset()
                    with self._lock:
                        self._map_version += 1
                if item is not None:
                    self._integrate(*item)
            except Exception as exc:  # never let the worker die silently
                if not (self._running and self.context.ok()):
                    return
                self.get_logger().error(f"integration: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)
                with self._lock:
                    self._drops["internal_error"] += 1
            try:
                with self._lock:
                    busy = bool(self._queue)
                if not busy:  # frames first: outputs are built when the queue is empty
                    self._publish_outputs()
            except Exception as exc:
                if not (self._running and self.context.ok()):
                    return  # shutting down: publishers are gone
                self.get_logger().error(f"outputs: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)

    def _integrate(self, assembled, intrinsics, depth_intrinsics) -> None:
        try:
            frame = frame_from_parts(assembled, intrinsics, depth_intrinsics)
        except AssemblyError as exc:
            with self._lock:
                self._drops[exc.reason] += 1
            self.get_logger().warning(f"frame at {assembled.stamp_ns / 1e9:.3f} s dropped: {exc}", throttle_duration_sec=5.0)
            return
        t0 = time.perf_counter()
        with self._mapper_lock:
            result = self.mapper.integrate(frame)
        if self.get_clock().ros_time_is_active:
            # sim time: stamps and /clock come from a bag, so measure from the colour image's receipt
            latency_ns = time.monotonic_ns() - assembled.received_ns
        else:  # from the image stamp: transport, pairing, queue and integration
            latency_ns = self.get_clock().now().nanoseconds - assembled.stamp_ns
        with self._lock:
            if result.accepted:
                self._camera_view = (frame.T_world_cam, frame.stamp_ns, frame.intrinsics)
                self._map_version += 1
                self._rates["integrated"].tick(time.monotonic_ns())
                self._latencies_ms.append(latency_ns / 1e6)
                self._integrate_ms.append((time.perf_counter() - t0) * 1e3)
            else:
                self._drops[f"rejected_{result.reason}"] += 1

    # ------------------------------------------------------------------ outputs
    def _stamp_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _publish_outputs(self) -> None:
        now = time.monotonic()
        node = self.params.node
        for name, rate in (("voxels", node.voxels_rate_hz), ("grid", node.grid_rate_hz), ("mesh", node.mesh_rate_hz)):
            pub = self.pubs[name]
            subscribers = pub.get_subscription_count()
            new_subscriber = subscribers > self._last_subscribers[name]
            self._last_subscribers[name] = subscribers
            if rate <= 0 or subscribers == 0:
                continue
            with self._lock:
                version = (self._map_version, self.mapper.predictions.version,
                           self._objects_version if name == "voxels" else 0)
            if version == self._published_version[name] and not new_subscriber:
                continue
            if now - self._last_publish[name] < 1.0 / rate and not new_subscriber:
                continue
            self._last_publish[name] = now
            self._published_version[name] = version
            pub.publish(self._build(name))

    def _build(self, name: str):
        frame_id, stamp = self.params.node.map_frame, self._stamp_ns()
        colors = self.label_space.colors
        include = self.params.mapper.completion.include_predicted
        with self._mapper_lock:
            if name == "voxels":
                return conv.voxels_to_cloud(self.mapper.labelled_voxels(include), colors, stamp, frame_id,
                                            self.params.node.color_by)
            if name == "mesh":
                return conv.mesh_to_marker(self.mapper.mesh(include), colors, stamp, frame_id, self.params.node.color_by)
            grid = self.mapper.traversability(include)
        return conv.grid_to_occupancy(grid, stamp, frame_id)

    def _publish_label_space(self) -> None:
        ls = self.label_space
        msg = LabelSpaceMsg()
        msg.header = Header(stamp=conv.ns_to_stamp(self._stamp_ns()), frame_id="")
        msg.ids = list(range(ls.num_classes))
        msg.names = list(ls.names)
        msg.colors = [ColorRGBA(r=float(c[0]) / 255, g=float(c[1]) / 255, b=float(c[2]) / 255, a=1.0) for c in ls.colors]
        msg.ignore_id = int(ls.ignore_id)
        self.pubs["label_space"].publish(msg)

    # ------------------------------------------------------------------ renders
    def _on_render_pose(self, msg: PoseStamped) -> None:
        frame_id = msg.header.frame_id
        if frame_id not in ("", self.params.node.map_frame):
            self._count_bad("render_pose_frame", f"~/render/pose is in frame '{frame_id}', expected the map frame "
                            f"'{self.params.node.map_frame}'")
            return
        try:
            T_world_cam = conv.pose_to_T(msg.pose)
        except conv.ConversionError as exc:
            self._count_bad("render_" + exc.reason, f"~/render/pose: {exc}")
            return
        stamp_ns = conv.stamp_to_ns(msg.header.stamp) or self._stamp_ns()  # the renders carry the request's stamp
        with self._lock:
            self._requested_view = (T_world_cam, stamp_ns, time.monotonic())

    def _render_view(self):
        """(T_world_cam, stamp_ns, camera intrinsics or None) to render from now, or None."""
        node = self.params.node
        with self._lock:
            requested, camera = self._requested_view, self._camera_view
        if requested is not None and (node.render_pose_hold_s == 0 or time.monotonic() - requested[2] < node.render_pose_hold_s):
            return requested[0], requested[1], camera[2] if camera is not None else self.intrinsics
        if node.render_follow_camera and camera is not None:
            return camera
        return None

    def _render_loop(self) -> None:
        last_key = None
        while self._running and self.context.ok():
            node = self.params.node
            period_s = 1.0 / node.render_rate_hz if node.render_rate_hz > 0 else 0.5
            t0 = time.monotonic()
            try:
                if node.render_rate_hz > 0 and any(p.get_subscription_count() for p in self.render_pubs.values()):
                    view = self._render_view()
                    with self._lock:
                        version = self._map_version
                    key = None if view is None else (view[1], version, node.render_width_px, node.render_height_px)
                    if view is not None and key != last_key:
                        self._publish_render(*view)
                        last_key = key
            except Exception as exc:
                if not (self._running and self.context.ok()):
                    return
                self.get_logger().error(f"render: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)
            time.sleep(max(0.0, period_s - (time.monotonic() - t0)))

    def _publish_render(self, T_world_cam: np.ndarray, stamp_ns: int, camera_intrinsics) -> None:
        from semantic_mapping.geometry.projection import intrinsics_from_fov

        node = self.params.node
        W, H = node.render_width_px, node.render_height_px
        intrinsics = (camera_intrinsics.scaled(W, H) if camera_intrinsics is not None
                      else intrinsics_from_fov(W, H, node.render_hfov_deg))
        t0 = time.perf_counter()
        with self._mapper_lock:  # only the incremental update; the render reads a snapshot
            scene = self.mapper.gaussians().snapshot()
        view = scene.render(intrinsics, T_world_cam, ignore_id=self.label_space.ignore_id)
        frame_id = self._camera_frame_id or "camera"
        labels = np.where(view.labels < 255, view.labels, 255).astype(np.uint8)
        self.render_pubs["rgb"].publish(conv.image_msg(view.rgb, "rgb8", stamp_ns, frame_id))
        self.render_pubs["semantic"].publish(conv.image_msg(labels, "mono8", stamp_ns, frame_id))
        self.render_pubs["semantic_color"].publish(
            conv.image_msg(self.label_space.colorize(view.labels), "rgb8", stamp_ns, frame_id))
        self.render_pubs["depth"].publish(conv.image_msg(view.depth_m, "32FC1", stamp_ns, frame_id))
        self.render_pubs["camera_info"].publish(conv.camera_info_msg(intrinsics, stamp_ns, frame_id))
        with self._lock:
            self._render_stats = {"renders": self._render_stats["renders"] + 1,
                                  "last_ms": 1000 * (time.perf_counter() - t0), "gaussians": len(scene)}

    # ------------------------------------------------------------------ label context
    def _context_loop(self) -> None:
        """Refresh the labels' surface context when a read found it out of date (outputs, renders, object
        classes) and it is at least `semantics.context_max_age_s` old: the map read under its lock, the
        diffusion without it, so reads never wait for it."""
        context, vmap = self.mapper.map.context, self.mapper.map
        while self._running and self.context.ok():
            try:
                if context.due():
                    with self._mapper_lock:
                        snapshot = context.snapshot(vmap)
                    if snapshot is not None:
                        context.refresh(snapshot)
            except Exception as exc:
                if not (self._running and self.context.ok()):
                    return
                self.get_logger().error(f"label context: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)
            self._stop.wait(CONTEXT_POLL_S)

    # ------------------------------------------------------------------ objects
    def _objects_loop(self) -> None:
        extracted_version = None  # map version of the last extraction
        while self._running and self.context.ok():
            node = self.params.node
            period_s = 1.0 / node.objects_rate_hz if node.objects_rate_hz > 0 else 0.5
            t0 = time.monotonic()
            try:
                if node.objects_rate_hz > 0 and self.mapper.object_slots is not None:
                    extracted_version = self._objects_cycle(node.objects_max_steps_per_cycle, extracted_version)
            except Exception as exc:
                if not (self._running and self.context.ok()):
                    return
                self.get_logger().error(f"objects: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)
                with self._lock:
                    self._objects_stats["errors"] += 1
            self._stop.wait(max(0.0, period_s - (time.monotonic() - t0)))

    def _objects_cycle(self, max_steps: int, extracted_version):
        """One cycle: queued frames -> views (map lock), optimisation (no map lock, in chunks), extraction
        (the map read under its lock, the objects built without it) and publication when anything
        changed. Returns the map version extracted at."""
        slots = self.mapper.object_slots
        t0 = time.perf_counter()
        views, lock_s = 0, 0.0  # lock_s: time this cycle held the map lock (integration waits that long at most)
        if slots.pending_frames:  # (offer() appends under the map lock; a frame missed now waits a cycle)
            with self._objects_lock, self._mapper_lock:
                t_lock = time.perf_counter()
                views = slots.prepare(self.mapper.map)
                lock_s = time.perf_counter() - t_lock
        steps, t_opt = 0, time.perf_counter()
        while steps < max_steps and self._running:
            self._yield_to_integration()
            with self._objects_lock:
                done = slots.optimise(min(OBJECT_STEPS_PER_CHUNK, max_steps - steps))
            if done == 0:
                break
            steps += done
        optimise_ms = 1000 * (time.perf_counter() - t_opt)
        with self._lock:
            version = self._map_version
        extracted = None
        if views or steps or version != extracted_version:
            with self._objects_lock:
                with self._mapper_lock:
                    t_lock = time.perf_counter()
                    with self._lock:
                        version = self._map_version  # no integration runs while the mapper lock is held
                        camera = self._camera_view
                    surface = slots.read_map(self.mapper.map)
                    lock_s += time.perf_counter() - t_lock
                extracted = slots.extract_from(surface)
            with self._lock:
                self._objects_version += 1
                self._objects_stats["count"] = len(extracted)  # before publishing: diagnostics never lag ~/objects
            stamp_ns = camera[1] if camera is not None else self._stamp_ns()
            self._publish_objects(extracted, stamp_ns)
            extracted_version = version
        with self._objects_lock:
            snapshot = {"views": slots.counters["views"], "views_without_masks": slots.counters["views_without_masks"],
                        "frames_dropped": slots.counters["frames_dropped"], "steps_due": slots.steps_due,
                        "steps_skipped": slots.counters["steps_skipped"],
                        "slots": slots.field.num_slots, "field_voxels": slots.field.num_voxels}
        with self._lock:
            stats = self._objects_stats
            stats.update(snapshot)
            stats["steps"] += steps
            stats["cycles"] += 1
            if steps or extracted is not None:
                stats["last_ms"] = 1000 * (time.perf_counter() - t0)
                stats["optimise_ms"] = optimise_ms
                stats["map_lock_ms"] = 1000 * lock_s
        return extracted_version

    def _yield_to_integration(self) -> None:
        """Frames first: while frames wait in the queue, hold back (up to OBJECT_YIELD_MAX_S) so that the
        optimisation does not take the cores the integration needs (it never blocks it: no map lock)."""
        end = time.monotonic() + OBJECT_YIELD_MAX_S
        while self._queue and self._running and time.monotonic() < end:  # (a racy read is fine here)
            time.sleep(0.01)  # polls: waiting on _wake could take the worker's notify

    def _publish_objects(self, objects: list, stamp_ns: int) -> None:
        frame_id = self.params.node.map_frame
        self.pubs["objects"].publish(conv.objects_to_msg(objects, stamp_ns, frame_id))
        self.pubs["object_markers"].publish(conv.objects_to_markers(objects, stamp_ns, frame_id))

    def status(self) -> MapperStatus:
        now = time.monotonic_ns()
        with self._lock:
            drops = collections.Counter(self._drops)
            drops.update(self.assembler.stats.drops)
            drops.update({f"message_{k}": v for k, v in self._bad_messages.items()})
            drops.update({f"message_{k}": v for k, v in self.assembler.stats.discarded.items()})
            latencies = np.array(self._latencies_ms) if self._latencies_ms else np.zeros(1)
            msg = MapperStatus()
            msg.frames_received = self._frames_assembled
            msg.input_rate_hz = float(self._rates["rgb"].hz(now))
            msg.integration_rate_hz = float(self._rates["integrated"].hz(now))
            msg.object_slot_count = int(self._objects_stats["count"])
        with self._mapper_lock:
            msg.frames_integrated = self.mapper.stats.frames_integrated
            msg.voxel_count = int(self.mapper.map.num_voxels)
            voting = self.mapper.voting
            msg.keyframe_count = len(voting.buffer) if voting is not None else 0
        msg.header = Header(stamp=conv.ns_to_stamp(self._stamp_ns()), frame_id=self.params.node.map_frame)
        msg.drop_reasons = sorted(drops)
        msg.drop_counts = [int(drops[k]) for k in msg.drop_reasons]
        msg.latency_ms_p50 = float(np.percentile(latencies, 50))
        msg.latency_ms_p95 = float(np.percentile(latencies, 95))
        msg.memory_mb = float(_rss_mb())
        return msg

    @_guarded
    def _publish_status(self) -> None:
        msg = self.status()
        self.pubs["status"].publish(msg)
        now = time.monotonic_ns()
        diag = DiagnosticStatus(name=f"{self.get_name()}: semantic mapping", hardware_id=self.get_fully_qualified_name())
        dropped = sum(msg.drop_counts)
        frame_drops = sum(c for r, c in zip(msg.drop_reasons, msg.drop_counts) if not r.startswith("message_"))
        diag.level = DiagnosticStatus.OK if frame_drops == 0 else DiagnosticStatus.WARN
        diag.message = f"{msg.frames_integrated} frames integrated, {frame_drops} frames dropped"
        values = {
            "frames_received": msg.frames_received,
            "frames_integrated": msg.frames_integrated,
            "integration_rate_hz": f"{msg.integration_rate_hz:.2f}",
            "latency_ms_p50": f"{msg.latency_ms_p50:.1f}",
            "latency_ms_p95": f"{msg.latency_ms_p95:.1f}",
            "memory_mb": f"{msg.memory_mb:.0f}",
            "voxel_count": msg.voxel_count,
            "dropped_total": dropped,
            "keyframe_count": msg.keyframe_count,
        }
        with self._mapper_lock:
            values["semantics_method"] = self.mapper.semantics_method
            completion = self.mapper.stats.completion
            values.update({"completion.status": completion.status, "completion.reason": completion.reason,
                           "completion.chunks_completed": completion.chunks_completed,
                           "completion.ms_per_chunk": f"{completion.ms_per_chunk:.0f}",
                           "completion.queue_length": completion.queue_length, "completion.errors": completion.errors,
                           "completion.predicted_voxels": self.mapper.predictions.num_voxels})
            context = self.mapper.map.context
            if context is not None:
                values.update({"semantics.context_refreshes": context.refreshes,
                               "semantics.context_ms": f"{context.ms_per_refresh:.0f}",
                               "semantics.context_map_lock_ms": f"{context.read_ms_per_refresh:.0f}"})
            voting = self.mapper.voting
            if voting is not None:
                values.update({"voting.voxels_voted": voting.stats.voxels_voted, "voting.pending_voxels": voting.pending,
                               "voting.pending_dropped": voting.stats.pending_dropped,
                               "voting.voxels_per_s": f"{voting.stats.voxels_per_s:.0f}",
                               "voting.frame_vote_voxels": voting.stats.frame_vote_voxels,
                               "voting.frame_vote_ms": f"{1000 * voting.stats.frame_vote_seconds / max(voting.stats.frame_vote_frames, 1):.1f}"})
        with self._lock:
            for role, rate in self._rates.items():
                if role not in ("assembled", "integrated"):
                    values[f"input_rate_hz.{role}"] = f"{rate.hz(now):.2f}"
            values["queue_length"] = len(self._queue)
            values["render.count"] = self._render_stats["renders"]
            values["render.last_ms"] = f"{self._render_stats['last_ms']:.1f}"
            values["render.gaussians"] = self._render_stats["gaussians"]
            values["objects.enabled"] = self.mapper.object_slots is not None
            objects = self._objects_stats
            for key in ("count", "views", "views_without_masks", "frames_dropped", "steps_due", "steps_skipped", "slots",
                        "field_voxels", "errors"):
                values[f"objects.{key}"] = objects[key]
            values["objects.last_ms"] = f"{objects['last_ms']:.1f}"
            values["objects.optimise_ms"] = f"{objects['optimise_ms']:.1f}"
            values["objects.map_lock_ms"] = f"{objects['map_lock_ms']:.1f}"
            values["time_jump_resets"] = self._time_jump_resets
            for role, count in self.assembler.stats.received.items():
                values[f"received.{role}"] = count
            if self._integrate_ms:
                values["integrate_ms_median"] = f"{np.median(self._integrate_ms):.1f}"
        for reason, count in zip(msg.drop_reasons, msg.drop_counts):
            values[f"dropped.{reason}"] = count
        diag.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array_msg = DiagnosticArray(header=Header(stamp=msg.header.stamp), status=[diag])
        self.diagnostics_pub.publish(array_msg)

    # ------------------------------------------------------------------ services
    def _on_save(self, request, response):
        path = request.path or self.params.node.default_map_path
        try:
            with self._mapper_lock:
                self.mapper.save(path)
        except Exception as exc:
            response.success, response.message = False, f"could not save the map to {path}: {exc}"
            self.get_logger().error(response.message)
            return response
        response.success, response.message = True, f"map saved to {os.path.abspath(path)}"
        self.get_logger().info(response.message)
        return response

    def _on_load(self, request, response):
        try:
            with self._objects_lock, self._mapper_lock:
                self.mapper.load(request.path)
        except Exception as exc:
            response.success, response.message = False, f"could not load {request.path!r} (map unchanged): {exc}"
            self.get_logger().error(response.message)
            return response
        with self._lock:
            self._map_version += 1
            self.assembler.reset()
            self._queue.clear()
        response.success, response.message = True, f"map loaded from {request.path}"
        self.get_logger().info(response.message)
        return response

    def _on_reset(self, request, response):
        with self._lock:
            self.assembler.reset()
            self._queue.clear()
        with self._objects_lock, self._mapper_lock:
            self.mapper.reset()
        with self._lock:
            self._map_version += 1
        response.success, response.message = True, "map reset"
        self.get_logger().info("map reset (service)")
        return response

    def shutdown(self) -> None:
        self._running = False
        self._stop.set()
        with self._lock:
            self._wake.notify_all()
        self._worker.join(timeout=5.0)
        self._render_thread.join(timeout=5.0)
        self._objects_thread.join(timeout=5.0)
        if self._context_thread is not None:
            self._context_thread.join(timeout=5.0)
        self.mapper.close()


def main(args: Optional[list] = None) -> int:
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    try:
        node = MappingNode()
    except (ConfigError, rclpy.exceptions.ParameterException, ValueError) as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"invalid parameter: {exc}")
        if rclpy.ok():
            rclpy.shutdown()
        return 2
    # One executor thread: every callback is short (integration and output building run in the worker).
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except _rclpy.RCLError:
        # A signal can shut the context down while the executor builds its wait set; rclpy then raises
        # RCLError ("context is not valid") instead of ExternalShutdownException. That is a clean stop.
        if rclpy.ok():
            raise
    finally:
        node.shutdown()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
