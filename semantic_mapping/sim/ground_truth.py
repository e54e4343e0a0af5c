"""Ground truth in 3D: the labelled scene mesh, its surface voxels and its complete occupancy.

Voxel index convention (as Open3D's VoxelBlockGrid): voxel centres sit at integer multiples
of the voxel size, so a point p lies in voxel floor(p / voxel_size_m + 0.5).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from semantic_mapping.semantics.label_space import LabelSpace, default_label_space
from semantic_mapping.atomic_files import atomic_write_bytes
from semantic_mapping.sim.primitives import TextureSpec, points_inside, solid_aabb, solid_mesh

_HIDDEN_EPS_M = 1e-3  # a surface sample is hidden when this far along its normal lies inside a solid


@dataclass(frozen=True)
class InstanceInfo:
    """One instance of the scene: its class and appearance."""

    class_id: int
    class_name: str
    albedo: tuple = (0.7, 0.7, 0.7)  # [3] linear RGB in [0, 1]
    texture: TextureSpec = TextureSpec()
    room_id: int = -1  # room the instance belongs to, -1 for none


@dataclass
class SceneMesh:
    """Triangle soup of a scene with per-face class, instance and colour.

    `solid_*` describe the watertight primitives the mesh was built from (empty for a mesh made
    by hand); they give the complete occupancy and hide surfaces that touch other solids.
    Faces facing out of `interior_bounds_m` (outer wall faces, floor undersides, ceiling tops)
    are never seen from inside and are left out of the surface ground truth.
    """

    vertices: np.ndarray  # [V, 3] float32 metres, world frame
    triangles: np.ndarray  # [T, 3] int32, counter-clockwise seen from outside
    face_class: np.ndarray  # [T] int32 class ids
    face_instance: np.ndarray  # [T] int32 instance ids, >= 1 for scene instances
    instances: dict = field(default_factory=dict)  # instance id -> InstanceInfo
    face_albedo: Optional[np.ndarray] = None  # [T, 3] float32 linear RGB in [0, 1]; grey when None
    face_solid: Optional[np.ndarray] = None  # [T] int32 index into solid_*, -1 for none
    solid_kind: Optional[np.ndarray] = None  # [S] int8 primitives.BOX or CYLINDER
    solid_T_world: Optional[np.ndarray] = None  # [S, 4, 4] float64 T_world_solid
    solid_size_m: Optional[np.ndarray] = None  # [S, 3] float64 extents (cylinder: d, d, h)
    interior_bounds_m: Optional[np.ndarray] = None  # [2, 3] float64 (min, max) of the inside, world frame

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, dtype=np.float32)
        self.triangles = np.asarray(self.triangles, dtype=np.int32)
        self.face_class = np.asarray(self.face_class, dtype=np.int32)
        self.face_instance = np.asarray(self.face_instance, dtype=np.int32)
        T = len(self.triangles)
        if self.face_albedo is None:
            self.face_albedo = np.full((T, 3), 0.7, np.float32)
        if self.face_solid is None:
            self.face_solid = np.full(T, -1, np.int32)
        if self.solid_kind is None:
            self.solid_kind = np.zeros(0, np.int8)
            self.solid_T_world = np.zeros((0, 4, 4))
            self.solid_size_m = np.zeros((0, 3))
        self.face_albedo = np.asarray(self.face_albedo, dtype=np.float32)
        self.face_solid = np.asarray(self.face_solid, dtype=np.int32)
        if not (len(self.face_class) == len(self.face_instance) == len(self.face_albedo) == len(self.face_solid) == T):
            raise ValueError("SceneMesh: per-face arrays must have one entry per triangle")

    @property
    def num_solids(self) -> int:
        return len(self.solid_kind)

    @classmethod
    def from_solids(
        cls,
        solids: list,
        instances: dict,
        interior_bounds_m: Optional[np.ndarray] = None,
    ) -> "SceneMesh":
        """Mesh of placed solids (`primitives.Solid`); each instance id must be in `instances`."""
        verts, tris, face_inst, face_alb, face_solid = [], [], [], [], []
        offset = 0
        for s_idx, s in enumerate(solids):
            v, t = solid_mesh(s.kind, s.size_m)
            verts.append(v @ s.T_world_solid[:3, :3].T + s.T_world_solid[:3, 3])
            tris.append(t + offset)
            offset += len(v)
            face_inst.append(np.full(len(t), s.instance_id, np.int32))
            face_alb.append(np.tile(np.asarray(s.albedo, np.float32), (len(t), 1)))
            face_solid.append(np.full(len(t), s_idx, np.int32))
        face_instance = np.concatenate(face_inst)
        class_of = {i: info.class_id for i, info in instances.items()}
        face_class = np.array([class_of[i] for i in face_instance.tolist()], np.int32)
        return cls(
            vertices=np.concatenate(verts),
            triangles=np.concatenate(tris),
            face_class=face_class,
            face_instance=face_instance,
            instances=dict(instances),
            face_albedo=np.concatenate(face_alb),
            face_solid=np.concatenate(face_solid),
            solid_kind=np.array([s.kind for s in solids], np.int8),
            solid_T_world=np.stack([s.T_world_solid for s in solids]),
            solid_size_m=np.array([s.size_m for s in solids], np.float64),
            interior_bounds_m=None if interior_bounds_m is None else np.asarray(interior_bounds_m, np.float64),
        )

    def face_normals(self) -> np.ndarray:
        """[T, 3] float64 unit normals from the winding (zero for degenerate faces)."""
        tri = self.vertices.astype(np.float64)[self.triangles]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        norm = np.linalg.norm(n, axis=1, keepdims=True)
        return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)

    def bounds_m(self) -> np.ndarray:
        """[2, 3] (min, max) of the vertices, world frame."""
        return np.stack([self.vertices.min(0), self.vertices.max(0)]).astype(np.float64)

    def instance_class_table(self) -> np.ndarray:
        """[max instance id + 1] int32 class id of every instance id (-1 where unused)."""
        ids = list(self.instances) + [int(self.face_instance.max(initial=0))]
        table = np.full(max(ids) + 1, -1, np.int32)
        for i, info in self.instances.items():
            table[i] = info.class_id
        return table

    # ------------------------------------------------------------------------- files
    def save(self, path: os.PathLike, label_space: Optional[LabelSpace] = None) -> None:
        """Write the mesh atomically: `.npz` keeps everything, `.ply` keeps faces with class/instance/colour."""
        path = Path(path)
        if path.suffix == ".npz":
            buf = io.BytesIO()
            np.savez_compressed(buf, **self._arrays())
            data = buf.getvalue()
        elif path.suffix == ".ply":
            data = self._ply_bytes(label_space or default_label_space())
        else:
            raise ValueError(f"{path}: scene meshes are saved as .npz or .ply")
        atomic_write_bytes(path, data)

    @classmethod
    def load(cls, path: os.PathLike) -> "SceneMesh":
        """Read a mesh written by `save(... .npz)`."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"{path}: only .npz scene meshes can be loaded (PLY is for viewing)")
        with np.load(path, allow_pickle=False) as z:
            table = json.loads(str(z["instances_json"]))
            instances = {
                int(k): InstanceInfo(
                    class_id=int(v["class_id"]),
                    class_name=str(v["class_name"]),
                    albedo=tuple(float(a) for a in v["albedo"]),
                    texture=TextureSpec.from_dict(v["texture"]),
                    room_id=int(v["room_id"]),
                )
                for k, v in table.items()
            }
            bounds = z["interior_bounds_m"]
            return cls(
                vertices=z["vertices"],
                triangles=z["triangles"],
                face_class=z["face_class"],
                face_instance=z["face_instance"],
                instances=instances,
                face_albedo=z["face_albedo"],
                face_solid=z["face_solid"],
                solid_kind=z["solid_kind"],
                solid_T_world=z["solid_T_world"],
                solid_size_m=z["solid_size_m"],
                interior_bounds_m=bounds if bounds.size else None,
            )

    def _arrays(self) -> dict:
        table = {
            str(i): {
                "class_id": info.class_id,
                "class_name": info.class_name,
                "albedo": list(info.albedo),
                "texture": info.texture.to_dict(),
                "room_id": info.room_id,
            }
            for i, info in sorted(self.instances.items())
        }
        return {
            "vertices": self.vertices,
            "triangles": self.triangles,
            "face_class": self.face_class,
            "face_instance": self.face_instance,
            "face_albedo": self.face_albedo,
            "face_solid": self.face_solid,
            "solid_kind": self.solid_kind,
            "solid_T_world": self.solid_T_world,
            "solid_size_m": self.solid_size_m,
            "interior_bounds_m": np.zeros(0) if self.interior_bounds_m is None else self.interior_bounds_m,
            "instances_json": np.array(json.dumps(table)),
        }

    def _ply_bytes(self, label_space: LabelSpace) -> bytes:
        colors = label_space.colorize(self.face_class)  # [T, 3] uint8
        header = ["ply", "format binary_little_endian 1.0", "comment semantic_mapping scene mesh"]
        for i, info in sorted(self.instances.items()):
            header.append(f"comment instance {i} class {info.class_id} {info.class_name}")
        header += [
            f"element vertex {len(self.vertices)}",
            "property float x",
            "property float y",
            "property float z",
            f"element face {len(self.triangles)}",
            "property list uchar int vertex_indices",
            "property int class",
            "property int instance",
            "property uchar red",
            "property uchar green",
            "property uchar blue",
            "end_header",
        ]
        face_dtype = np.dtype(
            [("n", "u1"), ("v", "<i4", (3,)), ("class", "<i4"), ("instance", "<i4"), ("rgb", "u1", (3,))]
        )
        faces = np.empty(len(self.triangles), face_dtype)
        faces["n"] = 3
        faces["v"] = self.triangles
        faces["class"] = self.face_class
        faces["instance"] = self.face_instance
        faces["rgb"] = colors
        return ("\n".join(header) + "\n").encode("ascii") + self.vertices.astype("<f4").tobytes() + faces.tobytes()


def save_scene_mesh(mesh: SceneMesh, path: os.PathLike, label_space: Optional[LabelSpace] = None) -> None:
    """Write `mesh` to `.npz` (complete, loadable) or `.ply` (per-face class, instance, class colour)."""
    mesh.save(path, label_space)


# ----------------------------------------------------------------------------- voxels
@dataclass
class GroundTruthVoxels:
    """Surface voxels of the scene with the majority class and instance of the surface inside each."""

    indices: np.ndarray  # [N, 3] int32 voxel indices, centre = index * voxel_size_m
    classes: np.ndarray  # [N] int32 class ids
    instances: np.ndarray  # [N] int32 instance ids
    voxel_size_m: float

    def positions_m(self) -> np.ndarray:
        """[N, 3] float32 voxel centres, world frame."""
        return (self.indices * self.voxel_size_m).astype(np.float32)


def voxel_indices(points_m: np.ndarray, voxel_size_m: float) -> np.ndarray:
    """[N, 3] int64 index of the voxel holding each point [N, 3] (centres at multiples of the size)."""
    return np.floor(points_m / voxel_size_m + 0.5).astype(np.int64)


def _split_long_triangles(tri: np.ndarray, owner: np.ndarray, max_edge_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Bisect the longest edge of triangles [T, 3, 3] until no edge exceeds `max_edge_m`.

    The winding is kept. Returns (triangles [T', 3, 3], index of the source face [T']).
    """
    done_tri, done_owner = [], []
    while len(tri):
        edge = np.linalg.norm(tri[:, [1, 2, 0]] - tri, axis=2)  # [T, 3] edge k runs from vertex k to k+1
        longest = edge.argmax(1)
        long_mask = edge[np.arange(len(tri)), longest] > max_edge_m
        done_tri.append(tri[~long_mask])
        done_owner.append(owner[~long_mask])
        tri, owner, k = tri[long_mask], owner[long_mask], longest[long_mask]
        if not len(tri):
            break
        idx = np.arange(len(tri))
        a, b, c = tri[idx, k], tri[idx, (k + 1) % 3], tri[idx, (k + 2) % 3]
        mid = (a + b) / 2.0
        tri = np.concatenate([np.stack([a, mid, c], 1), np.stack([mid, b, c], 1)])
        owner = np.concatenate([owner, owner])
    return np.concatenate(done_tri), np.concatenate(done_owner)


_LATTICES: dict = {}


def _lattice(n1: int, n2: int) -> np.ndarray:
    """[M, 2] barycentric steps (i/n1, j/n2) with i/n1 + j/n2 <= 1."""
    key = (n1, n2)
    if key not in _LATTICES:
        i, j = np.meshgrid(np.arange(n1 + 1), np.arange(n2 + 1), indexing="ij")
        a, b = (i / n1).ravel(), (j / n2).ravel()
        keep = a + b <= 1.0 + 1e-9
        _LATTICES[key] = np.stack([a[keep], b[keep]], 1)
    return _LATTICES[key]


def _sample_triangles(tri: np.ndarray, spacing_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice samples at most `spacing_m` apart along two edges of each triangle [T, 3, 3].

    Returns (points [N, 3] float64, triangle index [N] int64).
    """
    edge_opposite = np.linalg.norm(tri[:, [2, 0, 1]] - tri[:, [1, 2, 0]], axis=2)  # [T, 3] edge facing vertex k
    k = edge_opposite.argmax(1)  # vertex with the widest angle
    idx = np.arange(len(tri))
    p0 = tri[idx, k]
    e1 = tri[idx, (k + 1) % 3] - p0
    e2 = tri[idx, (k + 2) % 3] - p0
    n1 = np.maximum(1, np.ceil(np.linalg.norm(e1, axis=1) / spacing_m)).astype(np.int64)
    n2 = np.maximum(1, np.ceil(np.linalg.norm(e2, axis=1) / spacing_m)).astype(np.int64)
    points, owners = [], []
    pairs, inverse = np.unique(np.stack([n1, n2], 1), axis=0, return_inverse=True)
    for g, (a, b) in enumerate(pairs):
        members = np.flatnonzero(inverse.ravel() == g)
        lat = _lattice(int(a), int(b))  # [M, 2]
        pts = p0[members, None] + lat[None, :, :1] * e1[members, None] + lat[None, :, 1:] * e2[members, None]
        points.append(pts.reshape(-1, 3))
        owners.append(np.repeat(members, len(lat)))
    return np.concatenate(points), np.concatenate(owners)


def _hidden_samples(
    mesh: SceneMesh,
    points_m: np.ndarray,
    tri: np.ndarray,
    tri_face: np.ndarray,
    sample_tri: np.ndarray,
    normals: np.ndarray,
) -> np.ndarray:
    """[N] bool: samples whose outside neighbourhood lies inside another solid or outside the interior."""
    probe = points_m + _HIDDEN_EPS_M * normals[tri_face[sample_tri]]  # [N, 3] just off the surface
    hidden = np.zeros(len(points_m), bool)
    if mesh.interior_bounds_m is not None:
        lo, hi = mesh.interior_bounds_m
        hidden |= ~np.all((probe > lo) & (probe < hi), axis=1)
    if mesh.num_solids == 0:
        return hidden
    solid_box = np.stack(
        [solid_aabb(k, T, s) for k, T, s in zip(mesh.solid_kind, mesh.solid_T_world, mesh.solid_size_m)]
    )  # [S, 2, 3]
    tri_lo = tri.min(1) - 2 * _HIDDEN_EPS_M
    tri_hi = tri.max(1) + 2 * _HIDDEN_EPS_M
    order = np.argsort(sample_tri, kind="stable")
    starts = np.searchsorted(sample_tri[order], np.arange(len(tri) + 1))
    own_solid = mesh.face_solid[tri_face]  # [T']
    chunk = max(1, 4_000_000 // max(1, mesh.num_solids))
    for c0 in range(0, len(tri), chunk):
        c1 = min(len(tri), c0 + chunk)
        overlap = np.all(
            (tri_lo[c0:c1, None] < solid_box[None, :, 1]) & (tri_hi[c0:c1, None] > solid_box[None, :, 0]), axis=2
        )  # [chunk, S]
        overlap[np.arange(c1 - c0), own_solid[c0:c1]] &= own_solid[c0:c1] < 0
        t_idx, s_idx = np.nonzero(overlap)
        t_idx += c0
        for s in np.unique(s_idx):
            tris = t_idx[s_idx == s]
            counts = starts[tris + 1] - starts[tris]
            if not counts.sum():
                continue
            sel = order[np.repeat(starts[tris] - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())]
            sel = sel[~hidden[sel]]
            hidden[sel] |= points_inside(
                int(mesh.solid_kind[s]), mesh.solid_T_world[s], mesh.solid_size_m[s], probe[sel]
            )
    return hidden


def voxelize_surface(mesh: SceneMesh, voxel_size_m: float, samples_per_voxel: int = 3) -> GroundTruthVoxels:
    """Surface voxels of the visible surface of `mesh` with majority class and instance.

    The surface is sampled on lattices `voxel_size_m / samples_per_voxel` apart, so every voxel
    the surface crosses by more than a sliver is hit; samples hidden inside other solids
    (contact faces) or facing out of the interior are dropped. Each voxel takes the
    (instance, class) pair with the most samples (ties: the smallest instance id).
    """
    spacing = voxel_size_m / samples_per_voxel
    normals = mesh.face_normals()
    valid = np.flatnonzero(np.linalg.norm(normals, axis=1) > 0)
    tri, tri_face = _split_long_triangles(
        mesh.vertices.astype(np.float64)[mesh.triangles[valid]], valid, max(0.5, 8 * spacing)
    )
    keys, pairs, counts = [], [], []
    budget = 3_000_000  # samples per batch
    per_tri = np.maximum(
        1.0, (np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) / 2) / spacing**2 * 1.5
    )
    bounds = np.searchsorted(np.cumsum(per_tri), np.arange(budget, per_tri.sum() + budget, budget))
    lo = 0
    for hi in np.unique(np.append(bounds, len(tri))):
        if hi <= lo:
            continue
        points, sample_tri = _sample_triangles(tri[lo:hi], spacing)
        hidden = _hidden_samples(mesh, points, tri[lo:hi], tri_face[lo:hi], sample_tri, normals)
        faces = tri_face[lo:hi][sample_tri[~hidden]]
        vox = voxel_indices(points[~hidden], voxel_size_m)
        k, p, c = _count_pairs(_pack(vox), mesh.face_instance[faces].astype(np.int64) << 16 | mesh.face_class[faces])
        keys.append(k)
        pairs.append(p)
        counts.append(c)
        lo = hi
    key, pair, count = _count_pairs(np.concatenate(keys), np.concatenate(pairs), np.concatenate(counts))
    # majority pair per voxel: sort by key, then count descending, then pair ascending
    order = np.lexsort((pair, -count, key))
    first = np.ones(len(order), bool)
    first[1:] = key[order][1:] != key[order][:-1]
    best = order[first]
    return GroundTruthVoxels(
        indices=_unpack(key[best]).astype(np.int32),
        classes=(pair[best] & 0xFFFF).astype(np.int32),
        instances=(pair[best] >> 16).astype(np.int32),
        voxel_size_m=float(voxel_size_m),
    )


_PACK_BITS = 21
_PACK_OFFSET = 1 << (_PACK_BITS - 1)


def _pack(vox: np.ndarray) -> np.ndarray:
    """[N, 3] voxel indices (|i| < 2^20) -> [N] int64 keys."""
    v = vox + _PACK_OFFSET
    return (v[:, 0] << (2 * _PACK_BITS)) | (v[:, 1] << _PACK_BITS) | v[:, 2]


def _unpack(key: np.ndarray) -> np.ndarray:
    mask = (1 << _PACK_BITS) - 1
    return np.stack([key >> (2 * _PACK_BITS), (key >> _PACK_BITS) & mask, key & mask], 1) - _PACK_OFFSET


def _count_pairs(key: np.ndarray, pair: np.ndarray, weight: Optional[np.ndarray] = None):
    """Sum of `weight` (default 1) per distinct (key, pair): (keys [M], pairs [M], counts [M])."""
    if weight is None:
        weight = np.ones(len(key), np.int64)
    order = np.lexsort((pair, key))
    key, pair, weight = key[order], pair[order], weight[order]
    start = np.ones(len(key), bool)
    start[1:] = (key[1:] != key[:-1]) | (pair[1:] != pair[:-1])
    idx = np.flatnonzero(start)
    return key[idx], pair[idx], np.add.reduceat(weight, idx) if len(idx) else weight[:0]


def occupancy_grid(
    mesh: SceneMesh,
    voxel_size_m: float,
    min_index,
    shape,
    surface: Optional[GroundTruthVoxels] = None,
) -> np.ndarray:
    """[X, Y, Z] bool complete occupancy of the voxels min_index + [0, shape).

    A voxel is occupied when its centre lies inside or on a solid of the mesh or it is a surface voxel
    (`surface`, computed with `voxelize_surface` when not given).
    """
    min_index = np.asarray(min_index, np.int64)
    shape = np.asarray(shape, np.int64)
    occ = np.zeros(tuple(shape), bool)
    for kind, T, size in zip(mesh.solid_kind, mesh.solid_T_world, mesh.solid_size_m):
        box = solid_aabb(int(kind), T, size)
        lo = np.maximum(np.ceil(box[0] / voxel_size_m - 0.5).astype(np.int64), min_index)
        hi = np.minimum(np.floor(box[1] / voxel_size_m + 0.5).astype(np.int64) + 1, min_index + shape)
        if np.any(hi <= lo):
            continue
        grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
        inside = points_inside(int(kind), T, size, grid * voxel_size_m, margin_m=-1e-6)  # boundary counts
        cells = grid[inside] - min_index
        occ[cells[:, 0], cells[:, 1], cells[:, 2]] = True
    if surface is None:
        surface = voxelize_surface(mesh, voxel_size_m)
    local = surface.indices.astype(np.int64) - min_index
    keep = np.all((local >= 0) & (local < shape), axis=1)
    occ[local[keep, 0], local[keep, 1], local[keep, 2]] = True
    return occ
