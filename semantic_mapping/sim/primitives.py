"""Solid primitives (boxes, cylinders), their triangle meshes, and furniture shapes made from them.

Every shape is built in its own object frame: origin at the centre of its footprint on the
surface it stands on (floor, support top, or the bottom edge for wall-mounted items),
x along the width, y along the depth with the front facing +y, z up. A shape is a list of
`Part`s (watertight solids with outward-wound triangles); `support_surfaces` lists the
horizontal tops that small objects may stand on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

BOX = 0
CYLINDER = 1


# ----------------------------------------------------------------------------- appearance
@dataclass(frozen=True)
class TextureSpec:
    """Procedural texture evaluated at world points: colour = albedo * (1 + contrast * pattern)."""

    kind: str = "plain"  # 'plain' | 'stripes' | 'checker' | 'noise'
    period_m: float = 0.5
    contrast: float = 0.0  # pattern amplitude as a fraction of the albedo, in [0, 1)
    axis: tuple = (1.0, 0.0, 0.0)  # [3] unit stripe normal, world frame
    offset_m: tuple = (0.0, 0.0, 0.0)  # [3] shift of the pattern, world frame
    seed: int = 0  # noise lattice seed

    KINDS = ("plain", "stripes", "checker", "noise")

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "period_m": self.period_m,
            "contrast": self.contrast,
            "axis": list(self.axis),
            "offset_m": list(self.offset_m),
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "TextureSpec":
        return cls(
            kind=str(d["kind"]),
            period_m=float(d["period_m"]),
            contrast=float(d["contrast"]),
            axis=tuple(float(a) for a in d["axis"]),
            offset_m=tuple(float(a) for a in d["offset_m"]),
            seed=int(d["seed"]),
        )


# ----------------------------------------------------------------------------- solids
@dataclass(frozen=True)
class Part:
    """One solid of a shape, in the shape's object frame."""

    kind: int  # BOX or CYLINDER
    T_obj_part: np.ndarray  # [4, 4] pose of the solid's centre
    size_m: tuple  # box: (x, y, z) extents; cylinder: (diameter, diameter, height along z)
    shade: float = 1.0  # multiplies the object's albedo


@dataclass(frozen=True)
class Solid:
    """A part placed in the world with its instance and colour."""

    kind: int
    T_world_solid: np.ndarray  # [4, 4]
    size_m: tuple  # as `Part.size_m`
    instance_id: int
    albedo: tuple  # [3] linear RGB in [0, 1]


@dataclass(frozen=True)
class SupportSurface:
    """A horizontal rectangle (object frame) that small objects may stand on."""

    center_xy_m: tuple  # [2] object frame
    size_xy_m: tuple  # [2] extents along object x and y
    height_m: float  # z of the surface, object frame
    clearance_m: float  # free height above the surface


def translation(x: float, y: float, z: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


def yaw_matrix(yaw_rad: float) -> np.ndarray:
    """[4, 4] rotation about z."""
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    T = np.eye(4)
    T[:2, :2] = [[c, -s], [s, c]]
    return T


def pose_xyz_yaw(x: float, y: float, z: float, yaw_rad: float) -> np.ndarray:
    T = yaw_matrix(yaw_rad)
    T[:3, 3] = (x, y, z)
    return T


def box(cx: float, cy: float, z0: float, sx: float, sy: float, sz: float, shade: float = 1.0) -> Part:
    """Axis-aligned box part with its bottom face at z0 (object frame)."""
    return Part(BOX, translation(cx, cy, z0 + sz / 2.0), (sx, sy, sz), shade)


def cylinder(cx: float, cy: float, z0: float, radius: float, height: float, shade: float = 1.0) -> Part:
    """Vertical cylinder part with its bottom cap at z0 (object frame)."""
    return Part(CYLINDER, translation(cx, cy, z0 + height / 2.0), (2 * radius, 2 * radius, height), shade)


def cylinder_segments(radius_m: float) -> int:
    """Facets around a cylinder: about 4 cm per facet, 12 to 32."""
    return int(np.clip(math.ceil(2 * math.pi * radius_m / 0.04), 12, 32))


_BOX_CORNERS = np.array(
    [[x, y, z] for z in (-0.5, 0.5) for y in (-0.5, 0.5) for x in (-0.5, 0.5)], dtype=np.float64
)  # [8, 3] unit cube, index = x + 2y + 4z
_BOX_TRIANGLES = np.array(
    # two triangles per face: -z, +z, -y, +y, -x, +x
    [[0, 2, 1], [1, 2, 3], [4, 5, 6], [5, 7, 6], [0, 1, 4], [1, 5, 4],
     [2, 6, 3], [3, 6, 7], [0, 4, 2], [2, 4, 6], [1, 3, 5], [3, 7, 5]],  # fmt: skip
    dtype=np.int32,
)  # [12, 3] counter-clockwise seen from outside


def box_mesh(size_m) -> tuple[np.ndarray, np.ndarray]:
    """Closed box centred at the origin: (vertices [8, 3] metres, triangles [12, 3]) wound outwards."""
    return _BOX_CORNERS * np.asarray(size_m, dtype=np.float64), _BOX_TRIANGLES.copy()


def cylinder_mesh(radius_m: float, height_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed z-axis cylinder centred at the origin: (vertices [2n+2, 3], triangles [4n, 3]) wound outwards."""
    n = cylinder_segments(radius_m)
    ang = 2 * np.pi * np.arange(n) / n
    ring = np.stack([radius_m * np.cos(ang), radius_m * np.sin(ang)], axis=1)
    h = height_m / 2.0
    verts = np.concatenate([np.c_[ring, np.full(n, -h)], np.c_[ring, np.full(n, h)], [[0.0, 0.0, -h], [0.0, 0.0, h]]])
    i = np.arange(n)
    j = (i + 1) % n
    bottom_c, top_c = 2 * n, 2 * n + 1
    tris = np.concatenate(
        [
            np.stack([i, j, n + j], 1),  # side, lower triangle
            np.stack([i, n + j, n + i], 1),  # side, upper triangle
            np.stack([np.full(n, bottom_c), j, i], 1),  # bottom cap (-z)
            np.stack([np.full(n, top_c), n + i, n + j], 1),  # top cap (+z)
        ]
    ).astype(np.int32)
    return verts, tris


def solid_mesh(kind: int, size_m) -> tuple[np.ndarray, np.ndarray]:
    """Triangle mesh of a solid in its own frame."""
    if kind == BOX:
        return box_mesh(size_m)
    return cylinder_mesh(size_m[0] / 2.0, size_m[2])


def points_inside(
    kind: int, T_world_solid: np.ndarray, size_m, points_m: np.ndarray, margin_m: float = 0.0
) -> np.ndarray:
    """[N] bool: points [N, 3] strictly inside the solid shrunk by `margin_m` (negative grows it)."""
    local = (points_m - T_world_solid[:3, 3]) @ T_world_solid[:3, :3]
    half = np.asarray(size_m, dtype=np.float64) / 2.0 - margin_m
    if kind == BOX:
        return np.all(np.abs(local) < half, axis=-1)
    return (local[:, 0] ** 2 + local[:, 1] ** 2 < half[0] ** 2) & (np.abs(local[:, 2]) < half[2])


def solid_aabb(kind: int, T_world_solid: np.ndarray, size_m) -> np.ndarray:
    """[2, 3] world axis-aligned bounds (min, max) of a solid."""
    half = np.asarray(size_m, dtype=np.float64) / 2.0
    extent = np.abs(T_world_solid[:3, :3]) @ half
    c = T_world_solid[:3, 3]
    return np.stack([c - extent, c + extent])


# ----------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class Shape:
    """Parts and support surfaces of one object, object frame."""

    parts: list
    supports: list = field(default_factory=list)


def _legs(w: float, d: float, h: float, leg_m: float, inset_m: float, shade: float, round_legs: bool) -> list:
    xs = (-w / 2 + inset_m + leg_m / 2, w / 2 - inset_m - leg_m / 2)
    ys = (-d / 2 + inset_m + leg_m / 2, d / 2 - inset_m - leg_m / 2)
    if round_legs:
        return [cylinder(x, y, 0.0, leg_m / 2, h, shade) for x in xs for y in ys]
    return [box(x, y, 0.0, leg_m, leg_m, h, shade) for x in xs for y in ys]


def _handle_front(x: float, front_y: float, z0: float, length: float, horizontal: bool) -> Part:
    """Small bar handle standing 2.5 cm proud of a front face at y = front_y."""
    if horizontal:
        return box(x, front_y + 0.0125, z0, length, 0.025, 0.02, 0.35)
    return box(x, front_y + 0.0125, z0, 0.02, 0.025, length, 0.35)


def _cabinet(w, d, h, p) -> Shape:
    """Closed body on a recessed plinth with door or drawer handles on the front (handles inside the footprint)."""
    dd = d - 0.025  # body depth, leaving room for the handles
    plinth = 0.08
    parts = [
        box(0.0, -0.0125, 0.0, w - 0.04, dd - 0.04, plinth, 0.6),
        box(0.0, -0.0125, plinth, w, dd, h - plinth, 1.0),
    ]
    drawers = int(p.get("drawers", 0))
    front_y = d / 2 - 0.025  # body front face
    if drawers > 0:
        step = (h - plinth) / drawers
        for k in range(drawers):
            z = plinth + step * (k + 0.5)
            parts.append(_handle_front(0.0, front_y, z, min(0.3, 0.4 * w), True))
    else:
        doors = 2 if w > 0.7 else 1
        hz = plinth + 0.55 * (h - plinth) if h > 1.2 else h - 0.2
        xs = (-0.06, 0.06) if doors == 2 else (w / 2 - 0.08,)
        for x in xs:
            parts.append(_handle_front(x, front_y, hz - 0.08, 0.16, False))
    supports = [SupportSurface((0.0, -0.0125), (w - 0.06, dd - 0.06), h, 0.6)] if h <= 1.3 else []
    return Shape(parts, supports)


def _bed(w, d, h, p) -> Shape:
    frame_h, mattress_h, board_t = 0.3, 0.2, 0.06
    parts = [
        box(0.0, board_t / 2, 0.0, w, d - board_t, frame_h, 0.7),
        box(0.0, board_t / 2 + 0.01, frame_h, w - 0.06, d - board_t - 0.06, mattress_h, 1.25),
        box(0.0, -d / 2 + board_t / 2, 0.0, w, board_t, h, 0.6),
    ]
    pillows = 2 if w > 1.2 else 1
    pw = (w - 0.2) / pillows - 0.05
    for k in range(pillows):
        x = -w / 2 + 0.1 + (k + 0.5) * (w - 0.2) / pillows
        parts.append(box(x, -d / 2 + board_t + 0.25, frame_h + mattress_h, pw, 0.35, 0.12, 1.5))
    return Shape(parts)


def _chair(w, d, h, p) -> Shape:
    seat_h = float(p.get("seat_height_m", 0.45))
    leg = float(p.get("leg_m", 0.03))
    seat_t, back_t = 0.04, 0.03
    round_legs = bool(p.get("round_legs", False))
    parts = _legs(w, d, seat_h - seat_t, leg, 0.02, 0.45, round_legs)
    parts.append(box(0.0, 0.0, seat_h - seat_t, w, d, seat_t, 1.0))
    parts.append(box(0.0, -d / 2 + back_t / 2 + 0.02, seat_h + 0.12, w - 0.04, back_t, h - seat_h - 0.12, 1.0))
    for x in (-w / 2 + 0.04, w / 2 - 0.04):  # back posts
        parts.append(box(x, -d / 2 + back_t / 2 + 0.02, seat_h, 0.03, back_t, 0.12, 0.45))
    return Shape(parts)


def _stool(w, d, h, p) -> Shape:
    r = min(w, d) / 2
    parts = [cylinder(0.0, 0.0, h - 0.05, r, 0.05, 1.0)]
    for k in range(3):
        a = 2 * math.pi * k / 3
        parts.append(cylinder(0.6 * r * math.cos(a), 0.6 * r * math.sin(a), 0.0, 0.015, h - 0.05, 0.4))
    return Shape(parts, [SupportSurface((0.0, 0.0), (1.2 * r, 1.2 * r), h, 0.5)])


def _sofa(w, d, h, p) -> Shape:
    arm_w, back_t, base_h, seat_h, arm_h = 0.18, 0.2, 0.12, 0.42, 0.6
    inner_w = w - 2 * arm_w
    parts = [
        box(0.0, 0.0, 0.0, w, d, base_h, 0.5),
        box(0.0, -d / 2 + back_t / 2, base_h, w, back_t, h - base_h, 1.0),
    ]
    for x in (-w / 2 + arm_w / 2, w / 2 - arm_w / 2):
        parts.append(box(x, back_t / 2, base_h, arm_w, d - back_t, arm_h - base_h, 0.9))
    cushions = max(1, int(round(inner_w / 0.65)))
    cw = inner_w / cushions
    for k in range(cushions):
        x = -inner_w / 2 + (k + 0.5) * cw
        parts.append(box(x, back_t / 2, base_h, cw - 0.01, d - back_t, seat_h - base_h, 1.15))
    return Shape(parts)


def _table(w, d, h, p) -> Shape:
    top_t = 0.04
    if p.get("round", False):
        r = min(w, d) / 2
        parts = [
            cylinder(0.0, 0.0, h - top_t, r, top_t, 1.0),
            cylinder(0.0, 0.0, 0.04, 0.05, h - top_t - 0.04, 0.5),
            cylinder(0.0, 0.0, 0.0, 0.6 * r, 0.04, 0.5),
        ]
        side = r * math.sqrt(2) * 0.9
        return Shape(parts, [SupportSurface((0.0, 0.0), (side, side), h, 0.6)])
    leg = float(p.get("leg_m", 0.05))
    parts = _legs(w, d, h - top_t, leg, 0.04, 0.6, False)
    parts.append(box(0.0, 0.0, h - top_t, w, d, top_t, 1.0))
    return Shape(parts, [SupportSurface((0.0, 0.0), (w - 0.06, d - 0.06), h, 0.6)])


def _desk(w, d, h, p) -> Shape:
    top_t, panel_t = 0.03, 0.025
    parts = [box(0.0, 0.0, h - top_t, w, d, top_t, 1.0)]
    drawer_w = 0.4 if w >= 1.1 else 0.0
    left_x = -w / 2 + panel_t / 2
    parts.append(box(left_x, 0.0, 0.0, panel_t, d, h - top_t, 0.8))
    if drawer_w:
        parts.append(box(w / 2 - drawer_w / 2, -0.0125, 0.0, drawer_w, d - 0.025, h - top_t, 0.8))
        for k in range(3):
            z = (h - top_t) * (k + 0.5) / 3
            parts.append(_handle_front(w / 2 - drawer_w / 2, d / 2 - 0.025, z, 0.15, True))
    else:
        parts.append(box(w / 2 - panel_t / 2, 0.0, 0.0, panel_t, d, h - top_t, 0.8))
    inner_l = left_x + panel_t / 2
    inner_r = (w / 2 - drawer_w) if drawer_w else (w / 2 - panel_t)
    parts.append(box((inner_l + inner_r) / 2, -d / 2 + 0.05, 0.3, inner_r - inner_l, 0.015, h - top_t - 0.3, 0.7))
    return Shape(parts, [SupportSurface((0.0, 0.0), (w - 0.06, d - 0.06), h, 0.7)])


def _bookshelf(w, d, h, p) -> Shape:
    t = 0.02
    shelves = int(p.get("shelves", 4))
    parts = [
        box(-w / 2 + t / 2, 0.0, 0.0, t, d, h, 1.0),
        box(w / 2 - t / 2, 0.0, 0.0, t, d, h, 1.0),
        box(0.0, -d / 2 + 0.005, 0.0, w - 2 * t, 0.01, h, 0.7),  # back panel
        box(0.0, 0.005, 0.0, w - 2 * t, d - 0.01, 0.06, 0.8),  # plinth
        box(0.0, 0.005, h - t, w - 2 * t, d - 0.01, t, 1.0),  # top
    ]
    gap = (h - 0.06 - t - (shelves - 1) * t) / shelves
    supports = []
    z = 0.06
    for k in range(shelves):
        supports.append(SupportSurface((0.0, 0.005), (w - 2 * t - 0.02, d - 0.03), z, gap))
        z += gap
        if k < shelves - 1:
            parts.append(box(0.0, 0.005, z, w - 2 * t, d - 0.01, t, 1.0))
            z += t
    return Shape(parts, supports)


def _picture(w, d, h, p) -> Shape:
    """Canvas recessed in a frame; the back of both touches the wall plane y = -d/2."""
    frame = float(p.get("frame_m", 0.03))
    return Shape(
        [
            box(0.0, -d * 0.2, frame, w - 2 * frame, d * 0.6, h - 2 * frame, 1.0),
            box(0.0, 0.0, 0.0, w, d, frame, 0.4),
            box(0.0, 0.0, h - frame, w, d, frame, 0.4),
            box(-w / 2 + frame / 2, 0.0, frame, frame, d, h - 2 * frame, 0.4),
            box(w / 2 - frame / 2, 0.0, frame, frame, d, h - 2 * frame, 0.4),
        ]
    )


def _counter(w, d, h, p) -> Shape:
    top_t, kick = 0.04, 0.08
    parts = [
        box(0.0, -0.03, 0.0, w - 0.02, d - 0.1, kick, 0.4),
        box(0.0, -0.02, kick, w - 0.02, d - 0.04, h - top_t - kick, 0.8),
        box(0.0, 0.0, h - top_t, w, d, top_t, 1.2),
    ]
    doors = max(1, int(w / 0.6))
    for k in range(doors):
        x = -w / 2 + (k + 0.5) * w / doors
        parts.append(_handle_front(x, d / 2 - 0.04, h - top_t - 0.12, 0.18, True))
    return Shape(parts, [SupportSurface((0.0, 0.0), (w - 0.04, d - 0.06), h, 0.5)])


def _curtain(w, d, h, p) -> Shape:
    folds = int(p.get("folds", 4))
    fw = w / folds
    t = 0.02
    parts = []
    for k in range(folds):
        y = -d / 2 + t / 2 + (d - t) * (k % 2)
        parts.append(box(-w / 2 + (k + 0.5) * fw, y, 0.0, fw, t, h, 1.0 if k % 2 else 0.85))
    return Shape(parts)


def _refrigerator(w, d, h, p) -> Shape:
    body_d = d - 0.04
    freezer = 0.3 * h
    y = -0.02
    parts = [
        box(0.0, y, 0.0, w, body_d, h - freezer - 0.005, 1.0),
        box(0.0, y, h - freezer, w, body_d, freezer, 1.0),
        box(w / 2 - 0.06, body_d / 2 + y + 0.02, h - freezer - 0.6, 0.025, 0.04, 0.45, 0.4),
        box(w / 2 - 0.06, body_d / 2 + y + 0.02, h - freezer + 0.05, 0.025, 0.04, 0.2, 0.4),
    ]
    return Shape(parts, [SupportSurface((0.0, y), (w - 0.06, body_d - 0.06), h, 0.3)])


def _toilet(w, d, h, p) -> Shape:
    tank_d = 0.18
    bowl_r = min(w / 2, (d - tank_d) / 2 + 0.02)
    parts = [
        cylinder(0.0, d / 2 - bowl_r, 0.0, 0.6 * bowl_r, 0.36, 1.0),
        cylinder(0.0, d / 2 - bowl_r, 0.36, bowl_r, 0.05, 1.05),
        box(0.0, -d / 2 + tank_d / 2, 0.0, 0.5 * w, tank_d, 0.4, 1.0),
        box(0.0, -d / 2 + tank_d / 2, 0.4, w, tank_d, h - 0.4, 1.0),
    ]
    return Shape(parts, [SupportSurface((0.0, -d / 2 + tank_d / 2), (w - 0.06, tank_d - 0.04), h, 0.3)])


def _basin(w, d, y, z0, depth_m, wall_m, shade) -> list:
    """Open-topped box (bottom and four walls) centred at y."""
    return [
        box(0.0, y, z0, w, d, wall_m, shade),
        box(0.0, y - d / 2 + wall_m / 2, z0 + wall_m, w, wall_m, depth_m - wall_m, shade),
        box(0.0, y + d / 2 - wall_m / 2, z0 + wall_m, w, wall_m, depth_m - wall_m, shade),
        box(-w / 2 + wall_m / 2, y, z0 + wall_m, wall_m, d - 2 * wall_m, depth_m - wall_m, shade),
        box(w / 2 - wall_m / 2, y, z0 + wall_m, wall_m, d - 2 * wall_m, depth_m - wall_m, shade),
    ]


def _sink(w, d, h, p) -> Shape:
    """Vessel sink standing on a counter or, with pedestal=True, a pedestal sink on the floor.

    The basin fills the front of the footprint; a deck at the back carries the faucet whose
    spout reaches over the basin.
    """
    deck_d, basin_depth = 0.08, 0.14
    z0 = h - basin_depth if p.get("pedestal", False) else 0.0
    y_back = -d / 2
    parts = _basin(w, d - deck_d, deck_d / 2, z0, basin_depth, 0.02, 1.0)
    parts += [
        box(0.0, y_back + deck_d / 2, z0, w, deck_d, 0.03, 0.8),
        cylinder(0.0, y_back + 0.035, z0 + 0.03, 0.015, 0.17, 0.5),
        box(0.0, y_back + 0.09, z0 + 0.18, 0.025, 0.1, 0.02, 0.5),
    ]
    if z0 > 0:
        parts.append(cylinder(0.0, deck_d / 2, 0.0, 0.09, z0, 0.9))
    return Shape(parts)


def _coat_rack(w, d, h, p) -> Shape:
    r = min(w, d) / 2
    parts = [cylinder(0.0, 0.0, 0.0, r, 0.03, 0.5), cylinder(0.0, 0.0, 0.03, 0.015, h - 0.03, 0.8)]
    for k in range(4):
        a = math.pi / 2 * k
        parts.append(box(0.09 * math.cos(a), 0.09 * math.sin(a), h - 0.15, 0.02, 0.02, 0.1, 0.6))
    return Shape(parts)


def _plant(w, d, h, p) -> Shape:
    r = min(w, d) / 2
    pot_h = 0.35 * h
    parts = [cylinder(0.0, 0.0, 0.0, 0.7 * r, pot_h, 0.7), cylinder(0.0, 0.0, pot_h, 0.08 * r, 0.25 * h, 0.5)]
    parts.append(cylinder(0.0, 0.0, pot_h + 0.25 * h, r, h - pot_h - 0.25 * h, 1.0))
    return Shape(parts)


def _door_leaf(w, d, h, p) -> Shape:
    """Door slab of thickness d with a lever handle on both faces (handles stand outside the slab)."""
    hx = w / 2 - 0.1
    parts = [box(0.0, 0.0, 0.0, w, d, h, 1.0)]
    for sign in (-1.0, 1.0):
        y = sign * (d / 2 + 0.03)
        parts.append(box(hx, y, 0.98, 0.12, 0.02, 0.02, 0.35))
        parts.append(box(hx + 0.05, sign * (d / 2 + 0.01), 0.96, 0.025, 0.02, 0.06, 0.35))
    return Shape(parts)


def _window_pane(w, d, h, p) -> Shape:
    """Glass pane in the middle of the wall thickness with a frame and a central mullion."""
    frame = 0.05
    pane_t = 0.01
    parts = [box(0.0, 0.0, frame, w - 2 * frame, pane_t, h - 2 * frame, 1.0)]
    parts += [
        box(0.0, 0.0, 0.0, w, d, frame, 0.5),
        box(0.0, 0.0, h - frame, w, d, frame, 0.5),
        box(-w / 2 + frame / 2, 0.0, frame, frame, d, h - 2 * frame, 0.5),
        box(w / 2 - frame / 2, 0.0, frame, frame, d, h - 2 * frame, 0.5),
    ]
    if w > 1.0:
        parts.append(box(0.0, 0.0, frame, 0.04, d * 0.8, h - 2 * frame, 0.5))
    return Shape(parts)


# small objects --------------------------------------------------------------------------
def _mug(w, d, h, p) -> Shape:
    """Cylindrical body with a flat handle on its +x side, filling the footprint."""
    r = min(w - 0.025, d) / 2
    body_x = w / 2 - 0.025 - r
    return Shape([cylinder(body_x, 0.0, 0.0, r, h, 1.0), box(w / 2 - 0.0125, 0.0, 0.25 * h, 0.025, 0.01, 0.5 * h, 1.0)])


def _bottle(w, d, h, p) -> Shape:
    r = min(w, d) / 2
    return Shape([cylinder(0.0, 0.0, 0.0, r, 0.7 * h, 1.0), cylinder(0.0, 0.0, 0.7 * h, 0.35 * r, 0.3 * h, 0.8)])


def _round(w, d, h, p) -> Shape:
    return Shape([cylinder(0.0, 0.0, 0.0, min(w, d) / 2, h, 1.0)])


def _block(w, d, h, p) -> Shape:
    return Shape([box(0.0, 0.0, 0.0, w, d, h, 1.0)])


def _books(w, d, h, p) -> Shape:
    """Row of upright books of varying height and shade, filling the width."""
    count = int(p.get("count", 4))
    bw = w / count
    parts = []
    for k in range(count):
        f = 0.75 + 0.25 * ((k * 7) % 5) / 4
        parts.append(
            box(-w / 2 + (k + 0.5) * bw, 0.0, 0.0, bw, d * (0.85 + 0.15 * (k % 2)), h * f, 0.7 + 0.15 * (k % 4))
        )
    return Shape(parts)


def _lamp(w, d, h, p) -> Shape:
    r = min(w, d) / 2
    return Shape(
        [
            cylinder(0.0, 0.0, 0.0, 0.6 * r, 0.02, 0.5),
            cylinder(0.0, 0.0, 0.02, 0.01, 0.6 * h - 0.02, 0.5),
            cylinder(0.0, 0.0, 0.6 * h, r, 0.4 * h, 1.3),
        ]
    )


def _laptop(w, d, h, p) -> Shape:
    """Base with the lid opened 105 degrees (leaning 15 degrees back)."""
    base_t, lid_t, lean = 0.02, 0.008, math.radians(15)
    lid_h = min(0.9 * d, (h - base_t) / math.cos(lean))
    T_lid = translation(0.0, -d / 2 + 0.3 * d, base_t) @ _rot_x(lean) @ translation(0.0, -lid_t / 2, lid_h / 2)
    return Shape([box(0.0, 0.0, 0.0, w, d, base_t, 0.6), Part(BOX, T_lid, (w, lid_t, lid_h), 0.3)])


def _monitor(w, d, h, p) -> Shape:
    screen_t = 0.03
    screen_h = 0.6 * h
    return Shape(
        [
            box(0.0, 0.0, 0.0, 0.5 * w, d, 0.015, 0.3),
            box(0.0, 0.0, 0.015, 0.05, 0.02, h - screen_h - 0.005, 0.3),
            box(0.0, 0.01 + screen_t / 2, h - screen_h, w, screen_t, screen_h, 0.2),
        ]
    )


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    T = np.eye(4)
    T[1:3, 1:3] = [[c, -s], [s, c]]
    return T


SHAPES = {
    "cabinet": _cabinet,
    "bed": _bed,
    "chair": _chair,
    "stool": _stool,
    "sofa": _sofa,
    "table": _table,
    "desk": _desk,
    "bookshelf": _bookshelf,
    "picture": _picture,
    "counter": _counter,
    "curtain": _curtain,
    "refrigerator": _refrigerator,
    "toilet": _toilet,
    "sink": _sink,
    "coat_rack": _coat_rack,
    "plant": _plant,
    "door_leaf": _door_leaf,
    "window_pane": _window_pane,
    "mug": _mug,
    "bottle": _bottle,
    "bowl": _round,
    "vase": _round,
    "bin": _round,
    "box": _block,
    "books": _books,
    "lamp": _lamp,
    "laptop": _laptop,
    "monitor": _monitor,
}


def make_shape(shape: str, size_m, params: dict) -> Shape:
    """Parts and support surfaces of a named shape with extents `size_m` (w, d, h) and its parameters."""
    try:
        builder = SHAPES[shape]
    except KeyError:
        raise KeyError(f"unknown shape {shape!r}; known: {sorted(SHAPES)}") from None
    w, d, h = (float(s) for s in size_m)
    return builder(w, d, h, params)
