"""Camera paths of a handheld / robot-mounted RGB-D camera through a scene.

The path visits waypoints spread over the free floor of each room (depth-first over the rooms,
through doorways, back to the start, and again on another lap when more frames are needed).
Legs between waypoints are shortest paths on the floor grid that keep a clearance from walls
and furniture; the joined path is smoothed, then followed at a smoothly varying speed that drops
in tight turns. The camera looks at one object of the current room after another (within a
yaw offset from the direction of travel), with slow pitch, roll and height variations, and its
yaw rate is limited.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from semantic_mapping.config import CameraConfig, TrajectoryConfig
from semantic_mapping.sim.scene import FloorGrid, SceneSpec, floor_grid

_R_BASE = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # camera axes at yaw 0: looks along +x


def camera_rotation(yaw_rad: float, pitch_rad: float, roll_rad: float) -> np.ndarray:
    """[3, 3] R_world_cam of an OpenCV camera with heading yaw (about world z), pitch (> 0 up) and roll."""
    cy, sy = math.cos(yaw_rad), math.sin(yaw_rad)
    cp, sp = math.cos(pitch_rad), math.sin(pitch_rad)
    cr, sr = math.cos(roll_rad), math.sin(roll_rad)
    Rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    Rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    Rroll = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return Rz @ _R_BASE @ Rx @ Rroll


class _Planner:
    """Shortest paths with clearance on the floor grid."""

    def __init__(self, spec: SceneSpec, grid: FloorGrid, config: TrajectoryConfig):
        self.grid = grid
        self.config = config
        clearance = grid.clearance_m
        self.passable = grid.free & (clearance >= config.min_clearance_m)
        self.node_of = np.full(grid.free.shape, -1, np.int64)
        cells = np.argwhere(self.passable)
        self.node_of[tuple(cells.T)] = np.arange(len(cells))
        self.cells = cells  # [n, 2] grid indices of the nodes
        # prefer open floor; squeeze below the planned clearance only where there is no other way (doorways)
        cost = 1.0 + 2.0 * np.clip(1.0 - clearance / config.waypoint_clearance_m, 0.0, None)
        cost += 20.0 * (clearance < config.clearance_m)
        rows, cols, weights = [], [], []
        nx, ny = grid.free.shape
        for di, dj in ((1, 0), (0, 1), (1, 1), (1, -1)):
            a = cells
            b = cells + (di, dj)
            ok = (b[:, 0] >= 0) & (b[:, 0] < nx) & (b[:, 1] >= 0) & (b[:, 1] < ny)
            a, b = a[ok], b[ok]
            ok = self.passable[b[:, 0], b[:, 1]]
            a, b = a[ok], b[ok]
            w = math.hypot(di, dj) * grid.cell_m * 0.5 * (cost[a[:, 0], a[:, 1]] + cost[b[:, 0], b[:, 1]])
            ia, ib = self.node_of[a[:, 0], a[:, 1]], self.node_of[b[:, 0], b[:, 1]]
            rows += [ia, ib]
            cols += [ib, ia]
            weights += [w, w]
        n = len(cells)
        self.graph = sparse.csr_matrix(
            (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
        )
        _, self.component = csgraph.connected_components(self.graph, directed=False)

    def path(self, src: int, dst: int) -> np.ndarray:
        """[k, 2] world xy of the cell centres from node src to node dst."""
        _, pred = csgraph.dijkstra(self.graph, indices=src, return_predecessors=True)
        chain = [dst]
        while chain[-1] != src:
            chain.append(pred[chain[-1]])
            if chain[-1] < 0:
                raise RuntimeError("trajectory: no path between waypoints")
        return self.grid.center_of(self.cells[chain[::-1]])


def _room_graph(spec: SceneSpec) -> dict:
    adj: dict = {r.room_id: [] for r in spec.rooms}
    for o in spec.openings:
        a, b = o.rooms
        if o.kind == "doorway" and a >= 0 and b >= 0:
            adj[a].append(b)
            adj[b].append(a)
    return adj


def _dfs_rooms(adj: dict, start: int, rng: np.random.Generator) -> list:
    """Rooms in depth-first order, unvisited neighbours in random order."""
    order, seen, stack = [], set(), [start]
    while stack:
        r = stack.pop()
        if r in seen:
            continue
        seen.add(r)
        order.append(r)
        nbrs = [n for n in adj[r] if n not in seen]
        rng.shuffle(nbrs)
        stack += nbrs
    return order


def _waypoints(
    planner: _Planner, spec: SceneSpec, room_id: int, rng: np.random.Generator, component: int
) -> np.ndarray:
    """[k] node ids spread over the room (farthest-point sampling among roomy cells)."""
    grid, cfg = planner.grid, planner.config
    cells = planner.cells
    in_room = (grid.room_of[cells[:, 0], cells[:, 1]] == room_id) & (planner.component == component)
    candidates = np.flatnonzero(in_room)
    if not len(candidates):
        return candidates
    clearance = grid.clearance_m[cells[candidates, 0], cells[candidates, 1]]
    roomy = candidates[clearance >= min(cfg.waypoint_clearance_m, np.quantile(clearance, 0.8))]
    k = max(2, int(round(spec.room(room_id).area_m2 / 10.0 * cfg.waypoints_per_10m2)))
    chosen = [int(rng.choice(roomy))]
    xy = cells[roomy].astype(np.float64)
    dist = np.linalg.norm(xy - cells[chosen[0]], axis=1)
    for _ in range(min(k, len(roomy)) - 1):
        nxt = int(np.argmax(dist))
        chosen.append(int(roomy[nxt]))
        dist = np.minimum(dist, np.linalg.norm(xy - cells[roomy[nxt]], axis=1))
    return np.array(chosen)


def _plan_route(spec: SceneSpec, planner: _Planner, rng: np.random.Generator, length_m: float) -> np.ndarray:
    """[M, 2] world xy polyline at least `length_m` long: laps over all reachable rooms, each back to the start."""
    cells = planner.cells
    component = int(np.argmax(np.bincount(planner.component)))  # biggest connected part of the free floor
    reachable = sorted({int(r) for r in planner.grid.room_of[tuple(cells[planner.component == component].T)]} - {-1})
    adj = {r: [n for n in nbrs if n in reachable] for r, nbrs in _room_graph(spec).items() if r in reachable}
    start_room = int(rng.choice(reachable))
    current = home = None
    pieces, total = [], 0.0
    while total < length_m:
        lap = []
        for room in _dfs_rooms(adj, start_room, rng):
            lap += _order_nearest(_waypoints(planner, spec, room, rng, component), cells, lap[-1] if lap else current)
        if home is None:
            current = home = lap.pop(0)
        lap.append(home)
        lap_start = total
        for node in lap:
            if node == current:
                continue
            leg = planner.path(current, node)
            pieces.append(leg[1:] if pieces else leg)
            total += float(np.sum(np.linalg.norm(np.diff(leg, axis=0), axis=1)))
            current = node
            if total >= length_m:
                break
        if total == lap_start:
            raise RuntimeError("trajectory: the free floor has no room to move in")
    return np.concatenate(pieces)


def _order_nearest(nodes: np.ndarray, cells: np.ndarray, current) -> list:
    """Node ids ordered greedily by proximity, starting next to node `current` (or the first node when None)."""
    remaining = [int(n) for n in nodes]
    out = []
    pos = cells[current] if current is not None else (cells[remaining[0]] if remaining else None)
    while remaining:
        n = remaining.pop(int(np.argmin([np.linalg.norm(cells[m] - pos) for m in remaining])))
        out.append(n)
        pos = cells[n]
    return out


def _resample(path: np.ndarray, step_m: float) -> np.ndarray:
    """[K, 2] points `step_m` apart along the polyline path [M, 2] (ends kept)."""
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-9])
    path = path[keep]
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    t = np.linspace(0.0, s[-1], max(2, int(math.ceil(s[-1] / step_m)) + 1))
    return np.stack([np.interp(t, s, path[:, 0]), np.interp(t, s, path[:, 1])], 1)


def _smooth_path(path: np.ndarray, grid: FloorGrid, min_clearance_m: float, step_m: float) -> np.ndarray:
    """Gaussian-smoothed path, with the widest kernel (0.6 m down to none) that keeps the clearance."""
    for sigma_m in (0.6, 0.4, 0.25, 0.15, 0.0):
        if sigma_m == 0.0:
            return path
        smooth = ndimage.gaussian_filter1d(path, sigma_m / step_m, axis=0, mode="nearest")
        if np.all(grid.clearance_at(smooth) >= min_clearance_m):
            return smooth
    return path


def _smooth_signal(rng: np.random.Generator, t_s: np.ndarray, period_s: float) -> np.ndarray:
    """[N] smooth signal in [-1, 1]: mean of three sinusoids with periods around `period_s`."""
    out = np.zeros_like(t_s)
    for _ in range(3):
        period = period_s * rng.uniform(0.6, 1.6)
        out += np.sin(2 * np.pi * t_s / period + rng.uniform(0, 2 * np.pi))
    return out / 3.0


def _look_at_targets(
    spec: SceneSpec,
    grid: FloorGrid,
    rng: np.random.Generator,
    xy: np.ndarray,
    height_m: np.ndarray,
    heading: np.ndarray,
    dt: float,
    config: TrajectoryConfig,
) -> tuple:
    """(yaw [N], pitch [N]) from camera positions xy [N, 2], height_m [N] towards objects of the current room.

    Every `look_period_s` (randomised) a new target is drawn among the objects of the current room
    at least 1.2 m away, favouring those ahead; without one the camera looks along its heading.
    """
    centres, rooms = [], []
    for o in spec.objects:
        if o.class_name in ("door", "window") or o.room_id < 0:
            continue
        lo, hi = o.local_bounds_m()
        centres.append([o.position_m[0], o.position_m[1], o.position_m[2] + 0.5 * (lo[2] + hi[2])])
        rooms.append(o.room_id)
    centres, rooms = np.array(centres).reshape(-1, 3), np.array(rooms)
    n = len(xy)
    yaw = heading.copy()
    pitch = np.full(n, math.radians(config.pitch_deg))
    k = 0
    while k < n:
        k1 = min(n, k + max(1, int(round(config.look_period_s * rng.uniform(0.6, 1.4) / dt))))
        room = grid.room_of[tuple(grid.cell_of(xy[k]))]
        d = centres[:, :2] - xy[k]
        dist = np.linalg.norm(d, axis=1)
        ok = np.flatnonzero((rooms == room) & (dist >= 1.2))
        if len(ok):
            ahead = np.cos(np.arctan2(d[ok, 1], d[ok, 0]) - heading[k])
            weight = np.exp(2.0 * ahead)
            c = centres[ok[rng.choice(len(ok), p=weight / weight.sum())]]
            rel = c[:2] - xy[k:k1]
            yaw[k:k1] = np.arctan2(rel[:, 1], rel[:, 0])
            pitch[k:k1] = np.arctan2(c[2] - height_m[k:k1], np.maximum(np.linalg.norm(rel, axis=1), 0.5))
        k = k1
    return yaw, pitch


def make_trajectory(
    spec: SceneSpec,
    seed: int,
    config: TrajectoryConfig = TrajectoryConfig(),
    camera: CameraConfig = CameraConfig(),
) -> list:
    """[(stamp_ns, T_world_cam [4, 4])] of `config.num_frames` frames at `camera.rate_hz`, identical per seed."""
    rng = np.random.default_rng(seed)
    cfg = config
    n = cfg.num_frames
    dt = 1.0 / camera.rate_hz
    t_s = np.arange(n) * dt
    grid = floor_grid(spec, cfg.grid_cell_m)
    planner = _Planner(spec, grid, cfg)
    step = 0.02
    route = _plan_route(spec, planner, rng, n * dt * cfg.speed_max_m_s + 1.0)
    path = _smooth_path(_resample(route, step), grid, cfg.min_clearance_m, step)
    path = _resample(path, step)  # [K, 2] evenly spaced
    s_path = np.arange(len(path)) * step

    # heading and curvature along the path
    d = np.gradient(path, axis=0)
    heading_path = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    curvature = np.abs(np.gradient(heading_path)) / step  # [K] 1/m
    curvature = ndimage.gaussian_filter1d(curvature, 0.2 / step, mode="nearest")
    # cruise speed varies smoothly along the path; slow down so turns need at most half the yaw-rate budget
    cruise = cfg.speed_min_m_s + (cfg.speed_max_m_s - cfg.speed_min_m_s) * (
        0.5 + 0.5 * _smooth_signal(rng, s_path, 4.0)
    )
    turn_limit = 0.5 * math.radians(cfg.max_yaw_rate_deg_s) / np.maximum(curvature, 1e-6)
    speed = np.clip(np.minimum(cruise, turn_limit), 0.05, cfg.speed_max_m_s)

    s = np.zeros(n)
    for k in range(1, n):
        s[k] = s[k - 1] + np.interp(s[k - 1], s_path, speed) * dt
    xy = np.stack([np.interp(s, s_path, path[:, 0]), np.interp(s, s_path, path[:, 1])], 1)
    heading = np.interp(s, s_path, heading_path)

    mid = 0.5 * (cfg.height_min_m + cfg.height_max_m)
    half = 0.5 * (cfg.height_max_m - cfg.height_min_m)
    base = mid + rng.uniform(-0.6, 0.6) * half
    height = np.clip(base + min(0.1, 0.4 * half) * _smooth_signal(rng, t_s, 12.0), cfg.height_min_m, cfg.height_max_m)

    # look at things: a new target every few seconds, in the current room and not too close
    look_yaw, look_pitch = _look_at_targets(spec, grid, rng, xy, height, heading, dt, cfg)
    offset = (look_yaw - heading + math.pi) % (2 * math.pi) - math.pi
    limit = math.radians(cfg.look_around_deg)
    target = heading + np.clip(offset, -limit, limit) + math.radians(8.0) * _smooth_signal(rng, t_s, 3.0)
    yaw = np.empty(n)  # follows the target with a bounded rate
    yaw[0] = target[0]
    max_step = math.radians(cfg.max_yaw_rate_deg_s) * dt
    for k in range(1, n):
        err = (target[k] - yaw[k - 1] + math.pi) % (2 * math.pi) - math.pi
        yaw[k] = yaw[k - 1] + np.clip(err, -max_step, max_step)
    yaw = ndimage.gaussian_filter1d(yaw, 3.0, mode="nearest")
    pitch_deg = np.clip(
        np.degrees(look_pitch), cfg.pitch_deg - cfg.pitch_range_deg, cfg.pitch_deg + cfg.pitch_range_deg
    )
    pitch = np.radians(ndimage.gaussian_filter1d(pitch_deg, 0.5 / dt, mode="nearest"))
    roll = np.radians(cfg.roll_range_deg * _smooth_signal(rng, t_s, 5.0))

    poses = []
    for k in range(n):
        T = np.eye(4)
        T[:3, :3] = camera_rotation(yaw[k], pitch[k], roll[k])
        T[:3, 3] = (xy[k, 0], xy[k, 1], height[k])
        poses.append((int(cfg.start_stamp_ns + round(k * 1e9 / camera.rate_hz)), T))
    return poses
