"""A command-line client of a running mapping node (no ros2cli needed): wait for its status, save / reset / load.

    python -m semantic_mapping.ros.map_client [--node /semantic_mapping] [--wait-frames N]
        [--wait-received N] [--timeout S] [--reset] [--load PATH] [--save PATH]

Steps run in this order: wait until the node's ~/status reports at least N frames integrated
(and --wait-received frames assembled), then reset, load, save. Prints one JSON line: each
service's answer and the last status (frames received / integrated, voxels, drops, latency).
Exit code 1 when the wait timed out or a service failed or did not answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger

from semantic_mapping.msg import MapperStatus
from semantic_mapping.srv import LoadMap, SaveMap

STATUS_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def status_dict(msg: Optional[MapperStatus]) -> Optional[dict]:
    if msg is None:
        return None
    return {"stamp_s": msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
            "frames_received": int(msg.frames_received), "frames_integrated": int(msg.frames_integrated),
            "voxel_count": int(msg.voxel_count), "drops": dict(zip(msg.drop_reasons, map(int, msg.drop_counts))),
            "latency_ms_p50": float(msg.latency_ms_p50), "latency_ms_p95": float(msg.latency_ms_p95)}


class MapClient(Node):
    def __init__(self, target: str):
        super().__init__("semantic_mapping_client")
        self.target = "/" + target.strip("/")
        self.status: Optional[MapperStatus] = None
        self.status_count = 0
        self.create_subscription(MapperStatus, f"{self.target}/status", self._on_status, STATUS_QOS)

    def _on_status(self, msg: MapperStatus) -> None:
        self.status, self.status_count = msg, self.status_count + 1

    def wait_until(self, predicate, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if predicate():
                return True
            rclpy.spin_once(self, timeout_sec=0.05)
        return predicate()

    def wait_for_frames(self, integrated: int, timeout_s: float, received: int = 0) -> bool:
        """Until a status says >= `received` frames assembled and >= `integrated` frames integrated
        (since the last reset); False on timeout."""
        return self.wait_until(lambda: self.status is not None and self.status.frames_received >= received
                               and self.status.frames_integrated >= integrated, timeout_s)

    def call(self, srv_type, name: str, request, timeout_s: float):
        client = self.create_client(srv_type, f"{self.target}/{name}")
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError(f"service {self.target}/{name} not available after {timeout_s:g} s")
        future = client.call_async(request)
        if not self.wait_until(future.done, timeout_s):
            raise TimeoutError(f"service {self.target}/{name} did not answer in {timeout_s:g} s")
        return future.result()


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", default="/semantic_mapping", help="the node's fully qualified name")
    parser.add_argument("--wait-frames", type=int, default=0, metavar="N",
                        help="wait until the node reports at least N frames integrated (since its last reset)")
    parser.add_argument("--wait-received", type=int, default=0, metavar="N",
                        help="also wait until it reports at least N frames assembled (in all, resets included)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the wait and for each service")
    parser.add_argument("--reset", action="store_true", help="call ~/reset")
    parser.add_argument("--load", metavar="PATH", help="call ~/load_map with PATH")
    parser.add_argument("--save", metavar="PATH", help="call ~/save_map with PATH ('' for the node's default)")
    args, ros_args = parser.parse_known_args(argv if argv is not None else sys.argv[1:])
    rclpy.init(args=[sys.argv[0], *ros_args])
    result: dict = {"ok": True}
    try:
        client = MapClient(args.node)
        if args.wait_frames > 0 or args.wait_received > 0:
            result["waited"] = client.wait_for_frames(args.wait_frames, args.timeout, args.wait_received)
            result["ok"] &= result["waited"]
        try:
            if args.reset:
                r = client.call(Trigger, "reset", Trigger.Request(), args.timeout)
                result["reset"] = {"success": r.success, "message": r.message}
                result["ok"] &= r.success
            if args.load is not None:
                r = client.call(LoadMap, "load_map", LoadMap.Request(path=args.load), args.timeout)
                result["load"] = {"success": r.success, "message": r.message}
                result["ok"] &= r.success
            if args.save is not None:
                r = client.call(SaveMap, "save_map", SaveMap.Request(path=args.save), args.timeout)
                result["save"] = {"success": r.success, "message": r.message}
                result["ok"] &= r.success
        except TimeoutError as exc:
            result["ok"], result["error"] = False, str(exc)
        # the status after the calls (a fresh one when the node publishes within a second)
        before = client.status_count
        client.wait_until(lambda: client.status_count > before, 1.5)
        result["status"] = status_dict(client.status)
        print(json.dumps(result), flush=True)
        client.destroy_node()
        return 0 if result["ok"] else 1
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
