"""Frame assembly (semantic_mapping.io.frame_assembly): pairing, pose slerp, bounded waiting, drop counters."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from semantic_mapping.io.frame_assembly import (
    ACCEPTED,
    BEFORE_RESTART,
    INVALID_POSE,
    OUT_OF_ORDER,
    TIME_JUMP_BACK,
    AssembledFrame,
    AssemblyConfig,
    AssemblyError,
    FrameAssembler,
    frame_from_parts,
    register_depth,
)
from semantic_mapping.types import CameraIntrinsics

MS = 1_000_000
S = 1_000_000_000


def pose(x: float, yaw_deg: float = 0.0) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix()
    T[0, 3] = x
    return T


def assembler(**kwargs) -> FrameAssembler:
    kwargs.setdefault("max_pose_gap_s", 100.0)
    return FrameAssembler(AssemblyConfig(**kwargs), clock=lambda: 0)


def test_exact_pairing_and_pose_slerp_at_the_image_stamp():
    a = assembler()
    a.add_pose(0, pose(0.0, 0.0), now_ns=0)
    a.add_image("rgb", 25 * MS, "rgb0", now_ns=1)
    a.add_image("depth", 25 * MS, "depth0", now_ns=1)
    assert a.poll(now_ns=2) == []  # waits for a pose after the stamp
    a.add_pose(100 * MS, pose(1.0, 40.0), now_ns=3)
    (frame,) = a.poll(now_ns=3)
    assert frame.parts == {"rgb": "rgb0", "depth": "depth0"}
    assert frame.stamp_ns == 25 * MS and frame.missing == ()
    np.testing.assert_allclose(frame.T_world_cam[0, 3], 0.25)
    yaw = Rotation.from_matrix(frame.T_world_cam[:3, :3]).as_euler("zyx", degrees=True)[0]
    assert yaw == pytest.approx(10.0)
    assert a.stats.emitted == 1 and not a.stats.drops


def test_nearest_within_tolerance_and_exact_wins():
    a = assembler(max_stamp_diff_s=0.01)
    a.add_pose(0, pose(0), now_ns=0)
    a.add_pose(1 * S, pose(1), now_ns=0)
    a.add_image("depth", 100 * MS - 8 * MS, "near", now_ns=0)
    a.add_image("depth", 100 * MS, "exact", now_ns=0)
    a.add_image("rgb", 100 * MS, "rgb", now_ns=0)
    (frame,) = a.poll(now_ns=0)
    assert frame.parts["depth"] == "exact"
    # outside the tolerance: never paired
    a.add_image("depth", 200 * MS + 11 * MS, "far", now_ns=0)
    a.add_image("rgb", 200 * MS, "rgb2", now_ns=0)
    assert a.poll(now_ns=0) == []  # the depth stream moved past 200 ms: hopeless -> dropped now
    assert a.stats.drops["no_depth"] == 1
    # "near" was left over and older than every colour image: discarded as unpaired
    assert a.stats.discarded["depth_unpaired"] >= 1


def test_tolerance_pairing_when_stamps_differ_slightly():
    a = assembler(max_stamp_diff_s=0.01)
    a.add_pose(0, pose(0), now_ns=0)
    a.add_pose(1 * S, pose(1), now_ns=0)
    a.add_image("rgb", 500 * MS, "rgb", now_ns=0)
    a.add_image("depth", 503 * MS, "depth", now_ns=0)
    (frame,) = a.poll(now_ns=0)
    assert frame.parts["depth"] == "depth" and frame.stamp_ns == 500 * MS


def test_bounded_wait_for_depth_then_drop_with_reason():
    a = assembler(max_wait_s=0.5)
    a.add_pose(0, pose(0), now_ns=0)
    a.add_pose(1 * S, pose(1), now_ns=0)
    a.add_image("rgb", 100 * MS, "rgb", now_ns=0)
    assert a.poll(now_ns=400 * MS) == []
    assert a.pending_frames == 1
    assert a.poll(now_ns=501 * MS) == []
    assert a.pending_frames == 0 and a.stats.drops["no_depth"] == 1


def test_missing_pose_reasons():
    a = assembler(max_wait_s=0.5, max_pose_gap_s=0.2)
    # no pose at all: waits, then no_pose
    a.add_image("rgb", 100 * MS, "r", now_ns=0)
    a.add_image("depth", 100 * MS, "d", now_ns=0)
    assert a.poll(now_ns=100 * MS) == []
    assert a.poll(now_ns=600 * MS) == [] and a.stats.drops["no_pose"] == 1
    # poses around the stamp too far apart
    a.add_pose(150 * MS, pose(0), now_ns=0)
    a.add_pose(600 * MS, pose(1), now_ns=0)
    a.add_image("rgb", 300 * MS, "r", now_ns=0)
    a.add_image("depth", 300 * MS, "d", now_ns=0)
    assert a.poll(now_ns=700 * MS) == [] and a.stats.drops["pose_gap"] == 1
    # image older than every pose (poses arrive in order, none before it will come): dropped at once
    a.reset()
    a.add_pose(150 * MS, pose(0), now_ns=0)
    a.add_pose(250 * MS, pose(1), now_ns=0)
    a.add_image("rgb", 100 * MS, "r", now_ns=0)
    a.add_image("depth", 100 * MS, "d", now_ns=0)
    assert a.poll(now_ns=0) == [] and a.stats.drops["no_pose"] == 2
    a.add_image("rgb", 200 * MS, "r", now_ns=0)
    a.add_image("depth", 200 * MS, "d", now_ns=0)
    assert len(a.poll(now_ns=0)) == 1


def test_invalid_and_out_of_order_poses_are_discarded():
    a = assembler()
    assert a.add_pose(0, np.full((4, 4), np.nan)) == INVALID_POSE
    assert a.add_pose(0, np.diag([2.0, 1.0, 1.0, 1.0])) == INVALID_POSE
    assert a.add_pose(10, pose(0)) == ACCEPTED
    assert a.add_pose(5, pose(0)) == OUT_OF_ORDER
    assert a.add_pose(10, pose(0)) == OUT_OF_ORDER
    assert a.stats.discarded["pose_invalid"] == 2
    assert a.stats.discarded["pose_out_of_order"] == 1
    assert a.stats.discarded["pose_duplicate_stamp"] == 1


def test_optional_streams_wait_only_while_active():
    a = assembler(max_wait_s=0.5, stream_timeout_s=2.0)
    a.add_pose(0, pose(0), now_ns=0)
    a.add_pose(10 * S, pose(1), now_ns=0)
    # no labels ever: frames complete without them, nothing counted
    a.add_image("rgb", 1 * S, "r1", now_ns=0)
    a.add_image("depth", 1 * S, "d1", now_ns=0)
    (f1,) = a.poll(now_ns=0)
    assert "labels" not in f1.parts and f1.missing == ()
    # labels become active: a frame waits for its labels
    a.add_image("labels", 2 * S, "l2", now_ns=1 * S)
    a.add_image("depth", 2 * S, "d2", now_ns=1 * S)
    a.add_image("rgb", 2 * S, "r2", now_ns=1 * S)
    (f2,) = a.poll(now_ns=1 * S)
    assert f2.parts["labels"] == "l2"
    a.add_image("depth", 3 * S, "d3", now_ns=1 * S)
    a.add_image("rgb", 3 * S, "r3", now_ns=1 * S)
    assert a.poll(now_ns=1 * S + 100 * MS) == []  # waiting for labels
    (f3,) = a.poll(now_ns=1 * S + 600 * MS)  # wait over: out without them, counted
    assert f3.missing == ("labels",) and a.stats.incomplete["labels"] == 1
    # the stream went quiet for longer than stream_timeout_s: no more waiting
    a.add_image("depth", 4 * S, "d4", now_ns=5 * S)
    a.add_image("rgb", 4 * S, "r4", now_ns=5 * S)
    (f4,) = a.poll(now_ns=5 * S)
    assert f4.missing == ()


def test_frames_come_out_in_stamp_order_and_late_rgb_is_dropped():
    a = assembler()
    a.add_pose(0, pose(0), now_ns=0)
    a.add_pose(10 * S, pose(1), now_ns=0)
    for t in (1, 2, 3):
        a.add_image("depth", t * S, f"d{t}", now_ns=0)
    a.add_image("rgb", 2 * S, "r2", now_ns=0)
    a.add_image("rgb", 3 * S, "r3", now_ns=0)
    out = a.poll(now_ns=0)
    assert [f.stamp_ns for f in out] == [2 * S, 3 * S]
    assert a.add_image("rgb", 2 * S + 500 * MS, "late", now_ns=0) == OUT_OF_ORDER
    assert a.add_image("rgb", 3 * S, "dup", now_ns=0) == OUT_OF_ORDER
    assert a.stats.drops[OUT_OF_ORDER] == 2
    assert a.add_image("rgb", 1 * S, "jump", now_ns=0) == TIME_JUMP_BACK
    a.reset()
    assert a.add_image("rgb", 1 * S, "jump", now_ns=0) == ACCEPTED


def test_a_replay_restart_is_a_jump_back_on_whichever_stream_comes_first():
    """A replayed bag's first message may be a pose or a depth image: each reports the jump, and
    after reset() the replay assembles as the first run did."""
    a = assembler(time_jump_back_s=0.1)

    def run(first: str) -> list:
        results = []
        for t in range(5):
            stamp = t * 100 * MS
            order = [("pose", None), ("depth", "d"), ("rgb", "r")]
            if first == "depth":
                order = order[1:] + order[:1]
            for role, payload in order:
                result = a.add_pose(stamp, pose(t)) if role == "pose" else a.add_image(role, stamp, payload, now_ns=0)
                if result == TIME_JUMP_BACK:
                    results.append(role)
                    a.restart(role, stamp)
                    result = a.add_pose(stamp, pose(t)) if role == "pose" else a.add_image(role, stamp, payload, now_ns=0)
                assert result == ACCEPTED, (role, t)
        results += [f.stamp_ns for f in a.poll(now_ns=0)]
        return results

    first_run = run("pose")
    assert run("pose") == ["pose", *first_run]
    assert run("depth") == ["depth", *first_run]
    assert a.add_pose(0, pose(0)) == TIME_JUMP_BACK and a.add_pose(350 * MS, pose(0)) == OUT_OF_ORDER

    # stragglers: messages of the first run that come on other topics after the restart are discarded
    # until their stream sends a stamp of the new run, instead of jumping back once more
    a.restart("pose", 0)
    assert a.add_pose(0, pose(0)) == ACCEPTED
    assert a.add_image("depth", 400 * MS, "old", now_ns=0) == BEFORE_RESTART
    assert a.add_image("rgb", 300 * MS, "old", now_ns=0) == BEFORE_RESTART
    assert a.add_image("depth", 0, "d", now_ns=0) == ACCEPTED
    assert a.add_image("rgb", 50 * MS, "r", now_ns=0) == ACCEPTED  # within the jump threshold: the new run
    assert a.add_image("depth", 300 * MS, "d3", now_ns=0) == ACCEPTED  # stream restarted: a normal stamp now
    assert a.stats.discarded["depth_before_restart"] == 1 and a.stats.drops[BEFORE_RESTART] == 1


def test_pending_overflow_drops_the_oldest():
    a = assembler(max_pending_frames=3)
    for t in range(5):
        a.add_image("rgb", (t + 1) * S, t, now_ns=0)
    assert a.pending_frames == 3 and a.stats.drops["assembly_overflow"] == 2


def test_pose_lookup_callable_replaces_the_pose_stream():
    calls = []

    def lookup(stamp_ns):
        calls.append(stamp_ns)
        return pose(2.0) if len(calls) > 1 else None

    a = FrameAssembler(AssemblyConfig(), pose_lookup=lookup, clock=lambda: 0)
    a.add_image("rgb", S, "r", now_ns=0)
    a.add_image("depth", S, "d", now_ns=0)
    assert a.poll(now_ns=0) == []
    (frame,) = a.poll(now_ns=0)
    assert frame.T_world_cam[0, 3] == 2.0 and calls == [S, S]


def test_frame_from_parts_checks_sizes_and_registers_depth():
    K = CameraIntrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)
    rgb = np.zeros((48, 64, 3), np.uint8)
    depth = np.full((48, 64), 2.0, np.float32)
    labels = np.ones((48, 64), np.int32)
    f = frame_from_parts(AssembledFrame(5, np.eye(4), {"rgb": rgb, "depth": depth, "labels": labels,
                                                       "confidence": np.ones((48, 64), np.float32)}, 0), K)
    assert f.labels is labels and f.label_confidence is not None and f.stamp_ns == 5
    with pytest.raises(AssemblyError) as err:
        frame_from_parts(AssembledFrame(5, np.eye(4), {"rgb": rgb, "depth": depth[:10]}, 0), K)
    assert err.value.reason == "size_mismatch_depth"
    with pytest.raises(AssemblyError) as err:
        frame_from_parts(AssembledFrame(5, np.eye(4), {"rgb": rgb, "depth": depth, "masks": labels[:, :5]}, 0), K)
    assert err.value.reason == "size_mismatch_masks"
    with pytest.raises(AssemblyError) as err:
        frame_from_parts(AssembledFrame(5, np.eye(4), {"rgb": rgb, "depth": depth}, 0), None)
    assert err.value.reason == "no_camera_info"
    # half-resolution depth with its own intrinsics is registered to the colour camera
    K_depth = K.scaled(32, 24)
    small = np.full((24, 32), 2.0, np.float32)
    f = frame_from_parts(AssembledFrame(5, np.eye(4), {"rgb": rgb, "depth": small}, 0), K, depth_intrinsics=K_depth)
    assert f.depth_m.shape == (48, 64)
    assert np.all(f.depth_m[f.depth_m > 0] == pytest.approx(2.0))
    assert (f.depth_m > 0).mean() > 0.2


def test_register_depth_identity_and_shift():
    K = CameraIntrinsics(50.0, 50.0, 15.5, 11.5, 32, 24)
    depth = np.zeros((24, 32), np.float32)
    depth[10:14, 10:14] = 1.0
    same = register_depth(depth, K, K)
    np.testing.assert_array_equal(same, depth)
    T = np.eye(4)
    T[0, 3] = 0.04  # colour camera sees the points 4 cm further right -> 2 px at 1 m, f = 50
    shifted = register_depth(depth, K, K, T)
    np.testing.assert_array_equal(shifted[10:14, 12:16], 1.0)
