"""Frame assembly: pair time-stamped image streams and a pose stream into posed frames.

What message_filters' ApproximateTime does for ROS, plus what it cannot: the pose is *interpolated*
at the colour image's stamp (linear translation, slerp rotation) from a pose stream at any rate, or
looked up through a callable (e.g. TF). Pure Python/numpy; the ROS node feeds it converted arrays.

- The colour image drives frames. Every other image role (depth, labels, confidence,
  probabilities, masks) is paired with it by header stamp: exact, or nearest within
  `max_stamp_diff_s`; each message is used once.
- Depth and the pose are required. An optional role (semantics, masks) is waited for only while
  its stream is active (a message within `stream_timeout_s`); a frame whose optional part does
  not come is emitted without it (counted in `incomplete`).
- A frame waits at most `max_wait_s` (receipt time) for its parts. It is resolved earlier when a
  part can no longer come: messages of one topic arrive in stamp order, so a newer message on that
  topic (or a newer pose) means the awaited one was lost.
- Frames come out in stamp order. Everything dropped is counted by reason in `drops` (frames)
  and `discarded` (messages that never joined a frame).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from semantic_mapping.geometry.pose import interpolate_pose, is_rigid_transform
from semantic_mapping.types import CameraIntrinsics, Frame

NS_PER_S = 1_000_000_000

IMAGE_ROLES = ("rgb", "depth", "labels", "confidence", "probabilities", "masks")
"""Image streams a frame is assembled from; 'rgb' drives, 'depth' is required, the rest optional."""
OPTIONAL_ROLES = ("labels", "confidence", "probabilities", "masks")

# results of FrameAssembler.add_image and add_pose
ACCEPTED = "accepted"
OUT_OF_ORDER = "stamp_out_of_order"
TIME_JUMP_BACK = "time_jump_back"
BEFORE_RESTART = "before_restart"
INVALID_POSE = "pose_invalid"


@dataclass
class AssemblyConfig:
    """Pairing of image, semantics and pose streams into frames."""

    max_stamp_diff_s: float = 0.005
    """Largest header-stamp difference between the colour image and a paired image (exact stamps always pair)."""
    max_wait_s: float = 0.5
    """Longest time (of receipt) a frame waits for late parts before it is resolved."""
    max_pose_gap_s: float = 0.5
    """Poses further apart than this around an image stamp are not interpolated between."""
    pose_buffer_s: float = 10.0
    """Span of pose history kept for interpolation."""
    stream_timeout_s: float = 2.0
    """An optional stream (semantics, masks) counts as active for this long after its last message."""
    max_pending_frames: int = 30
    """Colour images waiting for their parts at most; beyond, the oldest is dropped."""
    max_buffered_messages: int = 60
    """Unpaired messages kept per image stream at most; beyond, the oldest is discarded."""
    time_jump_back_s: float = 1.0
    """A stamp this much older than the newest one of its stream is a jump back in time (bag restarted), not jitter."""


@dataclass
class AssembledFrame:
    """The parts of one frame, paired and posed."""

    stamp_ns: int
    T_world_cam: np.ndarray  # [4, 4] interpolated at stamp_ns
    parts: dict  # role -> payload as given to add_image (arrays, typically)
    received_ns: int  # receipt time (assembler clock) of the colour image
    missing: tuple = ()  # optional roles that were active but did not arrive in time


class AssemblyError(ValueError):
    """Parts that cannot form a frame (sizes, encodings); `reason` is a drop counter key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class _Pending:
    stamp_ns: int
    payload: Any
    received_ns: int


@dataclass
class AssemblyStats:
    """Counters since the last reset."""

    received: collections.Counter = field(default_factory=collections.Counter)  # messages per role (+ 'pose')
    emitted: int = 0
    drops: collections.Counter = field(default_factory=collections.Counter)  # frames dropped, by reason
    discarded: collections.Counter = field(default_factory=collections.Counter)  # messages unused, by reason
    incomplete: collections.Counter = field(default_factory=collections.Counter)  # frames emitted without a role


class FrameAssembler:
    """Stamp-keyed buffer pairing image roles and poses; see the module docstring.

    `pose_lookup(stamp_ns) -> T_world_cam or None` replaces the pose stream (e.g. TF); None means
    "not available (yet)". `clock()` gives receipt time in ns (monotonic by default); every method
    also takes `now_ns` explicitly, for tests and replays.
    """

    def __init__(
        self,
        config: Optional[AssemblyConfig] = None,
        pose_lookup: Optional[Callable[[int], Optional[np.ndarray]]] = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ):
        self.config = config or AssemblyConfig()
        self.pose_lookup = pose_lookup
        self.clock = clock
        self.stats = AssemblyStats()
        # receipt time of the newest message per role; reset() keeps it: the streams are still there
        self._last_receipt: dict[str, int] = {}
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every buffered message and the stamp history (counters and stream activity are kept)."""
        self._pending: list[_Pending] = []  # colour images, sorted by stamp
        self._buffers: dict[str, list[_Pending]] = {role: [] for role in IMAGE_ROLES if role != "rgb"}
        self._last_stamp: dict[str, int] = {}  # newest stamp seen per role (also 'pose')
        self._pose_stamps: list[int] = []
        self._poses: list[np.ndarray] = []
        self._last_emitted_ns: Optional[int] = None
        self._restart_frontier_ns: Optional[int] = None  # newest stamp of the restarted recording
        self._restarted_roles: set = set()  # roles that have sent a message of the restarted recording

    def restart(self, role: str, stamp_ns: int) -> None:
        """`reset()` because `role` jumped back to `stamp_ns` (a bag replayed from its start).

        Streams are separate topics, so messages sent before the restart may still come on the
        other streams after it. Until a stream sends a stamp of the restarted recording, its
        stamps `time_jump_back_s` or more ahead of that recording's newest stamp are such
        stragglers: discarded (BEFORE_RESTART) instead of taken for the new run, which would then
        jump back once more.
        """
        self.reset()
        self._restart_frontier_ns = int(stamp_ns)
        self._restarted_roles = {role}

    def _before_restart(self, role: str, stamp_ns: int) -> bool:
        if self._restart_frontier_ns is None:
            return False
        if role not in self._restarted_roles:
            if stamp_ns - self._restart_frontier_ns >= self.config.time_jump_back_s * NS_PER_S:
                return True
            self._restarted_roles.add(role)
        self._restart_frontier_ns = max(self._restart_frontier_ns, stamp_ns)
        return False

    def reset_stats(self) -> None:
        self.stats = AssemblyStats()

    @property
    def pending_frames(self) -> int:
        return len(self._pending)

    def _now(self, now_ns: Optional[int]) -> int:
        return int(self.clock() if now_ns is None else now_ns)

    @property
    def _tol_ns(self) -> int:
        return int(round(self.config.max_stamp_diff_s * NS_PER_S))

    # ------------------------------------------------------------------ input
    def add_pose(self, stamp_ns: int, T_world_cam: np.ndarray, now_ns: Optional[int] = None) -> str:
        """Add a pose; ACCEPTED, INVALID_POSE (not a finite rigid transform), OUT_OF_ORDER,
        BEFORE_RESTART (see restart) or TIME_JUMP_BACK (not added, not counted: see add_image)."""
        T = np.asarray(T_world_cam, dtype=np.float64)
        stamp_ns = int(stamp_ns)
        self.stats.received["pose"] += 1
        if T.shape != (4, 4) or not is_rigid_transform(T, 1e-3):
            self.stats.discarded[INVALID_POSE] += 1
            return INVALID_POSE
        if self._before_restart("pose", stamp_ns):
            self.stats.discarded[f"pose_{BEFORE_RESTART}"] += 1
            return BEFORE_RESTART
        if self._pose_stamps and stamp_ns <= self._pose_stamps[-1]:
            if self._is_jump_back(self._pose_stamps[-1], stamp_ns):
                return TIME_JUMP_BACK
            if stamp_ns == self._pose_stamps[-1]:
                self.stats.discarded["pose_duplicate_stamp"] += 1
            else:
                self.stats.discarded["pose_out_of_order"] += 1
            return OUT_OF_ORDER
        self._pose_stamps.append(stamp_ns)
        self._poses.append(T)
        self._last_stamp["pose"] = stamp_ns
        self._last_receipt["pose"] = self._now(now_ns)
        horizon = stamp_ns - int(self.config.pose_buffer_s * NS_PER_S)
        cut = 0
        while cut < len(self._pose_stamps) - 2 and self._pose_stamps[cut + 1] < horizon:
            cut += 1
        if cut:
            del self._pose_stamps[:cut], self._poses[:cut]
        return ACCEPTED

    def _is_jump_back(self, newest_ns: int, stamp_ns: int) -> bool:
        return newest_ns - stamp_ns >= self.config.time_jump_back_s * NS_PER_S

    def add_image(self, role: str, stamp_ns: int, payload: Any, now_ns: Optional[int] = None) -> str:
        """Add one image of `role`; returns ACCEPTED, OUT_OF_ORDER, BEFORE_RESTART or TIME_JUMP_BACK.

        A stamp older than its stream's newest by `time_jump_back_s` or more is TIME_JUMP_BACK, on
        any stream (a replayed bag's first message may be a pose or a depth image). It is not
        added or counted; the caller decides: `restart()` and add again, or refuse (and count).
        """
        if role not in IMAGE_ROLES:
            raise ValueError(f"unknown image role {role!r}; expected one of {IMAGE_ROLES}")
        now = self._now(now_ns)
        stamp_ns = int(stamp_ns)
        self.stats.received[role] += 1
        if self._before_restart(role, stamp_ns):
            if role == "rgb":
                self.stats.drops[BEFORE_RESTART] += 1
            else:
                self.stats.discarded[f"{role}_{BEFORE_RESTART}"] += 1
            return BEFORE_RESTART
        newest = self._last_stamp.get(role)
        if newest is not None and stamp_ns <= newest:
            if self._is_jump_back(newest, stamp_ns):
                return TIME_JUMP_BACK
            if role == "rgb":
                self.stats.drops[OUT_OF_ORDER] += 1
            else:
                self.stats.discarded[f"{role}_{OUT_OF_ORDER}"] += 1
            return OUT_OF_ORDER
        self._last_stamp[role] = stamp_ns
        self._last_receipt[role] = now
        item = _Pending(stamp_ns, payload, now)
        if role == "rgb":
            if self._last_emitted_ns is not None and stamp_ns <= self._last_emitted_ns:
                self.stats.drops[OUT_OF_ORDER] += 1
                return OUT_OF_ORDER
            self._pending.append(item)
            while len(self._pending) > self.config.max_pending_frames:
                self._pending.pop(0)
                self.stats.drops["assembly_overflow"] += 1
        else:
            buffer = self._buffers[role]
            buffer.append(item)
            while len(buffer) > self.config.max_buffered_messages:
                buffer.pop(0)
                self.stats.discarded[f"{role}_buffer_overflow"] += 1
        return ACCEPTED

    # ------------------------------------------------------------------ pairing
    def _match(self, role: str, stamp_ns: int) -> Optional[int]:
        """Index in the role's buffer of the message nearest stamp_ns within tolerance, else None."""
        best, best_diff = None, None
        for i, item in enumerate(self._buffers[role]):
            diff = abs(item.stamp_ns - stamp_ns)
            if diff <= self._tol_ns and (best_diff is None or diff < best_diff):
                best, best_diff = i, diff
        return best

    def _hopeless(self, role: str, stamp_ns: int) -> bool:
        """True when the role's stream has moved past stamp_ns, so its message for it will not come."""
        newest = self._last_stamp.get(role)
        return newest is not None and newest > stamp_ns + self._tol_ns

    def _active(self, role: str, now: int) -> bool:
        last = self._last_receipt.get(role)
        return last is not None and now - last <= self.config.stream_timeout_s * NS_PER_S

    def pose_at(self, stamp_ns: int) -> tuple[Optional[np.ndarray], str]:
        """(T_world_cam at stamp_ns or None, why not: '' | 'wait' | 'no_pose' | 'pose_gap')."""
        if self.pose_lookup is not None:
            T = self.pose_lookup(stamp_ns)
            return (np.asarray(T, dtype=np.float64), "") if T is not None else (None, "wait")
        stamps = self._pose_stamps
        if not stamps:
            return None, "wait"
        k = int(np.searchsorted(stamps, stamp_ns, side="left"))
        if k < len(stamps) and stamps[k] == stamp_ns:
            return self._poses[k].copy(), ""
        if k == 0:
            return None, "no_pose"  # poses arrive in order: none before this stamp will come
        if k == len(stamps):
            return None, "wait"
        t0, t1 = stamps[k - 1], stamps[k]
        if t1 - t0 > self.config.max_pose_gap_s * NS_PER_S:
            return None, "pose_gap"
        return interpolate_pose(self._poses[k - 1], self._poses[k], (stamp_ns - t0) / (t1 - t0)), ""

    def poll(self, now_ns: Optional[int] = None) -> list[AssembledFrame]:
        """Frames that are complete or whose wait is over, in stamp order; drops the hopeless ones."""
        now = self._now(now_ns)
        out: list[AssembledFrame] = []
        self._pending.sort(key=lambda p: p.stamp_ns)
        while self._pending:
            frame = self._pending[0]
            expired = now - frame.received_ns > self.config.max_wait_s * NS_PER_S
            resolved = self._try_resolve(frame, now, expired)
            if resolved is None:
                break  # head of line still waiting (bounded by max_wait_s)
            self._pending.pop(0)
            if isinstance(resolved, AssembledFrame):
                out.append(resolved)
                self._last_emitted_ns = resolved.stamp_ns
                self.stats.emitted += 1
            else:
                self.stats.drops[resolved] += 1
        self._purge()
        return out

    def _try_resolve(self, frame: _Pending, now: int, expired: bool):
        """AssembledFrame, a drop reason (str), or None to keep waiting."""
        stamp = frame.stamp_ns
        depth_index = self._match("depth", stamp)
        if depth_index is None:
            if expired or self._hopeless("depth", stamp):
                return "no_depth"
            return None
        T, why = self.pose_at(stamp)
        if T is None:
            if why in ("no_pose", "pose_gap"):
                return why
            if expired:
                return "no_pose"
            return None
        matches, missing = {"depth": depth_index}, []
        for role in OPTIONAL_ROLES:
            index = self._match(role, stamp)
            if index is not None:
                matches[role] = index
            elif self._active(role, now) and not self._hopeless(role, stamp):
                if not expired:
                    return None
                missing.append(role)
            elif self._active(role, now):
                missing.append(role)
        parts = {"rgb": frame.payload}
        for role, index in matches.items():
            parts[role] = self._buffers[role].pop(index).payload
        for role in missing:
            self.stats.incomplete[role] += 1
        return AssembledFrame(stamp, T, parts, frame.received_ns, tuple(missing))

    def _purge(self) -> None:
        """Discard buffered messages that no pending or future colour image can pair with.

        Colour stamps only increase, so a message more than the tolerance older than the newest
        colour image pairs with a pending one or with none.
        """
        newest_rgb = self._last_stamp.get("rgb")
        if newest_rgb is None:
            return
        tol = self._tol_ns
        pending = [p.stamp_ns for p in self._pending]
        for role, buffer in self._buffers.items():
            keep = []
            for item in buffer:
                if item.stamp_ns + tol < newest_rgb and not any(abs(p - item.stamp_ns) <= tol for p in pending):
                    self.stats.discarded[f"{role}_unpaired"] += 1
                else:
                    keep.append(item)
            buffer[:] = keep


# ---------------------------------------------------------------------------------- frames
def register_depth(
    depth_m: np.ndarray,  # [h, w] float32 metres, 0 = invalid
    depth_intrinsics: CameraIntrinsics,
    color_intrinsics: CameraIntrinsics,
    T_color_depth: Optional[np.ndarray] = None,  # [4, 4] depth optical frame in the colour optical frame
) -> np.ndarray:  # [H, W] float32 metres in the colour camera
    """Reproject a depth image into the colour camera (nearest surface wins; holes stay 0)."""
    h, w = depth_m.shape
    v, u = np.nonzero(depth_m > 0)
    z = depth_m[v, u].astype(np.float64)
    di = depth_intrinsics
    points = np.stack([(u - di.cx) / di.fx * z, (v - di.cy) / di.fy * z, z], axis=1)
    if T_color_depth is not None:
        points = points @ np.asarray(T_color_depth)[:3, :3].T + np.asarray(T_color_depth)[:3, 3]
    ci = color_intrinsics
    zc = points[:, 2]
    ok = zc > 1e-6
    uc = np.round(points[ok, 0] / zc[ok] * ci.fx + ci.cx).astype(np.int64)
    vc = np.round(points[ok, 1] / zc[ok] * ci.fy + ci.cy).astype(np.int64)
    zc = zc[ok]
    inside = (uc >= 0) & (uc < ci.width_px) & (vc >= 0) & (vc < ci.height_px)
    uc, vc, zc = uc[inside], vc[inside], zc[inside]
    out = np.full((ci.height_px, ci.width_px), np.inf, np.float64)
    np.minimum.at(out, (vc, uc), zc)
    out[~np.isfinite(out)] = 0.0
    return out.astype(np.float32)


def frame_from_parts(
    assembled: AssembledFrame,
    intrinsics: Optional[CameraIntrinsics],
    depth_intrinsics: Optional[CameraIntrinsics] = None,
    T_color_depth: Optional[np.ndarray] = None,
) -> Frame:
    """A Frame from decoded parts: 'rgb' [H,W,3] uint8, 'depth' [h,w] float metres, 'labels' /
    'masks' [H,W] int, 'confidence' [H,W] float, 'probabilities' [H,W,C] float.

    Depth of another size than the colour image is registered to it when `depth_intrinsics` is
    known; any other size mismatch raises AssemblyError (reason 'size_mismatch_<role>').
    """
    if intrinsics is None:
        raise AssemblyError("no_camera_info", "no CameraInfo received for the colour camera yet")
    parts = assembled.parts
    rgb = parts["rgb"]
    H, W = intrinsics.height_px, intrinsics.width_px
    if rgb.shape[:2] != (H, W):
        raise AssemblyError(
            "size_mismatch_rgb", f"colour image is {rgb.shape[1]}x{rgb.shape[0]}, its CameraInfo says {W}x{H}"
        )
    depth = parts["depth"]
    if depth_intrinsics is not None and (
        depth.shape != (H, W) or depth_intrinsics != intrinsics or T_color_depth is not None
    ):
        if depth.shape != (depth_intrinsics.height_px, depth_intrinsics.width_px):
            raise AssemblyError(
                "size_mismatch_depth",
                f"depth image is {depth.shape[1]}x{depth.shape[0]}, its CameraInfo says "
                f"{depth_intrinsics.width_px}x{depth_intrinsics.height_px}",
            )
        depth = register_depth(depth, depth_intrinsics, intrinsics, T_color_depth)
    if depth.shape != (H, W):
        raise AssemblyError(
            "size_mismatch_depth",
            f"depth image is {depth.shape[1]}x{depth.shape[0]}, colour is {W}x{H}; publish depth registered to "
            "colour, or its own camera_info so it can be registered",
        )
    for role in OPTIONAL_ROLES:
        if role in parts and parts[role].shape[:2] != (H, W):
            a = parts[role]
            raise AssemblyError(
                f"size_mismatch_{role}", f"{role} image is {a.shape[1]}x{a.shape[0]}, colour is {W}x{H}"
            )
    probs = parts.get("probabilities")
    if probs is not None and probs.ndim == 2:
        probs = probs[:, :, None]
    return Frame(
        rgb=rgb,
        depth_m=np.asarray(depth, dtype=np.float32),
        intrinsics=intrinsics,
        T_world_cam=assembled.T_world_cam,
        stamp_ns=assembled.stamp_ns,
        class_probs=probs,
        labels=parts.get("labels") if probs is None else None,
        label_confidence=parts.get("confidence") if probs is None and "labels" in parts else None,
        instance_masks=parts.get("masks"),
    )
