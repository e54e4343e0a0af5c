"""Drive a running mapping node with a synthetic scene and check what it publishes.

    python -m semantic_mapping.ros.replay --seed 3 --frames 40 --width 320 --out result.json [--checks]

Pre-renders the frames (so that rendering does not compete with the node while streaming), then
publishes them at `--rate` Hz, stamped with the current time: camera_info, pose, depth (16UC1 mm),
labels (mono8) + confidence (32FC1), instance masks (16UC1, the simulator's), rgb8. It reads the
node's outputs, status and objects (~/objects, ~/object_markers) and writes a JSON result. With --checks it also: streams a few frames before any camera_info
(must be dropped), compares the node's map with the library's own on the same frames (3D mIoU
against ground truth), exercises save -> reset -> load, and sends a stream of malformed messages.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import OccupancyGrid
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from semantic_mapping.msg import LabelSpace as LabelSpaceMsg
from semantic_mapping.msg import MapperStatus, ObjectSlot, ObjectSlotArray
from semantic_mapping.ros import conversions as conv
from semantic_mapping.srv import LoadMap, SaveMap

CAMERA_FRAME = "camera_color_optical_frame"
MAP_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
SENSOR_PUB_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
RENDER_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)


def simulated_frames(seed: int, num_frames: int, width: int):
    """(recording, frames with labels + confidence) of scene `seed` rendered at `width` pixels wide."""
    from semantic_mapping.config import SimConfig
    from semantic_mapping.sim.segmenter import labels_and_confidence
    from semantic_mapping.sim.sequence import simulate

    config = SimConfig()
    cam = config.camera
    s = width / cam.width_px
    camera = replace(cam, width_px=width, height_px=int(round(cam.height_px * s)), fx=cam.fx * s, fy=cam.fy * s,
                     cx=(cam.cx + 0.5) * s - 0.5, cy=(cam.cy + 0.5) * s - 0.5)
    recording = simulate(seed, replace(config, camera=camera), num_frames=num_frames)
    frames = []
    for i in range(len(recording)):
        frame = recording.frame(i)
        frame.labels, frame.label_confidence = labels_and_confidence(frame.class_probs)
        frame.class_probs = None
        frames.append(frame)
    return recording, frames


def frame_messages(frame, stamp_ns: int) -> dict:
    """{topic: message} of one frame (stamps set later by `restamp`)."""
    depth_mm = np.clip(np.round(frame.depth_m * 1000.0), 0, 65535).astype(np.uint16)
    pose = PoseStamped()
    pose.header.frame_id = "map"
    conv.T_to_pose(frame.T_world_cam, pose.pose)
    msgs = {
        "rgb/camera_info": conv.camera_info_msg(frame.intrinsics, stamp_ns, CAMERA_FRAME),
        "pose": pose,
        "depth/image": conv.image_msg(depth_mm, "16UC1", stamp_ns, CAMERA_FRAME),
        "semantic/labels": conv.image_msg(frame.labels.astype(np.uint8), "mono8", stamp_ns, CAMERA_FRAME),
        "semantic/confidence": conv.image_msg(frame.label_confidence.astype(np.float32), "32FC1", stamp_ns, CAMERA_FRAME),
        "rgb/image": conv.image_msg(frame.rgb, "rgb8", stamp_ns, CAMERA_FRAME),
    }
    if frame.instance_masks is not None:
        msgs["instances/masks"] = conv.image_msg(frame.instance_masks.astype(np.uint16), "16UC1", stamp_ns, CAMERA_FRAME)
    return msgs


def restamp(msgs: dict, stamp_ns: int) -> None:
    for msg in msgs.values():
        msg.header.stamp = conv.ns_to_stamp(stamp_ns)


class Driver(Node):
    def __init__(self, node_name: str = "semantic_mapping"):
        super().__init__("semantic_mapping_replay")
        self.target = node_name
        self.pubs = {}
        for topic, t in (("rgb/camera_info", CameraInfo), ("pose", PoseStamped), ("depth/image", Image),
                         ("semantic/labels", Image), ("semantic/confidence", Image), ("instances/masks", Image),
                         ("rgb/image", Image)):
            self.pubs[topic] = self.create_publisher(t, topic, SENSOR_PUB_QOS)
        self.latest = {}
        self.counts = {}
        self.received_s = {}  # key -> monotonic receive times (s)
        for key, topic, t in (("label_space", "label_space", LabelSpaceMsg), ("status", "status", MapperStatus),
                              ("objects", "objects", ObjectSlotArray), ("object_markers", "object_markers", MarkerArray)):
            self.create_subscription(t, f"/{node_name}/{topic}", lambda m, k=key: self._store(k, m), MAP_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self._store("diagnostics", m), 10)
        self.save = self.create_client(SaveMap, f"/{node_name}/save_map")
        self.load = self.create_client(LoadMap, f"/{node_name}/load_map")
        self.reset = self.create_client(Trigger, f"/{node_name}/reset")

    def subscribe_map_outputs(self) -> None:
        """Subscribe to the heavy outputs (the node builds them only while someone listens)."""
        for key, topic, t in (("voxels", "voxels", PointCloud2), ("mesh", "mesh", Marker),
                              ("grid", "traversability", OccupancyGrid)):
            self.create_subscription(t, f"/{self.target}/{topic}", lambda m, k=key: self._store(k, m), MAP_QOS)

    def subscribe_renders(self) -> None:
        """Subscribe to the Gaussian-splat renders and make the render pose publisher."""
        for key in ("semantic", "depth", "camera_info"):
            t = CameraInfo if key == "camera_info" else Image
            self.create_subscription(t, f"/{self.target}/render/{key}", lambda m, k=key: self._store("render_" + k, m),
                                     RENDER_QOS)
        self.pubs["render_pose"] = self.create_publisher(PoseStamped, f"/{self.target}/render/pose", RENDER_QOS)

    def _store(self, key, msg):
        self.latest[key] = msg
        self.counts[key] = self.counts.get(key, 0) + 1
        self.received_s.setdefault(key, []).append(time.monotonic())

    def rate_hz(self, key: str, start_s: float, end_s: float) -> float:
        """Messages per second of `key` received between monotonic times start_s and end_s, from the
        first to the last of them (0 with fewer than two)."""
        times = [t for t in self.received_s.get(key, []) if start_s <= t <= end_s]
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=min(0.02, max(end - time.monotonic(), 0.0)))

    def wait_for(self, predicate, timeout_s: float, what: str) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if predicate():
                return True
            rclpy.spin_once(self, timeout_sec=0.05)
        print(f"timed out after {timeout_s} s waiting for {what}", file=sys.stderr)
        return False

    def call(self, client, request, timeout_s: float = 30.0):
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise RuntimeError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        end = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.05)
        if not future.done():
            raise RuntimeError(f"service {client.srv_name} did not answer in {timeout_s} s")
        return future.result()

    def publish(self, msgs: dict, gap_s: float = 0.0) -> None:
        """Publish in order; gap_s between messages spreads a frame's burst like independent drivers do
        (a burst of large best-effort messages overflows the receiver's transport queue)."""
        for i, (topic, msg) in enumerate(msgs.items()):
            if i and gap_s:
                time.sleep(gap_s)
            self.pubs[topic].publish(msg)

    def status_drops(self) -> dict:
        s = self.latest.get("status")
        return dict(zip(s.drop_reasons, s.drop_counts)) if s else {}

    def fresh_status(self, timeout_s: float = 5.0):
        """The next status message published after now."""
        before = self.counts.get("status", 0)
        self.wait_for(lambda: self.counts.get("status", 0) > before, timeout_s, "a status message")
        return self.latest.get("status")


def stream(driver: Driver, frames: list, rate_hz: float, with_camera_info: bool = True, gap_s: float = 0.003) -> list:
    """Publish frames at rate_hz stamped now; returns the stamps used."""
    prepared = [frame_messages(f, 0) for f in frames]
    stamps = []
    period = 1.0 / rate_hz
    start = time.monotonic()
    for i, msgs in enumerate(prepared):
        target = start + i * period
        while time.monotonic() < target:
            rclpy.spin_once(driver, timeout_sec=max(0.0, min(0.005, target - time.monotonic())))
        stamp = driver.get_clock().now().nanoseconds
        restamp(msgs, stamp)
        if not with_camera_info:
            msgs = {k: v for k, v in msgs.items() if k != "rgb/camera_info"}
        driver.publish(msgs, gap_s)
        stamps.append(stamp)
    return stamps


def _cloud_summary(msg) -> dict:
    arrays = conv.cloud_to_arrays(msg)
    slots = arrays["slot"]
    return {"points": int(len(arrays["label"])), "fields": [f.name for f in msg.fields],
            "slot_nonzero": int((slots > 0).sum()), "slot_ids": sorted(int(v) for v in np.unique(slots[slots > 0])),
            "predicted": int(arrays["predicted"].sum())}


def objects_summary(msg, label_names: list) -> dict:
    """What an ObjectSlotArray holds, and whether it keeps the message's contract."""
    slots = list(msg.slots)
    ids = [int(s.id) for s in slots]

    def class_ok(s) -> bool:
        if s.class_id == ObjectSlot.CLASS_UNKNOWN:
            return s.class_name == ""
        return 0 <= s.class_id < len(label_names) and s.class_name == label_names[s.class_id]

    return {
        "count": len(slots), "ids": ids, "frame_id": msg.header.frame_id, "stamp_ns": conv.stamp_to_ns(msg.header.stamp),
        "ids_sorted_unique": ids == sorted(set(ids)),
        "class_names_consistent": all(class_ok(s) for s in slots),
        "classes": sorted({s.class_name or "unknown" for s in slots}),
        "min_box_size_m": min((min(s.box_size.x, s.box_size.y, s.box_size.z) for s in slots), default=0.0),
        "confidence_in_range": all(0.0 <= s.confidence <= 1.0 and 0.0 <= s.slot_confidence <= 1.0
                                   and 0.0 <= s.observed_fraction <= 1.0 for s in slots),
        "mean_slot_confidence": float(np.mean([s.slot_confidence for s in slots])) if slots else 0.0,
        "voxels": int(sum(s.voxel_count for s in slots)),
        "headers_match": all(s.header.frame_id == msg.header.frame_id and s.header.stamp == msg.header.stamp
                             for s in slots),
    }


def markers_summary(msg) -> dict:
    markers = list(msg.markers)
    return {"count": len(markers), "first_action": int(markers[0].action) if markers else -1,
            "cubes": sum(1 for m in markers if m.type == Marker.CUBE and m.action == Marker.ADD),
            "texts": sum(1 for m in markers if m.type == Marker.TEXT_VIEW_FACING and m.action == Marker.ADD),
            "texts_sample": [m.text for m in markers if m.type == Marker.TEXT_VIEW_FACING][:5]}


def _diagnostics(driver: Driver) -> dict:
    diag = driver.latest.get("diagnostics")
    return {kv.key: kv.value for st in diag.status for kv in st.values} if diag else {}


def wait_for_completion(driver: Driver, timeout_s: float) -> bool:
    """Wait until the node's completion worker has no chunk waiting and has completed one at least;
    False at once when completion does not run."""
    def done():
        diag = _diagnostics(driver)
        return diag.get("completion.status") not in (None, "running") or (
            diag.get("completion.queue_length") == "0" and diag.get("completion.chunks_completed", "0") != "0")
    return driver.wait_for(done, timeout_s, "the completion worker's due chunks") and \
        _diagnostics(driver).get("completion.status") == "running"


def wait_for_objects(driver: Driver, after_ns: int, timeout_s: float) -> bool:
    """Wait for a non-empty ~/objects extracted at a map stamp of at least `after_ns`; False at once
    when the node's diagnostics say objects are off."""
    def fresh():
        msg = driver.latest.get("objects")
        return msg is not None and len(msg.slots) > 0 and conv.stamp_to_ns(msg.header.stamp) >= after_ns

    def done():
        return fresh() or _diagnostics(driver).get("objects.enabled") == "False"
    if not driver.wait_for(done, timeout_s, "the objects of the streamed frames") or not fresh():
        return False
    # then the optimisation steps still due, and the extraction after them
    driver.wait_for(lambda: _diagnostics(driver).get("objects.steps_due") == "0", timeout_s, "the objects' steps")
    driver.spin_for(1.5)
    return fresh()


def _map_quality(mapper_path: str, config, mesh) -> dict:
    from semantic_mapping.eval.mapping_eval import evaluate_map
    from semantic_mapping.pipeline import Mapper

    mapper = Mapper(config)
    mapper.load(mapper_path)
    return evaluate_map(mapper, mesh)


def malformed_stream(driver: Driver, good_frame) -> dict:
    """Publish malformed messages, each on its own stamp; returns {what: drop counter expected to grow}."""
    base = good_frame
    t = driver.get_clock().now().nanoseconds
    sent = {}

    def fresh():
        nonlocal t
        t += 50_000_000
        msgs = frame_messages(base, t)
        restamp(msgs, t)
        msgs.pop("rgb/camera_info")
        return msgs

    def send(msgs, pause=0.05):
        driver.publish(msgs, 0.003)
        driver.spin_for(pause)

    # wrong rgb encoding
    m = fresh()
    m["rgb/image"].encoding = "yuv422_yuy2"
    send(m)
    sent["wrong rgb encoding"] = "message_bad_rgb"
    # rgb row step smaller than the width
    m = fresh()
    m["rgb/image"].step = 10
    send(m)
    sent["rgb step too small"] = "message_bad_rgb"
    # depth data truncated
    m = fresh()
    m["depth/image"].data = m["depth/image"].data[: len(m["depth/image"].data) // 2]
    send(m)
    sent["depth data truncated"] = "message_bad_depth"
    # depth of another size than rgb (and no depth camera_info)
    m = fresh()
    small = conv.image_msg(np.full((8, 8), 1000, np.uint16), "16UC1", t, CAMERA_FRAME)
    m["depth/image"] = small
    send(m, 0.3)
    sent["depth size mismatch"] = "size_mismatch_depth"
    # labels in a float encoding (published alone: a frame without them would still fuse geometry)
    labels = conv.image_msg(np.zeros((4, 4), np.float32), "32FC1", t + 1, CAMERA_FRAME)
    send({"semantic/labels": labels})
    sent["labels wrong encoding"] = "message_bad_labels"
    # NaN pose
    pose = PoseStamped()
    pose.header.stamp = conv.ns_to_stamp(t + 2)
    pose.pose.position.x = math.nan
    pose.pose.orientation.w = 1.0
    send({"pose": pose})
    sent["NaN pose"] = "message_pose_invalid"
    # zero quaternion
    pose = PoseStamped()
    pose.header.stamp = conv.ns_to_stamp(t + 3)
    send({"pose": pose})
    # colour image older than the last integrated frame (stamps out of order)
    m = frame_messages(base, t - 120_000_000)
    restamp(m, t - 120_000_000)
    m.pop("rgb/camera_info")
    m.pop("pose")
    send(m)
    sent["stamp out of order"] = "stamp_out_of_order"
    # CameraInfo with a zero focal length
    info = conv.camera_info_msg(base.intrinsics, t, CAMERA_FRAME)
    info.k = [0.0] * 9
    send({"rgb/camera_info": info})
    sent["bad camera_info"] = "message_bad_camera_info"
    driver.spin_for(1.0)  # let the node resolve the waiting frames (max_wait_s)
    return sent


def render_checks(driver: Driver, frame, stamps: list) -> dict:
    """Renders follow the camera, then serve a requested pose: labels against that view's ground truth."""
    import cv2

    if "render_pose" not in driver.pubs:
        driver.subscribe_renders()
    followed = driver.wait_for(lambda: "render_semantic" in driver.latest, 20.0, "a render following the camera")
    out = {"followed_camera": followed and conv.stamp_to_ns(driver.latest["render_semantic"].header.stamp) in stamps}
    request = PoseStamped()
    request.header.frame_id = "map"
    stamp_ns = driver.get_clock().now().nanoseconds
    request.header.stamp = conv.ns_to_stamp(stamp_ns)
    conv.T_to_pose(frame.T_world_cam, request.pose)
    driver.wait_for(lambda: driver.pubs["render_pose"].get_subscription_count() > 0, 10.0, "the render pose subscriber")
    driver.pubs["render_pose"].publish(request)

    def served():
        return all(k in driver.latest and conv.stamp_to_ns(driver.latest[k].header.stamp) == stamp_ns
                   for k in ("render_semantic", "render_depth", "render_camera_info"))
    out["served_request"] = driver.wait_for(served, 20.0, "the render of the requested pose")
    if not out["served_request"]:
        return out
    semantic, info = driver.latest["render_semantic"], driver.latest["render_camera_info"]
    labels = np.frombuffer(bytes(semantic.data), np.uint8).reshape(semantic.height, semantic.step)[:, :semantic.width]
    truth = cv2.resize(frame.ground_truth.labels.astype(np.uint8), (semantic.width, semantic.height),
                       interpolation=cv2.INTER_NEAREST)
    labelled = (labels != 255) & (truth != 255)
    out.update({"width": semantic.width, "height": semantic.height, "encoding": semantic.encoding,
                "camera_info_size": [info.width, info.height], "coverage": float(labelled.mean()),
                "agreement": float((labels[labelled] == truth[labelled]).mean()) if labelled.any() else 0.0})
    return out


def run(args) -> dict:
    from semantic_mapping.config import FusionConfig, MapperConfig, ObjectsConfig

    t0 = time.monotonic()
    recording, frames = simulated_frames(args.seed, args.frames + (3 if args.checks else 0), args.width)
    result = {"seed": args.seed, "frames": args.frames, "width": args.width, "rate_hz": args.rate,
              "render_s": time.monotonic() - t0}
    rclpy.init()
    driver = Driver(args.node_name)
    try:
        ok = driver.wait_for(
            lambda: all(p.get_subscription_count() > 0 for p in driver.pubs.values()) and "label_space" in driver.latest,
            args.startup_timeout, "the node to come up")
        if not ok:
            raise RuntimeError("the mapping node did not come up")
        result["label_space_classes"] = len(driver.latest["label_space"].names)
        driver.spin_for(1.0)  # let discovery settle on both sides
        if args.checks:
            # a few frames before any camera_info: dropped, counted, the map stays empty
            stream(driver, frames[:3], args.rate, with_camera_info=False)
            driver.spin_for(1.0)
            frames = frames[3:]
        if args.watch_renders:
            driver.subscribe_renders()
        stream_start_s = time.monotonic()
        stamps = stream(driver, frames, args.rate)
        stream_end_s = time.monotonic()
        total = len(frames)

        def settled():
            s = driver.latest.get("status")
            if s is None:
                return False
            return s.frames_integrated + sum(
                c for r, c in zip(s.drop_reasons, s.drop_counts) if not r.startswith("message_")
                and r not in ("no_camera_info",)) >= total
        driver.wait_for(settled, args.settle_timeout, "the node to integrate every frame")
        driver.spin_for(1.0)
        # objects of the last frames (the objects thread runs at node.objects_rate_hz)
        objects_fresh = wait_for_objects(driver, stamps[max(0, len(stamps) - 5)] if stamps else 0, args.objects_timeout)
        status = driver.fresh_status()
        drops = driver.status_drops()
        result.update({
            "published": total,
            "integrated": int(status.frames_integrated),
            "drops": drops,
            "drop_rate": 1.0 - status.frames_integrated / total,
            "latency_ms_p50": float(status.latency_ms_p50),
            "latency_ms_p95": float(status.latency_ms_p95),
            "memory_mb": float(status.memory_mb),
            "voxel_count": int(status.voxel_count),
            "stream_s": (stamps[-1] - stamps[0]) / 1e9 if len(stamps) > 1 else 0.0,
            "renders_received": driver.counts.get("render_semantic", 0),
            "objects_fresh": objects_fresh,
            "object_count": len(driver.latest["objects"].slots) if "objects" in driver.latest else 0,
            "objects_messages": driver.counts.get("objects", 0),
            "objects_rate_hz": driver.rate_hz("objects", stream_start_s, stream_end_s),
        })
        label_names = list(driver.latest["label_space"].names)
        if "objects" in driver.latest:
            result["objects"] = objects_summary(driver.latest["objects"], label_names)
        if "object_markers" in driver.latest:
            result["object_markers"] = markers_summary(driver.latest["object_markers"])
        diagnostics = _diagnostics(driver)
        for name, prefix in (("objects", "objects."), ("completion", "completion."), ("context", "semantics.context")):
            result[f"{name}_diagnostics"] = {k: v for k, v in diagnostics.items() if k.startswith(prefix)}
        if not args.checks:
            return result
        result["completion_drained"] = wait_for_completion(driver, args.completion_timeout)

        # outputs arrive (subscribed only now: the node builds them for subscribers only)
        driver.subscribe_map_outputs()
        driver.wait_for(lambda: all(k in driver.latest for k in ("voxels", "grid", "mesh")), 20.0, "voxels, grid and mesh")
        driver.spin_for(1.5)  # the newest versions after the last frame
        def slots_agree():  # the cloud's slot ids are objects of the latest ~/objects
            cloud, objects = driver.latest.get("voxels"), driver.latest.get("objects")
            if cloud is None or objects is None:
                return False
            ids = {int(s.id) for s in objects.slots}
            return bool(ids) and set(_cloud_summary(cloud)["slot_ids"]) <= ids
        result["voxel_slots_are_objects"] = driver.wait_for(slots_agree, 10.0, "the cloud's slots to match ~/objects")
        voxels = driver.latest.get("voxels")
        result["voxels"] = _cloud_summary(voxels) if voxels else None
        if "objects" in driver.latest:
            result["objects"] = objects_summary(driver.latest["objects"], label_names)
        if "object_markers" in driver.latest:
            result["object_markers"] = markers_summary(driver.latest["object_markers"])
        grid = driver.latest.get("grid")
        result["grid"] = {"width": grid.info.width, "height": grid.info.height,
                          "free": int(sum(1 for v in grid.data if v == 0)),
                          "occupied": int(sum(1 for v in grid.data if v == 100)),
                          "frame_id": grid.header.frame_id} if grid else None
        mesh = driver.latest.get("mesh")
        result["mesh"] = {"points": len(mesh.points), "colors": len(mesh.colors), "type": mesh.type,
                          "frame_id": mesh.header.frame_id} if mesh else None
        diag = driver.latest.get("diagnostics")
        result["diagnostics"] = {kv.key: kv.value for st in diag.status for kv in st.values} if diag else {}

        result["render"] = render_checks(driver, frames[len(frames) // 2], stamps)

        # quality against ground truth, versus the library on the same frames (the baseline)
        tmp = Path(tempfile.mkdtemp(prefix="sm_replay_"))
        saved = driver.call(driver.save, SaveMap.Request(path=str(tmp / "node_map.npz")))
        result["save"] = {"success": saved.success, "message": saved.message}
        # the map's labels are compared; the reference needs no object slots
        config = MapperConfig(fusion=FusionConfig(voxel_size_m=args.voxel_size, device="cpu"),
                              objects=ObjectsConfig(enabled=False))
        if saved.success:
            from semantic_mapping.pipeline import Mapper

            result["node_quality"] = _scalar(_map_quality(str(tmp / "node_map.npz"), config, recording.mesh))
            reference = Mapper(config)
            for f in frames:
                reference.integrate(f)
            reference.save(tmp / "reference.npz")
            result["reference_quality"] = _scalar(_map_quality(str(tmp / "reference.npz"), config, recording.mesh))
            result["reference_voxels"] = int(reference.map.num_voxels)

        # save -> reset -> load restores the map
        points_before = result["voxels"]["points"] if result["voxels"] else -1
        reset = driver.call(driver.reset, Trigger.Request())
        driver.wait_for(lambda: driver.latest["voxels"].width == 0, 10.0, "an empty cloud after reset")
        after_reset = driver.latest["voxels"].width
        loaded = driver.call(driver.load, LoadMap.Request(path=str(tmp / "node_map.npz")))
        driver.wait_for(lambda: driver.latest["voxels"].width == points_before, 10.0, "the cloud after load")
        bad_load = driver.call(driver.load, LoadMap.Request(path=str(tmp / "does_not_exist.npz")))
        result["save_reset_load"] = {
            "before": points_before, "after_reset": int(after_reset), "reset_ok": reset.success,
            "load_ok": loaded.success, "after_load": int(driver.latest["voxels"].width),
            "bad_load_ok": bad_load.success, "bad_load_message": bad_load.message,
        }

        # malformed messages leave the node running, are counted, and do not change the map
        before = driver.fresh_status()
        sent = malformed_stream(driver, frames[-1])
        after = driver.fresh_status()
        drops_after = dict(zip(after.drop_reasons, after.drop_counts))
        drops_before = dict(zip(before.drop_reasons, before.drop_counts))
        result["malformed"] = {
            "sent": sent,
            "counted": {what: drops_after.get(key, 0) - drops_before.get(key, 0) for what, key in sent.items()},
            "integrated_before": int(before.frames_integrated), "integrated_after": int(after.frames_integrated),
            "voxels_before": int(before.voxel_count), "voxels_after": int(after.voxel_count),
            "drops_after": drops_after,
        }
        result["no_camera_info_drops"] = drops_after.get("no_camera_info", 0)
        return result
    finally:
        driver.destroy_node()
        rclpy.try_shutdown()


def _scalar(quality: dict) -> dict:
    return {k: v for k, v in quality.items() if isinstance(v, (int, float))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--voxel-size", type=float, default=0.04)
    parser.add_argument("--node-name", default="semantic_mapping")
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    parser.add_argument("--settle-timeout", type=float, default=30.0)
    parser.add_argument("--completion-timeout", type=float, default=90.0,
                        help="--checks: seconds to wait for the node's completion worker to finish the chunks due")
    parser.add_argument("--objects-timeout", type=float, default=15.0,
                        help="seconds to wait after the stream for the objects of its last frames")
    parser.add_argument("--checks", action="store_true")
    parser.add_argument("--watch-renders", action="store_true",
                        help="subscribe to the node's Gaussian-splat renders while streaming (a viewer's load)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = run(args)
    Path(args.out).write_text(json.dumps(result, indent=2, default=float))
    print(json.dumps({k: v for k, v in result.items() if k in ("integrated", "drop_rate", "latency_ms_p50",
                                                               "latency_ms_p95", "object_count")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
