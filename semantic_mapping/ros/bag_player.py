"""Play a ROS 2 bag into live topics without ros2cli: rosbags reads it, rclpy publishes it.

    python -m semantic_mapping.ros.bag_player BAG [--rate R] [--reliable] [--prefix /ns]
        [--wait-subscribers S] [--prime-camera-info] [--loops N] [--loop-gap S] [--topics /a /b] [--clock]

Messages go out in bag-time order at the bag's own timing scaled by --rate (2 = twice as fast),
on the recorded topic names (with --prefix prepended, e.g. /robot1/rgb/image), as the recorded
serialized bytes (no decode/encode on the way: rclpy publishes raw CDR for the publisher's type).
Messages of one bag instant go out together, CameraInfo first (a node drops images that come
before any intrinsics; recorders may write the image of an instant before its CameraInfo).
Header stamps are the recorded ones; a node replaying them needs no use_sim_time for mapping,
and --loops N > 1 replays the bag again from its start (the stamps then jump back in time).
--clock publishes the bag time on /clock before each instant's messages (for nodes run with
use_sim_time:=true, as `ros2 bag play --clock` does).

--reliable publishes with reliable QoS (for a node run with node.reliable_inputs:=true), and at the
end waits until the subscribers acknowledged everything. --wait-subscribers S waits up to S seconds
until every publisher has a subscriber before the first message (a player started beside the
node would otherwise send the first frames before discovery finished). --prime-camera-info sends
each camera_info topic's first message before the bag, so that the first frames find intrinsics
even when the node's executor serves the image callbacks first.
Prints one JSON line with what was published; exit code 2 for a bag it cannot play.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Optional

import rclpy
from builtin_interfaces.msg import Time
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock

PLAYER_NODE_NAME = "semantic_mapping_bag_player"
CLOCK_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1)


def message_class(msgtype: str):
    """The rclpy message class of a rosbag2 type name such as 'sensor_msgs/msg/Image'."""
    parts = msgtype.split("/")
    if len(parts) == 2:  # 'pkg/Name' (ROS 1 style) -> pkg/msg/Name
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"not a message type name: {msgtype!r}")
    package, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"message type {msgtype} is not available in this ROS environment ({exc})") from exc


def prefixed(topic: str, prefix: str) -> str:
    """`prefix` + the absolute recorded topic name ('/ns' + '/rgb/image' -> '/ns/rgb/image')."""
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    return prefix + "/" + topic.lstrip("/")


def input_qos(reliable: bool, depth: int = 100) -> QoSProfile:
    return QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        history=HistoryPolicy.KEEP_LAST, depth=depth, durability=DurabilityPolicy.VOLATILE,
    )


def _instants(messages):
    """(bag time, [(connection, raw), ...]) per bag timestamp, camera_info messages first within one
    instant: a frame's image written before its CameraInfo must not reach a node before any intrinsics."""
    group, stamp = [], None
    for connection, bag_ns, raw in messages:
        if group and bag_ns != stamp:
            yield stamp, sorted(group, key=lambda m: not m[0].msgtype.endswith("/CameraInfo"))
            group = []
        stamp = bag_ns
        group.append((connection, raw))
    if group:
        yield stamp, sorted(group, key=lambda m: not m[0].msgtype.endswith("/CameraInfo"))


class BagPlayer(Node):
    """One publisher per recorded topic; `play` sends the bag's messages at its timing / rate."""

    def __init__(self, bag: Path, prefix: str = "", reliable: bool = False, topics: Optional[list] = None,
                 clock: bool = False):
        super().__init__(PLAYER_NODE_NAME)
        self.bag = Path(bag)
        self.reliable = reliable
        with Reader(self.bag) as reader:
            connections = [c for c in reader.connections if not topics or c.topic in topics]
            if topics:
                missing = sorted(set(topics) - {c.topic for c in connections})
                if missing:
                    raise ValueError(f"{self.bag} has no topic {missing}; it has {sorted(reader.topics)}")
            if not connections:
                raise ValueError(f"{self.bag} has no messages to play")
            self.duration_ns = max(reader.duration, 0)
        self.publishers_by_topic = {}
        for c in connections:
            if c.topic not in self.publishers_by_topic:
                self.publishers_by_topic[c.topic] = self.create_publisher(
                    message_class(c.msgtype), prefixed(c.topic, prefix), input_qos(reliable))
        self.topics = sorted(self.publishers_by_topic)
        self.clock_pub = self.create_publisher(Clock, "/clock", CLOCK_QOS) if clock else None

    def wait_for_subscribers(self, timeout_s: float) -> list:
        """Wait until every publisher has a subscriber (or timeout); the topics still without one."""
        end = time.monotonic() + timeout_s
        while True:
            lonely = [t for t, p in self.publishers_by_topic.items() if p.get_subscription_count() == 0]
            if not lonely or time.monotonic() >= end:
                return lonely
            rclpy.spin_once(self, timeout_sec=0.05)

    def prime_camera_info(self, settle_s: float = 0.5) -> int:
        """Publish the first CameraInfo of each camera_info topic ahead of the bag, then wait settle_s:
        what a latched camera_info gives a node started before the player. The number sent."""
        sent = set()
        with Reader(self.bag) as reader:
            connections = [c for c in reader.connections
                           if c.topic in self.publishers_by_topic and c.msgtype.endswith("/CameraInfo")]
            if not connections:
                return 0
            for connection, _, raw in reader.messages(connections=connections):
                if connection.topic not in sent:
                    sent.add(connection.topic)
                    self.publishers_by_topic[connection.topic].publish(bytes(raw))
                if len(sent) == len({c.topic for c in connections}):
                    break
        if self.reliable:
            for topic in sent:
                self.publishers_by_topic[topic].wait_for_all_acked(Duration(seconds=5))
        time.sleep(settle_s)
        return len(sent)

    def play(self, rate: float = 1.0, loops: int = 1, loop_gap_s: float = 0.5) -> dict:
        """Publish every message in bag-time order; {'messages', 'per_topic', 'loops', 'seconds'}."""
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        per_topic = dict.fromkeys(self.topics, 0)
        start = time.monotonic()
        for loop in range(loops):
            if loop:
                time.sleep(loop_gap_s)
            loop_start, first_ns = time.monotonic(), None
            with Reader(self.bag) as reader:
                connections = [c for c in reader.connections if c.topic in self.publishers_by_topic]
                for bag_ns, group in _instants(reader.messages(connections=connections)):
                    if first_ns is None:
                        first_ns = bag_ns
                    target = loop_start + (bag_ns - first_ns) / 1e9 / rate
                    delay = target - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    if self.clock_pub is not None:
                        self.clock_pub.publish(Clock(clock=Time(sec=bag_ns // 10**9, nanosec=bag_ns % 10**9)))
                    for connection, raw in group:
                        self.publishers_by_topic[connection.topic].publish(bytes(raw))
                        per_topic[connection.topic] += 1
        if self.reliable:  # let the subscribers take everything before the publishers go away
            for pub in self.publishers_by_topic.values():
                pub.wait_for_all_acked(Duration(seconds=5))
        return {"messages": sum(per_topic.values()), "per_topic": per_topic, "loops": loops,
                "seconds": time.monotonic() - start}


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", help="rosbag2 folder (mcap or sqlite3)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1 = recorded timing)")
    parser.add_argument("--reliable", action="store_true", help="reliable QoS publishers (default best effort)")
    parser.add_argument("--prefix", default="", help="namespace prepended to every topic, e.g. /robot1")
    parser.add_argument("--topics", nargs="+", help="play only these recorded topics")
    parser.add_argument("--wait-subscribers", type=float, default=0.0, metavar="S",
                        help="wait up to S seconds until every topic has a subscriber before playing")
    parser.add_argument("--settle", type=float, default=1.0, metavar="S",
                        help="with --wait-subscribers: pause S seconds after every topic found a subscriber, so that "
                             "the subscribers' side of discovery completes too (default 1)")
    parser.add_argument("--prime-camera-info", action="store_true",
                        help="send each camera_info topic's first message before the bag (like a latched topic)")
    parser.add_argument("--loops", type=int, default=1, help="play the bag this many times")
    parser.add_argument("--clock", action="store_true", help="publish the bag time on /clock (for use_sim_time nodes)")
    parser.add_argument("--loop-gap", type=float, default=0.5, metavar="S", help="pause between loops")
    args, ros_args = parser.parse_known_args(argv if argv is not None else sys.argv[1:])
    if args.loops < 1:
        parser.error("--loops must be >= 1")
    rclpy.init(args=[sys.argv[0], *ros_args])
    try:
        try:
            player = BagPlayer(Path(args.bag), args.prefix, args.reliable, args.topics, args.clock)
        except (ValueError, OSError) as exc:
            print(f"bag_player: cannot play {args.bag}: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # rosbags' own errors (unreadable metadata, unknown storage)
            print(f"bag_player: cannot read {args.bag}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        lonely = player.wait_for_subscribers(args.wait_subscribers) if args.wait_subscribers > 0 else []
        if args.wait_subscribers > 0 and args.settle > 0:
            time.sleep(args.settle)
        if lonely:
            print(f"bag_player: no subscriber after {args.wait_subscribers:g} s on {lonely}; playing anyway",
                  file=sys.stderr)
        primed = player.prime_camera_info() if args.prime_camera_info else 0
        try:
            summary = player.play(args.rate, args.loops, args.loop_gap)
        except KeyboardInterrupt:
            return 130
        summary["without_subscriber"] = lonely
        summary["camera_info_primed"] = primed
        print(json.dumps(summary), flush=True)
        player.destroy_node()
        return 0
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
