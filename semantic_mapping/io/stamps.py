"""Time stamps: exact parsing, nearest-stamp association, pose interpolation along a trajectory."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Optional

import numpy as np

from semantic_mapping.geometry.pose import interpolate_pose

NS_PER_S = 1_000_000_000


def seconds_str_to_ns(text: str) -> int:
    """Exact integer nanoseconds of a decimal seconds string ('1305031102.175304')."""
    try:
        return int((Decimal(text) * NS_PER_S).to_integral_value())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a time stamp in seconds") from None


def associate_nearest(stamps_a_ns: np.ndarray, stamps_b_ns: np.ndarray, max_diff_ns: int) -> dict[int, int]:
    """One-to-one pairing {index in a: index in b} of stamps no more than max_diff_ns apart.

    Candidate pairs are taken closest first, so each stamp is used at most once and an exact
    match always wins over a near one.
    """
    a = np.asarray(stamps_a_ns, dtype=np.int64)
    b = np.asarray(stamps_b_ns, dtype=np.int64)
    if len(a) == 0 or len(b) == 0:
        return {}
    order_b = np.argsort(b, kind="stable")
    b_sorted = b[order_b]
    lo = np.searchsorted(b_sorted, a - max_diff_ns, side="left")
    hi = np.searchsorted(b_sorted, a + max_diff_ns, side="right")
    candidates = [
        (abs(int(a[i]) - int(b_sorted[k])), i, int(order_b[k])) for i in range(len(a)) for k in range(lo[i], hi[i])
    ]
    candidates.sort()
    pairs: dict[int, int] = {}
    used_b: set[int] = set()
    for _, i, j in candidates:
        if i not in pairs and j not in used_b:
            pairs[i] = j
            used_b.add(j)
    return pairs


class PoseTrajectory:
    """Time-stamped poses [N, 4, 4] that can be sampled at any stamp inside their span."""

    def __init__(self, stamps_ns, poses: np.ndarray, max_gap_ns: int):
        stamps = np.asarray(stamps_ns, dtype=np.int64)
        poses = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
        if len(stamps) != len(poses):
            raise ValueError(f"{len(stamps)} stamps for {len(poses)} poses")
        order = np.argsort(stamps, kind="stable")
        self.stamps_ns = stamps[order]
        self.poses = poses[order]
        self.max_gap_ns = int(max_gap_ns)

    def __len__(self) -> int:
        return len(self.stamps_ns)

    def at(self, stamp_ns: int) -> Optional[np.ndarray]:
        """Pose [4, 4] at stamp_ns, interpolated between the poses around it.

        None when the stamp is outside the trajectory or the poses around it are more than
        max_gap_ns apart.
        """
        k = int(np.searchsorted(self.stamps_ns, stamp_ns, side="left"))
        if k < len(self.stamps_ns) and self.stamps_ns[k] == stamp_ns:
            return self.poses[k].copy()
        if k == 0 or k == len(self.stamps_ns):
            return None
        t0, t1 = int(self.stamps_ns[k - 1]), int(self.stamps_ns[k])
        if t1 - t0 > self.max_gap_ns:
            return None
        return interpolate_pose(self.poses[k - 1], self.poses[k], (stamp_ns - t0) / (t1 - t0))
