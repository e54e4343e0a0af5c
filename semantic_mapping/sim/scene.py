"""Procedural indoor scenes: a JSON-serialisable spec (rooms, openings, objects) and its mesh.

Layout: a rectangular house footprint is split (binary space partition) into 3-8 m rooms;
every split wall gets a doorway, so all rooms are connected. Walls are solid slabs (the
half of an interior wall facing a room belongs to that room's wall instance), with door
and window openings cut out. Furniture is placed per room type against walls, free-standing
or on supports, never intersecting walls, openings' clearance zones or each other, and
keeping the room walkable (doors connected through free floor with a robot's clearance).
World frame: z up, floor top at z = 0.
"""

from __future__ import annotations

import colorsys
import json
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import ndimage

from semantic_mapping.config import SceneConfig
from semantic_mapping.semantics.label_space import default_label_space
from semantic_mapping.atomic_files import atomic_write_bytes
from semantic_mapping.sim.ground_truth import InstanceInfo, SceneMesh
from semantic_mapping.sim.primitives import (
    BOX,
    Solid,
    TextureSpec,
    make_shape,
    pose_xyz_yaw,
    solid_aabb,
    translation,
)

SPEC_VERSION = 1


# ----------------------------------------------------------------------------- spec
@dataclass
class SurfaceSpec:
    """Appearance and instance of one room's floor, walls or ceiling."""

    instance_id: int
    albedo: tuple  # [3] linear RGB in [0, 1]
    texture: TextureSpec

    def to_dict(self) -> dict:
        return {"instance_id": self.instance_id, "albedo": list(self.albedo), "texture": self.texture.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "SurfaceSpec":
        return cls(int(d["instance_id"]), tuple(float(a) for a in d["albedo"]), TextureSpec.from_dict(d["texture"]))


@dataclass
class RoomSpec:
    """A rectangular room: free interior plus the wall slabs it owns on each side."""

    room_id: int
    kind: str  # living, bedroom, kitchen, office, dining, bathroom, studio
    min_xy_m: tuple  # [2] interior corner, world frame
    max_xy_m: tuple  # [2] interior corner, world frame
    wall_thickness_m: tuple  # [4] owned wall slab on sides -x, +x, -y, +y
    floor: SurfaceSpec
    wall: SurfaceSpec
    ceiling: SurfaceSpec

    def to_dict(self) -> dict:
        return {
            "room_id": self.room_id,
            "kind": self.kind,
            "min_xy_m": list(self.min_xy_m),
            "max_xy_m": list(self.max_xy_m),
            "wall_thickness_m": list(self.wall_thickness_m),
            "floor": self.floor.to_dict(),
            "wall": self.wall.to_dict(),
            "ceiling": self.ceiling.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "RoomSpec":
        return cls(
            room_id=int(d["room_id"]),
            kind=str(d["kind"]),
            min_xy_m=tuple(float(a) for a in d["min_xy_m"]),
            max_xy_m=tuple(float(a) for a in d["max_xy_m"]),
            wall_thickness_m=tuple(float(a) for a in d["wall_thickness_m"]),
            floor=SurfaceSpec.from_dict(d["floor"]),
            wall=SurfaceSpec.from_dict(d["wall"]),
            ceiling=SurfaceSpec.from_dict(d["ceiling"]),
        )

    @property
    def area_m2(self) -> float:
        return (self.max_xy_m[0] - self.min_xy_m[0]) * (self.max_xy_m[1] - self.min_xy_m[1])


@dataclass
class OpeningSpec:
    """A rectangular hole through a wall: an open doorway, a closed door or a window."""

    kind: str  # 'doorway' | 'door' | 'window'
    axis: int  # 0: wall plane x = line_m (wall runs along y); 1: wall plane y = line_m
    line_m: float  # centre plane of the wall slab
    center_m: float  # centre along the wall
    width_m: float
    bottom_m: float  # sill (0 for doors)
    top_m: float
    rooms: tuple  # [2] room ids on either side, -1 = outside

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["rooms"] = list(self.rooms)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "OpeningSpec":
        return cls(
            kind=str(d["kind"]),
            axis=int(d["axis"]),
            line_m=float(d["line_m"]),
            center_m=float(d["center_m"]),
            width_m=float(d["width_m"]),
            bottom_m=float(d["bottom_m"]),
            top_m=float(d["top_m"]),
            rooms=tuple(int(r) for r in d["rooms"]),
        )

    def along_range_m(self) -> tuple:
        return self.center_m - self.width_m / 2, self.center_m + self.width_m / 2


@dataclass
class ObjectSpec:
    """One object instance: a shape (see primitives.SHAPES) placed with a yaw about z."""

    instance_id: int
    class_name: str
    shape: str
    position_m: tuple  # [3] world frame: footprint centre, z of the bottom
    yaw_rad: float
    size_m: tuple  # [3] width (object x), depth (object y, front = +y), height
    albedo: tuple  # [3] linear RGB in [0, 1]
    texture: TextureSpec
    params: dict = field(default_factory=dict)  # shape parameters (JSON values)
    room_id: int = -1
    support_id: int = 0  # instance id of the object it stands on, 0 for floor or wall

    def to_dict(self) -> dict:
        return {
            "instance_id": self.instance_id,
            "class_name": self.class_name,
            "shape": self.shape,
            "position_m": list(self.position_m),
            "yaw_rad": self.yaw_rad,
            "size_m": list(self.size_m),
            "albedo": list(self.albedo),
            "texture": self.texture.to_dict(),
            "params": dict(self.params),
            "room_id": self.room_id,
            "support_id": self.support_id,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ObjectSpec":
        return cls(
            instance_id=int(d["instance_id"]),
            class_name=str(d["class_name"]),
            shape=str(d["shape"]),
            position_m=tuple(float(a) for a in d["position_m"]),
            yaw_rad=float(d["yaw_rad"]),
            size_m=tuple(float(a) for a in d["size_m"]),
            albedo=tuple(float(a) for a in d["albedo"]),
            texture=TextureSpec.from_dict(d["texture"]),
            params=dict(d.get("params", {})),
            room_id=int(d.get("room_id", -1)),
            support_id=int(d.get("support_id", 0)),
        )

    @property
    def T_world_obj(self) -> np.ndarray:  # [4, 4]
        return pose_xyz_yaw(*self.position_m, self.yaw_rad)

    def local_bounds_m(self) -> np.ndarray:
        """[2, 3] (min, max) of the object's parts in its own frame."""
        boxes = [
            solid_aabb(p.kind, p.T_obj_part, p.size_m) for p in make_shape(self.shape, self.size_m, self.params).parts
        ]
        return np.stack([np.min([b[0] for b in boxes], 0), np.max([b[1] for b in boxes], 0)])


@dataclass
class SceneSpec:
    """Everything needed to rebuild a scene's mesh exactly; JSON-serialisable."""

    seed: int
    wall_height_m: float
    wall_thickness_m: float
    slab_thickness_m: float  # floor and ceiling slabs
    rooms: list  # [RoomSpec]
    openings: list  # [OpeningSpec]
    objects: list  # [ObjectSpec], doors and windows included

    def to_dict(self) -> dict:
        return {
            "version": SPEC_VERSION,
            "seed": self.seed,
            "wall_height_m": self.wall_height_m,
            "wall_thickness_m": self.wall_thickness_m,
            "slab_thickness_m": self.slab_thickness_m,
            "rooms": [r.to_dict() for r in self.rooms],
            "openings": [o.to_dict() for o in self.openings],
            "objects": [o.to_dict() for o in self.objects],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SceneSpec":
        if d.get("version") != SPEC_VERSION:
            raise ValueError(f"scene spec version {d.get('version')!r} is not supported (expected {SPEC_VERSION})")
        return cls(
            seed=int(d["seed"]),
            wall_height_m=float(d["wall_height_m"]),
            wall_thickness_m=float(d["wall_thickness_m"]),
            slab_thickness_m=float(d["slab_thickness_m"]),
            rooms=[RoomSpec.from_dict(r) for r in d["rooms"]],
            openings=[OpeningSpec.from_dict(o) for o in d["openings"]],
            objects=[ObjectSpec.from_dict(o) for o in d["objects"]],
        )

    def save(self, path) -> None:
        """Write the spec as JSON (atomically: temp file, then rename)."""
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=1).encode("utf-8"))

    @classmethod
    def load(cls, path) -> "SceneSpec":
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def room(self, room_id: int) -> RoomSpec:
        return next(r for r in self.rooms if r.room_id == room_id)

    def interior_bounds_m(self) -> np.ndarray:
        """[2, 3] inside of the house up to the centre plane of the outer walls (z from floor to ceiling)."""
        lo = np.min([r.min_xy_m for r in self.rooms], 0) - self.wall_thickness_m / 2
        hi = np.max([r.max_xy_m for r in self.rooms], 0) + self.wall_thickness_m / 2
        return np.array([[lo[0], lo[1], 0.0], [hi[0], hi[1], self.wall_height_m]])

    def build_mesh(self) -> SceneMesh:
        """The labelled triangle mesh of the scene (identical for identical specs)."""
        labels = default_label_space()
        solids, instances = [], {}
        H = self.wall_height_m
        for room in self.rooms:
            for name, surf in (("floor", room.floor), ("wall", room.wall), ("ceiling", room.ceiling)):
                instances[surf.instance_id] = InstanceInfo(
                    labels.id_of(name), name, surf.albedo, surf.texture, room.room_id
                )
            (x0, y0), (x1, y1) = room.min_xy_m, room.max_xy_m
            tx0, tx1, ty0, ty1 = room.wall_thickness_m
            slab = self.slab_thickness_m
            for surf, z0 in ((room.floor, -slab), (room.ceiling, H)):
                solids.append(_box_solid((x0 - tx0, y0 - ty0, z0), (x1 + tx1, y1 + ty1, z0 + slab), surf))
            for side in range(4):
                solids += _wall_solids(room, side, self.openings, H)
        for obj in self.objects:
            instances[obj.instance_id] = InstanceInfo(
                labels.id_of(obj.class_name), obj.class_name, obj.albedo, obj.texture, obj.room_id
            )
            T_world_obj = obj.T_world_obj
            base = np.asarray(obj.albedo)
            for part in make_shape(obj.shape, obj.size_m, obj.params).parts:
                albedo = tuple(float(a) for a in np.clip(base * part.shade, 0.0, 1.0))
                solids.append(Solid(part.kind, T_world_obj @ part.T_obj_part, part.size_m, obj.instance_id, albedo))
        return SceneMesh.from_solids(solids, instances, self.interior_bounds_m())


def _box_solid(lo, hi, surf: SurfaceSpec) -> Solid:
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return Solid(BOX, translation(*((lo + hi) / 2)), tuple(float(v) for v in hi - lo), surf.instance_id, surf.albedo)


def _side_geometry(room: RoomSpec, side: int) -> tuple:
    """(axis, slab (lo, hi) across the wall, span (lo, hi) along it) of side 0..3 = -x, +x, -y, +y.

    The x-sides span the corners, the y-sides stop at them, so a room's wall ring has no overlaps.
    """
    (x0, y0), (x1, y1) = room.min_xy_m, room.max_xy_m
    tx0, tx1, ty0, ty1 = room.wall_thickness_m
    if side == 0:
        return 0, (x0 - tx0, x0), (y0 - ty0, y1 + ty1)
    if side == 1:
        return 0, (x1, x1 + tx1), (y0 - ty0, y1 + ty1)
    if side == 2:
        return 1, (y0 - ty0, y0), (x0, x1)
    return 1, (y1, y1 + ty1), (x0, x1)


def _openings_on_side(room: RoomSpec, side: int, openings: list) -> list:
    axis, (s0, s1), (a0, a1) = _side_geometry(room, side)
    out = []
    for o in openings:
        lo, hi = o.along_range_m()
        if o.axis == axis and room.room_id in o.rooms and s0 - 1e-6 <= o.line_m <= s1 + 1e-6 and lo < a1 and hi > a0:
            out.append(o)
    return sorted(out, key=lambda o: o.center_m)


def _wall_solids(room: RoomSpec, side: int, openings: list, H: float) -> list:
    """Boxes of one side's wall slab with the openings cut out."""
    axis, (s0, s1), (a0, a1) = _side_geometry(room, side)

    def piece(u0, u1, z0, z1) -> Solid:
        if axis == 0:
            return _box_solid((s0, u0, z0), (s1, u1, z1), room.wall)
        return _box_solid((u0, s0, z0), (u1, s1, z1), room.wall)

    out, cursor = [], a0
    for o in _openings_on_side(room, side, openings):
        lo, hi = o.along_range_m()
        if lo > cursor:
            out.append(piece(cursor, lo, 0.0, H))
        if o.bottom_m > 0:
            out.append(piece(lo, hi, 0.0, o.bottom_m))
        if o.top_m < H:
            out.append(piece(lo, hi, o.top_m, H))
        cursor = hi
    if a1 > cursor:
        out.append(piece(cursor, a1, 0.0, H))
    return out


# ----------------------------------------------------------------------------- free space
@dataclass
class FloorGrid:
    """2D grid over the house: free floor cells and their clearance to the nearest obstacle."""

    free: np.ndarray  # [nx, ny] bool, True where the floor is free (room interior or doorway, no object)
    clearance_m: np.ndarray  # [nx, ny] float64 distance from the cell centre to the nearest blocked cell edge
    room_of: np.ndarray  # [nx, ny] int32 room id of the cell, -1 outside rooms (doorways, walls)
    origin_xy_m: np.ndarray  # [2] world (x, y) of the centre of cell [0, 0]
    cell_m: float

    def cell_of(self, xy_m: np.ndarray) -> np.ndarray:
        """[..., 2] int64 cell indices of world points [..., 2] (clipped to the grid)."""
        ij = np.floor((np.asarray(xy_m) - self.origin_xy_m) / self.cell_m + 0.5).astype(np.int64)
        return np.clip(ij, 0, np.array(self.free.shape) - 1)

    def center_of(self, ij: np.ndarray) -> np.ndarray:
        """[..., 2] world (x, y) of cell centres."""
        return self.origin_xy_m + np.asarray(ij) * self.cell_m

    def clearance_at(self, xy_m: np.ndarray) -> np.ndarray:
        """[N] clearance at world points [N, 2], bilinear between cell centres."""
        f = (np.asarray(xy_m) - self.origin_xy_m) / self.cell_m
        return ndimage.map_coordinates(self.clearance_m, f.T, order=1, mode="nearest")


def footprint_box(obj: ObjectSpec) -> "_Box":
    """Oriented bounding box of an object's parts (footprint + height range)."""
    lo, hi = obj.local_bounds_m()
    c_local = (lo + hi) / 2
    c, s = math.cos(obj.yaw_rad), math.sin(obj.yaw_rad)
    cx = obj.position_m[0] + c * c_local[0] - s * c_local[1]
    cy = obj.position_m[1] + s * c_local[0] + c * c_local[1]
    half = (hi - lo) / 2
    return _Box(np.array([cx, cy]), half[:2].copy(), obj.yaw_rad, obj.position_m[2] + lo[2], obj.position_m[2] + hi[2])


def doorway_rect(spec: SceneSpec, o: OpeningSpec) -> tuple:
    """World (min_xy, max_xy) of the floor inside an opening's slab."""
    lo_u, hi_u = o.along_range_m()
    t = spec.wall_thickness_m
    if o.axis == 0:
        return np.array([o.line_m - t / 2, lo_u]), np.array([o.line_m + t / 2, hi_u])
    return np.array([lo_u, o.line_m - t / 2]), np.array([hi_u, o.line_m + t / 2])


def floor_grid(spec: SceneSpec, cell_m: float = 0.05) -> FloorGrid:
    """Free floor of the whole house: room interiors and open doorways minus every object footprint."""
    lo = np.min([r.min_xy_m for r in spec.rooms], 0) - 2 * spec.wall_thickness_m
    hi = np.max([r.max_xy_m for r in spec.rooms], 0) + 2 * spec.wall_thickness_m
    shape = tuple(np.ceil((hi - lo) / cell_m).astype(int) + 1)
    return _rasterize(
        lo,
        shape,
        cell_m,
        [(r.room_id, np.array(r.min_xy_m), np.array(r.max_xy_m)) for r in spec.rooms],
        [doorway_rect(spec, o) for o in spec.openings if o.kind == "doorway"],
        [footprint_box(o) for o in spec.objects if o.support_id == 0],
    )


def _rasterize(origin_xy, shape, cell_m, rooms, passages, boxes) -> FloorGrid:
    ix, iy = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    xy = origin_xy + np.stack([ix, iy], -1) * cell_m  # [nx, ny, 2] cell centres
    room_of = np.full(shape, -1, np.int32)
    for rid, rlo, rhi in rooms:
        room_of[np.all((xy >= rlo) & (xy <= rhi), axis=-1)] = rid
    free = room_of >= 0
    for plo, phi in passages:
        free |= np.all((xy >= plo - 1e-9) & (xy <= phi + 1e-9), axis=-1)
    for b in boxes:
        r = math.hypot(*b.half_xy)
        i0, j0 = np.floor((b.center_xy - r - origin_xy) / cell_m).astype(int)
        i1, j1 = np.ceil((b.center_xy + r - origin_xy) / cell_m).astype(int) + 1
        i0, j0, i1, j1 = max(i0, 0), max(j0, 0), min(i1, shape[0]), min(j1, shape[1])
        if i1 <= i0 or j1 <= j0:
            continue
        sub = xy[i0:i1, j0:j1]
        free[i0:i1, j0:j1] &= ~b.contains_xy(sub.reshape(-1, 2)).reshape(sub.shape[:2])
    clearance = ndimage.distance_transform_edt(free) * cell_m - cell_m / 2
    return FloorGrid(free, clearance, room_of, np.asarray(origin_xy, float), cell_m)


# ----------------------------------------------------------------------------- placement geometry
@dataclass
class _Box:
    """Oriented box: footprint rectangle rotated by yaw about z, plus a z range."""

    center_xy: np.ndarray  # [2]
    half_xy: np.ndarray  # [2]
    yaw: float
    z0: float
    z1: float

    def axes(self) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.array([[c, s], [-s, c]])  # rows: object x and y in world

    def corners(self) -> np.ndarray:
        ax = self.axes()
        signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]])
        return self.center_xy + (signs * self.half_xy) @ ax

    def contains_xy(self, xy: np.ndarray) -> np.ndarray:
        local = (xy - self.center_xy) @ self.axes().T
        return np.all(np.abs(local) <= self.half_xy, axis=-1)

    def overlaps(self, other: "_Box", margin_m: float = 0.0) -> bool:
        """True when the boxes intersect with more than touching, after growing each footprint by margin_m/2."""
        if self.z0 >= other.z1 - 1e-6 or other.z0 >= self.z1 - 1e-6:
            return False
        a_half, b_half = self.half_xy + margin_m / 2, other.half_xy + margin_m / 2
        a_ax, b_ax = self.axes(), other.axes()
        d = other.center_xy - self.center_xy
        for axis in np.concatenate([a_ax, b_ax]):
            ra = np.sum(a_half * np.abs(a_ax @ axis))
            rb = np.sum(b_half * np.abs(b_ax @ axis))
            if abs(d @ axis) >= ra + rb - 1e-6:
                return False
        return True


def _hsv(rng, h, s, v) -> tuple:
    """Albedo from HSV ranges (each a (lo, hi) pair, hue wraps)."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(*h) % 1.0, rng.uniform(*s), rng.uniform(*v))
    return tuple(round(float(c), 4) for c in rgb)


_PALETTES = {
    "wood": ((0.05, 0.11), (0.3, 0.65), (0.3, 0.75)),
    "white": ((0.0, 1.0), (0.0, 0.06), (0.8, 0.95)),
    "metal": ((0.5, 0.65), (0.0, 0.12), (0.45, 0.7)),
    "fabric": ((0.0, 1.0), (0.2, 0.6), (0.3, 0.75)),
    "bright": ((0.0, 1.0), (0.45, 0.9), (0.4, 0.95)),
    "wall": ((0.0, 1.0), (0.03, 0.25), (0.7, 0.93)),
    "glass": ((0.52, 0.6), (0.15, 0.3), (0.65, 0.85)),
}


def _round_tuple(values, nd: int = 4) -> tuple:
    return tuple(round(float(v), nd) for v in values)


# ----------------------------------------------------------------------------- generator
class _Generator:
    """Builds one SceneSpec from a seeded generator; keeps the collision state while placing."""

    def __init__(self, seed: int, cfg: SceneConfig):
        self.seed = seed
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self.next_id = 1
        self.rooms: list = []
        self.openings: list = []
        self.objects: list = []
        self.blockers: dict = {}  # room id -> [(_Box, owner)]: owner = instance id, or < 0 for a reserved zone
        self.window_zones: set = set()  # owners of the zones in front of windows
        self.next_zone = -1
        self.anchors: dict = {}  # room id -> [xy] points that must stay reachable (in front of doors)
        self.H = 0.0
        self.t = cfg.wall_thickness_m

    def new_id(self) -> int:
        i = self.next_id
        self.next_id += 1
        return i

    def texture(self, kind: str, period_m: float, contrast: float, axis=(1.0, 0.0, 0.0)) -> TextureSpec:
        axis = np.asarray(axis, float)
        axis = axis / np.linalg.norm(axis)
        return TextureSpec(
            kind=kind,
            period_m=round(float(period_m), 4),
            contrast=round(float(contrast), 4),
            axis=_round_tuple(axis, 6),
            offset_m=_round_tuple(self.rng.uniform(0.0, period_m, 3) + 0.25 * period_m),
            seed=int(self.rng.integers(0, 2**31 - 1)),
        )

    # ------------------------------------------------------------------------- layout
    def layout(self) -> None:
        cfg, rng, t = self.cfg, self.rng, self.t
        n = int(rng.integers(cfg.min_rooms, cfg.max_rooms + 1))
        self.H = round(float(rng.uniform(cfg.wall_height_min_m, cfg.wall_height_max_m)), 3)
        lo_size, hi_size = cfg.min_room_size_m, cfg.max_room_size_m
        for _ in range(500):
            mean_side = rng.uniform(lo_size + 0.5, min(hi_size, lo_size + 3.5))
            aspect = rng.uniform(0.6, 1.7)
            W = mean_side * math.sqrt(n * aspect)
            D = mean_side * math.sqrt(n / aspect)
            regions = [(0.0, 0.0, W, D)]
            splits = []
            ok = True
            while len(regions) < n and ok:
                splittable = []
                for k, (x0, y0, x1, y1) in enumerate(regions):
                    for axis, length in ((0, x1 - x0), (1, y1 - y0)):
                        if length >= 2 * (lo_size + t):
                            splittable.append((length * (1.0 + 0.1 * rng.random()), k, axis))
                if not splittable:
                    ok = False
                    break
                _, k, axis = max(splittable)
                x0, y0, x1, y1 = regions.pop(k)
                a0, a1 = (x0, x1) if axis == 0 else (y0, y1)
                s = round(float(rng.uniform(a0 + lo_size + t, a1 - lo_size - t)), 3)
                if axis == 0:
                    regions += [(x0, y0, s, y1), (s, y0, x1, y1)]
                    splits.append((0, s, y0, y1))
                else:
                    regions += [(x0, y0, x1, s), (x0, s, x1, y1)]
                    splits.append((1, s, x0, x1))
            if not ok:
                continue
            W, D = round(W, 3), round(D, 3)
            interiors = [self._interior(r, W, D) for r in regions]
            dims = np.array([[b[2] - b[0], b[3] - b[1]] for b, _ in interiors])
            if np.all(dims >= lo_size - 1e-9) and np.all(dims <= hi_size + 1e-9):
                break
        else:
            raise RuntimeError(f"no room layout found for {cfg}")
        order = np.argsort([b[0] * 1000 + b[1] for b, _ in interiors])
        kinds = self._room_kinds([interiors[i][0] for i in order])
        for room_id, i in enumerate(order):
            (x0, y0, x1, y1), thick = interiors[i]
            self.rooms.append(
                RoomSpec(
                    room_id=room_id,
                    kind=kinds[room_id],
                    min_xy_m=_round_tuple((x0, y0), 6),
                    max_xy_m=_round_tuple((x1, y1), 6),
                    wall_thickness_m=_round_tuple(thick, 6),
                    floor=self._floor_surface(kinds[room_id]),
                    wall=self._wall_surface(),
                    ceiling=SurfaceSpec(
                        self.new_id(), _hsv(rng, *_PALETTES["white"]), self.texture("noise", 0.6, 0.04)
                    ),
                )
            )
            self.blockers[room_id] = []
            self.anchors[room_id] = []
        self.splits = splits

    def _interior(self, region, W, D) -> tuple:
        """(interior rect, owned wall thickness per side) of a BSP region."""
        x0, y0, x1, y1 = region
        t = self.t
        thick = []
        bounds = []
        for value, outer, sign in ((x0, 0.0, 1), (x1, W, -1), (y0, 0.0, 1), (y1, D, -1)):
            exterior = abs(value - outer) < 1e-9
            thick.append(t if exterior else t / 2)
            bounds.append(value if exterior else value + sign * t / 2)
        return (bounds[0], bounds[2], bounds[1], bounds[3]), tuple(thick)

    def _room_kinds(self, rects) -> list:
        areas = [(r[2] - r[0]) * (r[3] - r[1]) for r in rects]
        if len(rects) == 1:
            return [str(self.rng.choice(["studio", "living", "office", "bedroom"]))]
        kinds = [""] * len(rects)
        smallest = int(np.argmin(areas))
        if areas[smallest] < 14.0:
            kinds[smallest] = "bathroom"
        pool = list(self.rng.permutation(["living", "bedroom", "kitchen", "office", "dining"]))
        for i in range(len(rects)):
            if not kinds[i]:
                kinds[i] = str(pool.pop(0)) if pool else str(self.rng.choice(["bedroom", "office", "living"]))
        return kinds

    def _floor_surface(self, kind: str) -> SurfaceSpec:
        rng = self.rng
        if kind in ("kitchen", "bathroom") or rng.random() < 0.2:
            albedo = _hsv(rng, (0.0, 1.0), (0.0, 0.2), (0.55, 0.9))
            tex = self.texture("checker", rng.uniform(0.3, 0.6), rng.uniform(0.12, 0.3))
        elif rng.random() < 0.7:
            albedo = _hsv(rng, *_PALETTES["wood"])
            direction = (1.0, 0.0, 0.0) if rng.random() < 0.5 else (0.0, 1.0, 0.0)
            tex = self.texture("stripes", rng.uniform(0.12, 0.25), rng.uniform(0.1, 0.25), direction)
        else:
            albedo = _hsv(rng, *_PALETTES["fabric"])
            tex = self.texture("noise", rng.uniform(0.15, 0.4), rng.uniform(0.1, 0.25))
        return SurfaceSpec(self.new_id(), albedo, tex)

    def _wall_surface(self) -> SurfaceSpec:
        rng = self.rng
        albedo = _hsv(rng, *_PALETTES["wall"])
        if rng.random() < 0.25:
            tex = self.texture(
                "stripes", rng.uniform(0.1, 0.3), rng.uniform(0.05, 0.12), (rng.normal(), rng.normal(), 0.0)
            )
        else:
            tex = self.texture("noise", rng.uniform(0.3, 0.8), rng.uniform(0.04, 0.1))
        return SurfaceSpec(self.new_id(), albedo, tex)

    # ------------------------------------------------------------------------- openings
    def _rooms_on_line(self, axis: int, line: float, side: int) -> list:
        """Rooms whose wall slab on `side` (-1: lower, +1: upper of the line) touches the split line."""
        out = []
        for r in self.rooms:
            lo = r.min_xy_m[axis] - r.wall_thickness_m[2 * axis]
            hi = r.max_xy_m[axis] + r.wall_thickness_m[2 * axis + 1]
            if side < 0 and abs(hi - line) < 1e-6:
                out.append(r)
            if side > 0 and abs(lo - line) < 1e-6:
                out.append(r)
        return out

    def _free_interval(self, axis, line, lo, hi, width) -> Optional[float]:
        """Centre of a random `width` interval in [lo, hi] not overlapping openings on this wall line."""
        taken = [o.along_range_m() for o in self.openings if o.axis == axis and abs(o.line_m - line) < 1e-6]
        for _ in range(20):
            if hi - lo < width:
                return None
            c = float(self.rng.uniform(lo + width / 2, hi - width / 2))
            if all(c + width / 2 + 0.3 <= a or c - width / 2 - 0.3 >= b for a, b in taken):
                return round(c, 4)
        return None

    def openings_between_rooms(self) -> None:
        cfg, rng = self.cfg, self.rng
        for axis, line, _, _ in self.splits:
            along = 1 - axis
            low, high = self._rooms_on_line(axis, line, -1), self._rooms_on_line(axis, line, +1)
            pairs = []
            for a in low:
                for b in high:
                    u0 = max(a.min_xy_m[along], b.min_xy_m[along])
                    u1 = min(a.max_xy_m[along], b.max_xy_m[along])
                    if u1 - u0 >= cfg.door_width_max_m + 0.6:
                        pairs.append((a, b, u0, u1))
            rng.shuffle(pairs)
            for k, (a, b, u0, u1) in enumerate(pairs):
                if k > 0 and rng.random() >= cfg.extra_door_prob:
                    continue
                kind = "doorway" if k == 0 or rng.random() >= cfg.closed_door_prob else "door"
                width = round(float(rng.uniform(cfg.door_width_min_m, cfg.door_width_max_m)), 3)
                c = self._free_interval(axis, line, u0 + 0.3, u1 - 0.3, width)
                if c is None:
                    continue
                self._add_opening(kind, axis, line, c, width, 0.0, cfg.door_height_m, (a.room_id, b.room_id))

    def openings_exterior(self) -> None:
        cfg, rng, t = self.cfg, self.rng, self.t
        exterior_sides = []
        for r in self.rooms:
            for side in range(4):
                if abs(r.wall_thickness_m[side] - t) < 1e-9:
                    exterior_sides.append((r, side))
        if exterior_sides and rng.random() < cfg.entrance_door_prob:
            r, side = exterior_sides[int(rng.integers(len(exterior_sides)))]
            self._exterior_opening(r, side, "door", float(rng.uniform(cfg.door_width_min_m, cfg.door_width_max_m)))
        for r, side in exterior_sides:
            count = int(rng.binomial(2, cfg.window_prob))
            for _ in range(count):
                self._exterior_opening(r, side, "window", float(rng.uniform(0.7, 1.8)))

    def _exterior_opening(self, room: RoomSpec, side: int, kind: str, width: float) -> None:
        cfg, rng, t, H = self.cfg, self.rng, self.t, self.H
        axis = 0 if side < 2 else 1
        other = 1 - axis
        sign = -1 if side % 2 == 0 else 1
        face = room.min_xy_m[axis] if sign < 0 else room.max_xy_m[axis]
        line = round(face + sign * t / 2, 6)
        width = round(width, 3)
        c = self._free_interval(axis, line, room.min_xy_m[other] + 0.35, room.max_xy_m[other] - 0.35, width)
        if c is None:
            return
        if kind == "door":
            self._add_opening("door", axis, line, c, width, 0.0, cfg.door_height_m, (room.room_id, -1))
            return
        high = room.kind == "bathroom"
        sill = float(rng.uniform(1.3, 1.5) if high else rng.uniform(0.75, 1.0))
        top = float(min(H - 0.25, rng.uniform(1.9, 2.3)))
        if top - sill < 0.4:
            return
        self._add_opening("window", axis, line, c, width, round(sill, 3), round(top, 3), (room.room_id, -1))

    def _add_opening(self, kind, axis, line, center, width, bottom, top, rooms) -> None:
        rng = self.rng
        o = OpeningSpec(kind, axis, float(line), float(center), float(width), float(bottom), float(top), tuple(rooms))
        self.openings.append(o)
        yaw = math.pi / 2 if axis == 0 else 0.0  # object x runs along the wall
        xy = (line, center) if axis == 0 else (center, line)
        if kind == "door":
            self._add_object(
                "door", "door_leaf", (xy[0], xy[1], 0.0), yaw, (width, 0.04, top), self._door_look(), {}, rooms[0]
            )
        elif kind == "window":
            albedo = _hsv(rng, *_PALETTES["glass"])
            self._add_object(
                "window",
                "window_pane",
                (xy[0], xy[1], bottom),
                yaw,
                (width, self.t, top - bottom),
                (albedo, self.texture("plain", 1.0, 0.0)),
                {},
                rooms[0],
            )
        elif rng.random() < self.cfg.open_door_leaf_prob:
            self._open_leaf(o)
        for rid in rooms:
            if rid >= 0:
                self._reserve_opening(o, self.rooms[rid])

    def _door_look(self) -> tuple:
        rng = self.rng
        if rng.random() < 0.5:
            return _hsv(rng, *_PALETTES["white"]), self.texture("plain", 1.0, 0.0)
        return _hsv(rng, *_PALETTES["wood"]), self.texture("stripes", rng.uniform(0.03, 0.08), 0.12, (1.0, 0.0, 0.0))

    def _open_leaf(self, o: OpeningSpec) -> None:
        """Door leaf swung open by 90 degrees into one of the two rooms, hinged at one jamb."""
        room = self.rooms[o.rooms[int(self.rng.integers(2))]]
        sgn = 1.0 if room.min_xy_m[o.axis] > o.line_m else -1.0  # room side of the wall
        hinge_side = 1.0 if self.rng.random() < 0.5 else -1.0
        w = o.width_m
        face = o.line_m + sgn * self.t / 2
        n_center = face + sgn * w / 2
        u_center = o.center_m + hinge_side * (w / 2 + 0.02 + 0.05)  # leaf plus handle clear of the opening
        yaw = (0.0 if o.axis == 0 else math.pi / 2) + (0.0 if sgn > 0 else math.pi)
        xy = (n_center, u_center) if o.axis == 0 else (u_center, n_center)
        albedo, tex = self._door_look()
        leaf = ObjectSpec(
            0, "door", "door_leaf", (xy[0], xy[1], 0.0), yaw, (w, 0.04, o.top_m), albedo, tex, {}, room.room_id
        )
        if self._fits(room, leaf):
            self._add_object("door", "door_leaf", leaf.position_m, yaw, leaf.size_m, (albedo, tex), {}, room.room_id)

    def _reserve_opening(self, o: OpeningSpec, room: RoomSpec) -> None:
        """Keep furniture out of a door's swing/walk zone and out of the wall area of a window."""
        sgn = 1.0 if room.min_xy_m[o.axis] > o.line_m - 1e-6 else -1.0
        face = room.min_xy_m[o.axis] if sgn > 0 else room.max_xy_m[o.axis]
        if o.kind == "window":
            depth, extra, z0, z1 = 0.2, 0.1, o.bottom_m, o.top_m
        else:
            depth, extra, z0, z1 = 1.0, 0.3, 0.0, self.H
        n_center = face + sgn * depth / 2
        half = (
            np.array([depth / 2, o.width_m / 2 + extra])
            if o.axis == 0
            else np.array([o.width_m / 2 + extra, depth / 2])
        )
        center = np.array([n_center, o.center_m]) if o.axis == 0 else np.array([o.center_m, n_center])
        self.blockers[room.room_id].append((_Box(center, half, 0.0, z0, z1), self.next_zone))
        if o.kind == "window":
            self.window_zones.add(self.next_zone)
        self.next_zone -= 1
        if o.kind != "window":
            anchor = (
                np.array([face + sgn * 0.5, o.center_m]) if o.axis == 0 else np.array([o.center_m, face + sgn * 0.5])
            )
            self.anchors[room.room_id].append(anchor)

    # ------------------------------------------------------------------------- objects
    def _add_object(self, class_name, shape, position, yaw, size, look, params, room_id, support_id=0) -> ObjectSpec:
        albedo, tex = look
        obj = ObjectSpec(
            instance_id=self.new_id(),
            class_name=class_name,
            shape=shape,
            position_m=_round_tuple(position, 5),
            yaw_rad=round(float(yaw), 6),
            size_m=_round_tuple(size, 4),
            albedo=tuple(albedo),
            texture=tex,
            params=params,
            room_id=room_id,
            support_id=support_id,
        )
        self.objects.append(obj)
        if room_id >= 0:
            self.blockers[room_id].append((footprint_box(obj), obj.instance_id))
        return obj

    def _fits(self, room: RoomSpec, obj: ObjectSpec, ignore=(), margin_m: float = 0.03) -> bool:
        """Inside the room, under the ceiling, clear of placed objects (by margin_m) and reserved zones."""
        box = footprint_box(obj)
        corners = box.corners()
        if np.any(corners < np.array(room.min_xy_m) - 1e-6) or np.any(corners > np.array(room.max_xy_m) + 1e-6):
            return False
        if box.z1 > self.H - 0.02:
            return False
        for other, owner in self.blockers[room.room_id]:
            if owner in ignore:
                continue
            if box.overlaps(other, margin_m if owner > 0 else 0.0):
                return False
        return True

    def _walkable(self, room: RoomSpec) -> bool:
        """Doors of the room stay connected through floor with a robot's clearance, and enough floor is free."""
        cell = 0.1
        lo = np.array(room.min_xy_m) - cell
        shape = tuple(np.ceil((np.array(room.max_xy_m) - lo + cell) / cell).astype(int) + 1)
        boxes = [b for b, owner in self.blockers[room.room_id] if owner > 0 and b.z0 < 1.8]
        grid = _rasterize(
            lo, shape, cell, [(room.room_id, np.array(room.min_xy_m), np.array(room.max_xy_m))], [], boxes
        )
        ok = grid.clearance_m >= self.cfg.robot_radius_m
        labels, _ = ndimage.label(ok, structure=np.ones((3, 3)))
        anchors = self.anchors[room.room_id]
        if anchors:
            ids = {int(labels[tuple(grid.cell_of(a))]) for a in anchors}
            if len(ids) != 1 or 0 in ids:
                return False
            component = ids.pop()
        else:
            counts = np.bincount(labels.ravel())
            counts[0] = 0
            component = int(counts.argmax())
        return (labels == component).sum() * cell * cell >= self.cfg.min_free_floor_fraction * room.area_m2

    def _try(self, room: RoomSpec, make, attempts: int = 40, walk_check: bool = True) -> Optional[ObjectSpec]:
        """Place the first fitting candidate of make() -> (class, shape, pos, yaw, size, look, params) or None."""
        for _ in range(attempts):
            cand = make()
            if cand is None:
                continue
            cls_name, shape, pos, yaw, size, look, params = cand
            obj = ObjectSpec(
                0,
                cls_name,
                shape,
                _round_tuple(pos, 5),
                round(float(yaw), 6),
                _round_tuple(size, 4),
                look[0],
                look[1],
                params,
                room.room_id,
            )
            if not self._fits(room, obj):
                continue
            placed = self._add_object(cls_name, shape, pos, yaw, size, look, params, room.room_id)
            if walk_check and not self._walkable(room):
                self._remove_last(room)
                continue
            return placed
        return None

    def _remove_last(self, room: RoomSpec) -> None:
        obj = self.objects.pop()
        self.blockers[room.room_id] = [(b, o) for b, o in self.blockers[room.room_id] if o != obj.instance_id]
        self.next_id -= 1

    def _against_wall(
        self, room: RoomSpec, width: float, depth: float, side: Optional[int] = None, gap_m: float = 0.02
    ) -> Optional[tuple]:
        """(x, y, yaw) of an object `width` x `depth` with its back `gap_m` off a wall (random side when None).

        None when the wall is shorter than the object.
        """
        rng = self.rng
        side = int(rng.integers(4)) if side is None else side
        (x0, y0), (x1, y1) = room.min_xy_m, room.max_xy_m
        nx, ny = {0: (1.0, 0.0), 1: (-1.0, 0.0), 2: (0.0, 1.0), 3: (0.0, -1.0)}[side]
        lo, hi = (y0, y1) if side < 2 else (x0, x1)
        if hi - lo < width:
            return None
        u = float(rng.uniform(lo + width / 2, hi - width / 2))
        n = {0: x0, 1: x1, 2: y0, 3: y1}[side] + (nx + ny) * (gap_m + depth / 2)
        yaw = math.atan2(ny, nx) - math.pi / 2  # object +y (front) along the inward normal
        return (n, u, yaw) if side < 2 else (u, n, yaw)

    def _look(self, palette: str, texture: str = "auto", yaw: float = 0.0) -> tuple:
        rng = self.rng
        albedo = _hsv(rng, *_PALETTES[palette])
        if texture == "auto":
            texture = {"wood": "stripes", "fabric": "noise", "bright": "plain"}.get(palette, "plain")
        if texture == "stripes":
            axis = (math.cos(yaw), math.sin(yaw), rng.uniform(-0.1, 0.1))
            return albedo, self.texture("stripes", rng.uniform(0.02, 0.08), rng.uniform(0.08, 0.2), axis)
        if texture == "noise":
            return albedo, self.texture("noise", rng.uniform(0.05, 0.2), rng.uniform(0.1, 0.25))
        if texture == "checker":
            return albedo, self.texture("checker", rng.uniform(0.05, 0.15), rng.uniform(0.2, 0.4))
        return albedo, self.texture("plain", 1.0, 0.0)

    # furniture programmes ---------------------------------------------------------
    def furnish(self, room: RoomSpec) -> None:
        programme = {
            "living": self._living,
            "bedroom": self._bedroom,
            "kitchen": self._kitchen,
            "office": self._office,
            "dining": self._dining,
            "bathroom": self._bathroom,
            "studio": self._studio,
        }[room.kind]
        self._curtains(room)
        programme(room)
        self._fill(room)
        if room.kind != "bathroom" and self.rng.random() < 0.6:
            self._floor_item(room, "object", "plant")
        if self.rng.random() < 0.5:
            self._floor_item(room, "object", "bin")
        self._small_objects(room)
        for _ in range(int(self.rng.integers(1, 4)) if room.kind != "bathroom" else 1):
            self._picture(room)

    def _fill(self, room: RoomSpec) -> None:
        """Add room-typical furniture until `furniture_fill_fraction` of the floor is covered or nothing fits."""
        rng = self.rng
        extras = {  # item -> how many more at most
            "living": {
                "cabinet": 2,
                "bookshelf": 1,
                "armchair": 2,
                "side_table": 2,
                "dresser": 1,
                "chair": 2,
                "stool": 1,
            },
            "bedroom": {"wardrobe": 1, "dresser": 1, "chair": 1, "bookshelf": 1, "side_table": 1, "cabinet": 1},
            "kitchen": {"cabinet": 2, "wardrobe": 1, "stool": 2, "chair": 1, "side_table": 1},
            "office": {"bookshelf": 2, "cabinet": 2, "desk": 1, "chair": 2, "side_table": 1, "wardrobe": 1},
            "dining": {"cabinet": 2, "chair": 2, "bookshelf": 1, "dresser": 1, "side_table": 1},
            "bathroom": {"cabinet": 1, "stool": 1},
            "studio": {
                "cabinet": 2,
                "bookshelf": 1,
                "armchair": 1,
                "chair": 1,
                "dresser": 1,
                "stool": 1,
                "side_table": 1,
            },
        }[room.kind]
        builders = {
            "cabinet": lambda: self._cabinet(room, drawers=int(rng.integers(0, 4))),
            "wardrobe": lambda: self._cabinet(room, tall=True),
            "bookshelf": lambda: self._bookshelf(room),
            "dresser": lambda: self._wall_item(
                room,
                "otherfurniture",
                "cabinet",
                (rng.uniform(0.6, 1.4), 0.45, rng.uniform(0.7, 1.1)),
                "wood",
                {"drawers": int(rng.integers(2, 5))},
            ),
            "armchair": lambda: self._wall_item(
                room, "sofa", "sofa", (rng.uniform(0.8, 1.0), rng.uniform(0.8, 0.9), 0.8), "fabric", gap=0.05
            ),
            "side_table": lambda: self._wall_item(
                room,
                "table",
                "table",
                (rng.uniform(0.4, 0.8), rng.uniform(0.4, 0.6), rng.uniform(0.5, 0.75)),
                "wood",
                {"leg_m": 0.04, "round": bool(rng.random() < 0.3)},
            ),
            "stool": lambda: self._wall_item(
                room, "otherfurniture", "stool", (0.36, 0.36, rng.uniform(0.45, 0.75)), "wood", gap=0.1
            ),
            "desk": lambda: self._desk_with_chair(room),
            "chair": lambda: self._wall_item(
                room,
                "chair",
                "chair",
                self._chair_size(),
                "wood" if rng.random() < 0.5 else "fabric",
                self._chair_params(),
                gap=0.05,
            ),
        }
        while extras and self._covered_fraction(room) < self.cfg.furniture_fill_fraction:
            item = str(rng.choice(sorted(extras)))
            extras[item] -= 1
            if builders[item]() is None or extras[item] == 0:
                del extras[item]

    def _covered_fraction(self, room: RoomSpec) -> float:
        area = sum(
            4 * b.half_xy[0] * b.half_xy[1] for b, owner in self.blockers[room.room_id] if owner > 0 and b.z0 < 0.1
        )
        return area / room.area_m2

    def _wall_item(
        self,
        room,
        class_name,
        shape,
        size,
        look_palette,
        params=None,
        side=None,
        gap=0.02,
        attempts=40,
        walk_check=True,
    ):
        w, d, h = size

        def make():
            spot = self._against_wall(room, w, d, side, gap)
            if spot is None:
                return None
            x, y, yaw = spot
            return class_name, shape, (x, y, 0.0), yaw, size, self._look(look_palette, yaw=yaw), dict(params or {})

        return self._try(room, make, attempts, walk_check)

    def _floor_item(self, room, class_name, shape):
        """A round item (plant, bin, coat rack) standing near a wall."""
        rng = self.rng
        (w_lo, w_hi), (h_lo, h_hi), palette = {
            "plant": ((0.3, 0.5), (0.6, 1.3), "fabric"),
            "bin": ((0.22, 0.32), (0.3, 0.45), "metal"),
            "coat_rack": ((0.4, 0.4), (1.6, 1.8), "wood"),
        }[shape]
        w = rng.uniform(w_lo, w_hi)
        size = (w, w, rng.uniform(h_lo, h_hi))

        def make():
            spot = self._against_wall(room, size[0], size[1], None, 0.05)
            if spot is None:
                return None
            x, y, yaw = spot
            return class_name, shape, (x, y, 0.0), yaw, size, self._look(palette, "plain"), {}

        return self._try(room, make, 30)

    def _curtains(self, room: RoomSpec) -> None:
        if room.kind == "bathroom":
            return
        for o in self.openings:
            if o.kind != "window" or room.room_id not in o.rooms or self.rng.random() >= self.cfg.curtain_prob:
                continue
            sgn = 1.0 if room.min_xy_m[o.axis] > o.line_m else -1.0
            face = room.min_xy_m[o.axis] if sgn > 0 else room.max_xy_m[o.axis]
            look = self._look("fabric", "noise" if self.rng.random() < 0.5 else "plain")
            width = round(float(self.rng.uniform(0.35, 0.6)), 3)
            depth, gap = 0.06, 0.05
            h = min(self.H - 0.08, o.top_m + 0.25) - 0.02
            folds = int(self.rng.integers(3, 6))
            for end in (-1.0, 1.0):
                u = o.center_m + end * (o.width_m / 2 + width / 2 - 0.12)
                n = face + sgn * (gap + depth / 2)
                yaw = math.atan2(*((0.0, sgn) if o.axis == 0 else (sgn, 0.0))) - math.pi / 2
                xy = (n, u) if o.axis == 0 else (u, n)
                obj = ObjectSpec(
                    0,
                    "curtain",
                    "curtain",
                    (xy[0], xy[1], 0.02),
                    yaw,
                    (width, depth, h),
                    *look,
                    {"folds": folds},
                    room.room_id,
                )
                if self._fits(room, obj, ignore=self.window_zones):
                    self._add_object(
                        "curtain", "curtain", obj.position_m, yaw, obj.size_m, look, {"folds": folds}, room.room_id
                    )
                    if not self._walkable(room):
                        self._remove_last(room)

    def _cabinet(self, room, tall: bool = False, drawers: int = 0):
        rng = self.rng
        h = rng.uniform(1.6, 2.1) if tall else rng.uniform(0.7, 1.0)
        size = (rng.uniform(0.5, 1.4), rng.uniform(0.4, 0.6), h)
        return self._wall_item(
            room, "cabinet", "cabinet", size, "wood" if rng.random() < 0.6 else "white", {"drawers": drawers}
        )

    def _bookshelf(self, room):
        rng = self.rng
        h = rng.uniform(1.2, 2.1)
        size = (rng.uniform(0.6, 1.2), rng.uniform(0.28, 0.4), h)
        return self._wall_item(
            room, "bookshelf", "bookshelf", size, "wood", {"shelves": int(np.clip(round(h / 0.38), 3, 6))}
        )

    def _desk_with_chair(self, room):
        rng = self.rng
        desk = self._wall_item(
            room,
            "desk",
            "desk",
            (rng.uniform(1.0, 1.6), rng.uniform(0.55, 0.75), rng.uniform(0.72, 0.76)),
            "wood" if rng.random() < 0.6 else "white",
        )
        if desk is not None:
            self._chair_facing(room, desk, 0.0)
        return desk

    def _chair_size(self) -> tuple:
        rng = self.rng
        w = rng.uniform(0.42, 0.52)
        return (w, w * rng.uniform(0.95, 1.1), rng.uniform(0.8, 1.0))

    def _chair_params(self) -> dict:
        rng = self.rng
        return {
            "seat_height_m": round(float(rng.uniform(0.43, 0.48)), 3),
            "leg_m": round(float(rng.uniform(0.025, 0.04)), 3),
            "round_legs": bool(rng.random() < 0.4),
        }

    def _chair_facing(self, room, target: ObjectSpec, lateral_m: float, look=None, params=None, pull_m: float = 0.08):
        """Chair in front of `target`'s front (its +y face), facing it."""
        size = self._chair_size()
        yaw_t = target.yaw_rad
        fwd = np.array([-math.sin(yaw_t), math.cos(yaw_t)])  # target's +y in world
        right = np.array([math.cos(yaw_t), math.sin(yaw_t)])
        dist = target.size_m[1] / 2 + pull_m + size[1] / 2
        look = look or self._look("wood" if self.rng.random() < 0.5 else "fabric")
        params = params or self._chair_params()

        def make():
            jitter = self.rng.uniform(-0.25, 0.25)
            xy = (
                np.array(target.position_m[:2])
                + fwd * (dist + self.rng.uniform(0.0, 0.1))
                + right * (lateral_m + self.rng.uniform(-0.05, 0.05))
            )
            return "chair", "chair", (xy[0], xy[1], 0.0), yaw_t + math.pi + jitter, size, look, params

        return self._try(room, make, 8)

    def _table_with_chairs(self, room, max_chairs: int = 6):
        """Free-standing table with chairs around it, facing it."""
        rng = self.rng
        is_round = rng.random() < 0.3
        if is_round:
            r = rng.uniform(0.45, 0.6)
            size = (2 * r, 2 * r, rng.uniform(0.72, 0.76))
        else:
            size = (rng.uniform(1.0, 1.8), rng.uniform(0.75, 1.0), rng.uniform(0.72, 0.76))
        chair_space = 0.75
        (x0, y0), (x1, y1) = room.min_xy_m, room.max_xy_m
        look = self._look("wood" if rng.random() < 0.7 else "white")
        params = {"round": is_round, "leg_m": round(float(rng.uniform(0.04, 0.07)), 3)}

        def make():
            yaw = 0.0 if rng.random() < 0.5 else math.pi / 2
            ext = max(size[:2]) / 2 + chair_space
            if x1 - x0 < 2 * ext or y1 - y0 < 2 * ext:
                return None
            pos = (rng.uniform(x0 + ext, x1 - ext), rng.uniform(y0 + ext, y1 - ext), 0.0)
            return "table", "table", pos, yaw, size, look, params

        table = self._try(room, make, 30)
        if table is None:
            return None
        chair_look = self._look("wood" if rng.random() < 0.5 else "fabric")
        chair_params = self._chair_params()
        count = int(rng.integers(2, max_chairs + 1))
        yaw_t, w, d = table.yaw_rad, table.size_m[0], table.size_m[1]
        if is_round:
            slots = [(a, 0.0) for a in np.linspace(0.0, 2 * math.pi, count, endpoint=False) + rng.uniform(0, math.pi)]
        else:
            per_side = max(1, int(w // 0.6))
            slots = [(s, (k + 0.5) * w / per_side - w / 2) for s in (0.0, math.pi) for k in range(per_side)]
            if d >= 0.8:
                slots += [(math.pi / 2, 0.0), (-math.pi / 2, 0.0)]
            rng.shuffle(slots)
        for angle, lateral in slots[:count]:
            # the table edge of this slot as a virtual object whose front faces the chair
            half_d = w / 2 if is_round or abs(math.sin(angle)) >= 0.5 else d / 2
            virtual = ObjectSpec(0, "table", "table", table.position_m, yaw_t + angle, (0.0, 2 * half_d, 0.0), *look)
            self._chair_facing(room, virtual, lateral, chair_look, chair_params, pull_m=0.12)
        return table

    def _sofa_group(self, room):
        rng = self.rng
        size = (rng.uniform(1.6, 2.4), rng.uniform(0.8, 0.95), rng.uniform(0.75, 0.9))
        sofa = self._wall_item(room, "sofa", "sofa", size, "fabric", gap=0.05)
        if sofa is None:
            return None
        fwd = np.array([-math.sin(sofa.yaw_rad), math.cos(sofa.yaw_rad)])
        tsize = (rng.uniform(0.8, 1.2), rng.uniform(0.5, 0.7), rng.uniform(0.4, 0.48))

        def make():
            xy = np.array(sofa.position_m[:2]) + fwd * (sofa.size_m[1] / 2 + rng.uniform(0.35, 0.5) + tsize[1] / 2)
            return "table", "table", (xy[0], xy[1], 0.0), sofa.yaw_rad, tsize, self._look("wood"), {"leg_m": 0.05}

        self._try(room, make, 4)
        # tv stand on the opposite wall when there is one
        side = {0: 1, 1: 0, 2: 3, 3: 2}[self._side_of(sofa)]
        self._wall_item(
            room,
            "otherfurniture",
            "cabinet",
            (rng.uniform(1.0, 1.6), 0.45, rng.uniform(0.45, 0.6)),
            "wood",
            {"drawers": 1, "tv": True},
            side=side,
            attempts=15,
        )
        return sofa

    @staticmethod
    def _side_of(obj: ObjectSpec) -> int:
        """Wall side an against-wall object backs onto (from its yaw)."""
        fwd = (-math.sin(obj.yaw_rad), math.cos(obj.yaw_rad))
        if abs(fwd[0]) > abs(fwd[1]):
            return 0 if fwd[0] > 0 else 1
        return 2 if fwd[1] > 0 else 3

    def _living(self, room):
        rng = self.rng
        self._sofa_group(room)
        if rng.random() < 0.6:
            self._wall_item(room, "sofa", "sofa", (rng.uniform(0.8, 1.0), rng.uniform(0.8, 0.9), 0.8), "fabric")
        if rng.random() < 0.7:
            self._bookshelf(room)
        if rng.random() < 0.5:
            self._cabinet(room)

    def _bedroom(self, room):
        rng = self.rng
        w = rng.choice([0.9, 1.4, 1.6, 1.8])
        bed = self._wall_item(room, "bed", "bed", (w, rng.uniform(1.95, 2.1), rng.uniform(0.8, 1.1)), "fabric")
        if bed is not None:
            right = np.array([math.cos(bed.yaw_rad), math.sin(bed.yaw_rad)])
            look = self._look("wood")
            for sgn in (-1.0, 1.0):
                if rng.random() < 0.8:
                    ns = (rng.uniform(0.4, 0.5), 0.4, rng.uniform(0.45, 0.6))
                    back = np.array(bed.position_m[:2]) - np.array([-math.sin(bed.yaw_rad), math.cos(bed.yaw_rad)]) * (
                        bed.size_m[1] / 2 - ns[1] / 2
                    )
                    xy = back + right * sgn * (bed.size_m[0] / 2 + 0.05 + ns[0] / 2)
                    self._try(
                        room,
                        lambda xy=xy, ns=ns: (
                            "otherfurniture",
                            "cabinet",
                            (xy[0], xy[1], 0.0),
                            bed.yaw_rad,
                            ns,
                            look,
                            {"drawers": 2},
                        ),
                        1,
                    )
        if rng.random() < 0.7:
            self._wall_item(
                room,
                "otherfurniture",
                "cabinet",
                (rng.uniform(0.8, 1.4), 0.5, rng.uniform(0.8, 1.1)),
                "wood",
                {"drawers": 3},
            )
        if rng.random() < 0.5:
            self._cabinet(room, tall=True)
        if rng.random() < 0.5:
            self._desk_with_chair(room)
        if rng.random() < 0.3:
            self._bookshelf(room)

    def _kitchen(self, room):
        rng = self.rng
        self._counter_with_sink(room)
        self._wall_item(
            room,
            "refrigerator",
            "refrigerator",
            (rng.uniform(0.6, 0.8), rng.uniform(0.65, 0.75), rng.uniform(1.7, 1.95)),
            "white" if rng.random() < 0.7 else "metal",
        )
        if rng.random() < 0.5:
            self._counter_with_sink(room, sink=False)
        if rng.random() < 0.4:
            self._cabinet(room, tall=True)
        self._table_with_chairs(room, max_chairs=4)

    def _counter_with_sink(self, room, sink: bool = True):
        rng = self.rng
        for _ in range(3):
            length = rng.uniform(
                1.4, min(3.2, max(room.max_xy_m[0] - room.min_xy_m[0], room.max_xy_m[1] - room.min_xy_m[1]) - 0.4)
            )
            counter = self._wall_item(
                room,
                "counter",
                "counter",
                (length, rng.uniform(0.58, 0.65), rng.uniform(0.88, 0.92)),
                "white" if rng.random() < 0.5 else "wood",
                attempts=15,
            )
            if counter is not None:
                break
        else:
            return None
        if sink:
            self._sink_on(counter)
        return counter

    def _sink_on(self, counter: ObjectSpec) -> None:
        rng = self.rng
        size = (rng.uniform(0.4, 0.55), min(0.45, counter.size_m[1] - 0.1), rng.uniform(0.15, 0.2))
        right = np.array([math.cos(counter.yaw_rad), math.sin(counter.yaw_rad)])
        fwd = np.array([-math.sin(counter.yaw_rad), math.cos(counter.yaw_rad)])
        lateral = rng.uniform(-1, 1) * max(0.0, counter.size_m[0] / 2 - size[0] / 2 - 0.1)
        xy = np.array(counter.position_m[:2]) + right * lateral - fwd * (counter.size_m[1] / 2 - 0.03 - size[1] / 2)
        look = self._look("white" if rng.random() < 0.7 else "metal", "plain")
        self._add_object(
            "sink",
            "sink",
            (xy[0], xy[1], counter.position_m[2] + counter.size_m[2]),
            counter.yaw_rad,
            size,
            look,
            {},
            counter.room_id,
            counter.instance_id,
        )

    def _office(self, room):
        rng = self.rng
        for _ in range(int(rng.integers(1, 3))):
            self._desk_with_chair(room)
        for _ in range(int(rng.integers(1, 3))):
            self._bookshelf(room)
        if rng.random() < 0.6:
            self._cabinet(room, drawers=int(rng.integers(0, 4)))
        if rng.random() < 0.4:
            self._floor_item(room, "otherfurniture", "coat_rack")
        if rng.random() < 0.3:
            self._table_with_chairs(room, max_chairs=4)

    def _dining(self, room):
        rng = self.rng
        self._table_with_chairs(room, max_chairs=6)
        self._cabinet(room)
        if rng.random() < 0.5:
            self._bookshelf(room)
        if rng.random() < 0.4:
            self._cabinet(room, tall=True)

    def _bathroom(self, room):
        rng = self.rng
        self._wall_item(
            room,
            "toilet",
            "toilet",
            (rng.uniform(0.38, 0.45), rng.uniform(0.65, 0.72), rng.uniform(0.75, 0.82)),
            "white",
            gap=0.01,
        )
        self._wall_item(
            room,
            "sink",
            "sink",
            (rng.uniform(0.5, 0.65), rng.uniform(0.45, 0.55), rng.uniform(0.82, 0.9)),
            "white",
            {"pedestal": True},
        )
        if rng.random() < 0.6:
            self._wall_item(room, "cabinet", "cabinet", (rng.uniform(0.4, 0.8), 0.35, rng.uniform(0.7, 1.8)), "white")

    def _studio(self, room):
        rng = self.rng
        self._wall_item(room, "bed", "bed", (rng.choice([0.9, 1.4]), 2.0, rng.uniform(0.8, 1.0)), "fabric")
        self._sofa_group(room)
        self._counter_with_sink(room)
        if rng.random() < 0.7:
            self._wall_item(room, "refrigerator", "refrigerator", (0.6, 0.65, rng.uniform(1.7, 1.9)), "white")
        self._table_with_chairs(room, max_chairs=4)
        self._desk_with_chair(room)
        self._bookshelf(room)

    # wall-mounted and small objects ---------------------------------------------------
    def _picture(self, room):
        rng = self.rng
        size = (rng.uniform(0.3, 1.2), 0.025, rng.uniform(0.3, 0.9))
        kind = rng.choice(["noise", "stripes", "checker"])
        albedo = _hsv(rng, *_PALETTES["bright"])
        tex = self.texture(
            str(kind), rng.uniform(0.04, 0.2), rng.uniform(0.4, 0.8), (rng.normal(), rng.normal(), rng.normal())
        )
        params = {"frame_m": round(float(rng.uniform(0.02, 0.05)), 3)}

        def make():
            spot = self._against_wall(room, size[0], size[1], None, 0.0)
            if spot is None:
                return None
            x, y, yaw = spot
            z = rng.uniform(1.25, 1.75) - size[2] / 2
            return "picture", "picture", (x, y, z), yaw, size, (albedo, tex), params

        return self._try(room, make, 30, walk_check=False)

    def _small_objects(self, room: RoomSpec) -> None:
        rng = self.rng
        menus = {
            "desk": ["monitor", "laptop", "lamp", "books", "mug", "box"],
            "table": ["bowl", "vase", "mug", "bottle", "books", "box", "laptop"],
            "counter": ["bottle", "bowl", "box", "mug", "vase"],
            "bookshelf": ["books", "books", "books", "box", "vase"],
            "otherfurniture": ["lamp", "books", "box", "vase", "mug"],
            "cabinet": ["vase", "box", "books", "plant"],
            "refrigerator": ["box", "bottle"],
            "toilet": ["bottle", "box"],
        }
        supports = [
            o for o in self.objects if o.room_id == room.room_id and o.class_name in menus and o.support_id == 0
        ]
        for sup in supports:
            if sup.params.get("tv"):
                self._tv_on(sup)
            T = sup.T_world_obj
            for surf in make_shape(sup.shape, sup.size_m, sup.params).supports:
                if rng.random() > self.cfg.small_object_prob:
                    continue
                area = surf.size_xy_m[0] * surf.size_xy_m[1]
                count = int(min(self.cfg.max_small_objects_per_surface, 1 + rng.poisson(area / 0.25)))
                for _ in range(count):
                    shape = str(rng.choice(menus[sup.class_name]))
                    self._small_object_on(room, sup, T, surf, shape)

    def _small_size(self, shape: str) -> tuple:
        u = self.rng.uniform
        return {
            "mug": (u(0.1, 0.13), u(0.075, 0.09), u(0.09, 0.12)),
            "bottle": (u(0.06, 0.09),) * 2 + (u(0.2, 0.32),),
            "bowl": (u(0.14, 0.25),) * 2 + (u(0.05, 0.09),),
            "vase": (u(0.08, 0.16),) * 2 + (u(0.15, 0.35),),
            "box": (u(0.1, 0.35), u(0.1, 0.25), u(0.05, 0.25)),
            "books": (u(0.12, 0.4), u(0.16, 0.24), u(0.18, 0.28)),
            "lamp": (u(0.2, 0.3),) * 2 + (u(0.35, 0.55),),
            "laptop": (u(0.3, 0.36), u(0.21, 0.25), u(0.2, 0.24)),
            "monitor": (u(0.45, 0.65), u(0.16, 0.22), u(0.38, 0.5)),
            "plant": (u(0.15, 0.25),) * 2 + (u(0.2, 0.4),),
        }[shape]

    def _small_object_on(self, room, sup: ObjectSpec, T_world_sup, surf, shape: str) -> None:
        rng = self.rng
        size = self._small_size(shape)
        if size[2] > surf.clearance_m - 0.03:
            size = (size[0], size[1], surf.clearance_m - 0.03)
            if size[2] < 0.04:
                return
        hx, hy = surf.size_xy_m[0] / 2 - 0.02, surf.size_xy_m[1] / 2 - 0.02
        local_yaw = float(rng.choice([0.0, math.pi / 2, math.pi, -math.pi / 2])) + rng.uniform(-0.3, 0.3)
        if shape in ("monitor", "laptop", "books"):
            local_yaw = rng.uniform(-0.2, 0.2)  # face the front of the support
        r = 0.5 * math.hypot(size[0], size[1])
        if hx < r or hy < r:
            return
        look = (
            self._look("bright", "stripes" if shape == "books" else "plain")
            if shape != "plant"
            else self._look("fabric")
        )
        params = {"count": int(rng.integers(3, 8))} if shape == "books" else {}
        for _ in range(10):
            lx = surf.center_xy_m[0] + rng.uniform(-hx + r, hx - r)
            ly = surf.center_xy_m[1] + rng.uniform(-hy + r, hy - r)
            p = T_world_sup @ np.array([lx, ly, surf.height_m, 1.0])
            obj = ObjectSpec(
                0,
                "object",
                shape,
                _round_tuple(p[:3], 5),
                round(sup.yaw_rad + local_yaw, 6),
                _round_tuple(size, 4),
                look[0],
                look[1],
                params,
                room.room_id,
                sup.instance_id,
            )
            box = footprint_box(obj)
            if any(box.overlaps(b) for b, owner in self.blockers[room.room_id] if owner != sup.instance_id):
                continue
            self._add_object(
                "object", shape, obj.position_m, obj.yaw_rad, obj.size_m, look, params, room.room_id, sup.instance_id
            )
            return

    def _tv_on(self, stand: ObjectSpec) -> None:
        rng = self.rng
        size = (min(stand.size_m[0] - 0.1, rng.uniform(0.8, 1.3)), 0.2, rng.uniform(0.5, 0.75))
        fwd = np.array([-math.sin(stand.yaw_rad), math.cos(stand.yaw_rad)])
        xy = np.array(stand.position_m[:2]) - fwd * 0.05
        obj = ObjectSpec(
            0,
            "object",
            "monitor",
            (xy[0], xy[1], stand.size_m[2]),
            stand.yaw_rad,
            size,
            (0.05, 0.05, 0.05),
            self.texture("plain", 1.0, 0.0),
            {},
            stand.room_id,
            stand.instance_id,
        )
        box = footprint_box(obj)
        if any(box.overlaps(b) for b, owner in self.blockers[stand.room_id] if owner != stand.instance_id):
            return
        self._add_object(
            "object",
            "monitor",
            obj.position_m,
            stand.yaw_rad,
            size,
            ((0.06, 0.06, 0.07), obj.texture),
            {},
            stand.room_id,
            stand.instance_id,
        )

    def build(self) -> SceneSpec:
        self.layout()
        self.openings_between_rooms()
        self.openings_exterior()
        for room in self.rooms:
            self.furnish(room)
        return SceneSpec(
            seed=int(self.seed),
            wall_height_m=float(self.H),
            wall_thickness_m=float(self.t),
            slab_thickness_m=float(self.cfg.slab_thickness_m),
            rooms=self.rooms,
            openings=self.openings,
            objects=self.objects,
        )


def generate_scene(seed: int, config: SceneConfig = SceneConfig()) -> SceneSpec:
    """A procedural indoor scene, identical for identical (seed, config)."""
    if config.min_rooms < 1 or config.max_rooms < config.min_rooms:
        raise ValueError(f"SceneConfig: need 1 <= min_rooms <= max_rooms, got {config.min_rooms}, {config.max_rooms}")
    return _Generator(seed, config).build()


def scene_statistics(spec: SceneSpec) -> dict:
    """Counts of a scene: rooms, objects (role 'object'), instances, classes present, floor area."""
    labels = default_label_space()
    classes = {"wall", "floor", "ceiling"} | {o.class_name for o in spec.objects}
    per_class: dict = {}
    for o in spec.objects:
        per_class[o.class_name] = per_class.get(o.class_name, 0) + 1
    objects = [o for o in spec.objects if labels.roles[labels.id_of(o.class_name)] == "object"]
    return {
        "rooms": len(spec.rooms),
        "room_kinds": [r.kind for r in spec.rooms],
        "objects": len(objects),
        "instances": 3 * len(spec.rooms) + len(spec.objects),
        "classes": sorted(classes, key=labels.id_of),
        "num_classes": len(classes),
        "objects_per_class": dict(sorted(per_class.items(), key=lambda kv: labels.id_of(kv[0]))),
        "openings": {k: sum(o.kind == k for o in spec.openings) for k in ("doorway", "door", "window")},
        "floor_area_m2": round(sum(r.area_m2 for r in spec.rooms), 3),
        "wall_height_m": spec.wall_height_m,
    }
