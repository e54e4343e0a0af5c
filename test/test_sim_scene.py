"""Procedural scenes, their ground truth and camera trajectories (semantic_mapping.sim)."""

import json
import math

import numpy as np
import open3d as o3d
import pytest

from semantic_mapping.config import CameraConfig, SceneConfig, TrajectoryConfig
from semantic_mapping.semantics.label_space import default_label_space
from semantic_mapping.sim import (
    BOX,
    InstanceInfo,
    SceneMesh,
    SceneSpec,
    Solid,
    floor_grid,
    generate_scene,
    make_trajectory,
    occupancy_grid,
    save_scene_mesh,
    scene_statistics,
    voxelize_surface,
)
from semantic_mapping.sim.primitives import points_inside, solid_aabb, solid_mesh, translation

LABELS = default_label_space()


@pytest.fixture(scope="module")
def scenes():
    """Specs and meshes of a few seeds, built once."""
    out = {}
    for seed in (0, 1, 2):
        spec = generate_scene(seed)
        out[seed] = (spec, spec.build_mesh())
    return out


# ----------------------------------------------------------------------------- generation
def test_scene_has_rooms_instances_and_several_classes(scenes):
    cfg = SceneConfig()
    for seed, (spec, mesh) in scenes.items():
        assert cfg.min_rooms <= len(spec.rooms) <= cfg.max_rooms
        for r in spec.rooms:
            size = np.array(r.max_xy_m) - np.array(r.min_xy_m)
            assert np.all(size >= cfg.min_room_size_m - 1e-6) and np.all(size <= cfg.max_room_size_m + 1e-6)
        ids = [o.instance_id for o in spec.objects] + [
            s.instance_id for r in spec.rooms for s in (r.floor, r.wall, r.ceiling)
        ]
        assert len(ids) == len(set(ids)) and min(ids) >= 1
        assert set(np.unique(mesh.face_instance)) == set(ids)
        # per-face class agrees with the instance table
        table = mesh.instance_class_table()
        assert np.array_equal(table[mesh.face_instance], mesh.face_class)
        stats = scene_statistics(spec)
        assert stats["num_classes"] >= 10, stats
        assert stats["objects"] >= 10
        assert {"wall", "floor", "ceiling", "door"} <= set(stats["classes"])
    all_classes = set().union(*(scene_statistics(s)["classes"] for s, _ in scenes.values()))
    assert len(all_classes) >= 16


def test_rooms_are_connected_by_doorways(scenes):
    for spec, _ in scenes.values():
        adj = {r.room_id: set() for r in spec.rooms}
        for o in spec.openings:
            if o.kind == "doorway":
                adj[o.rooms[0]].add(o.rooms[1])
                adj[o.rooms[1]].add(o.rooms[0])
        seen, stack = set(), [spec.rooms[0].room_id]
        while stack:
            r = stack.pop()
            if r not in seen:
                seen.add(r)
                stack += adj[r]
        assert seen == set(adj)


def _solid_points(kind, T, size) -> np.ndarray:
    """Vertices, edge midpoints and face centres of a solid's mesh, world frame."""
    v, t = solid_mesh(kind, size)
    tri = v[t]
    pts = np.concatenate([v, tri.mean(1), (tri[:, 0] + tri[:, 1]) / 2, (tri[:, 1] + tri[:, 2]) / 2])
    return pts @ T[:3, :3].T + T[:3, 3]


def test_solids_of_different_instances_do_not_intersect(scenes):
    """No part of one instance reaches more than 2 mm into a solid of another (touching is fine)."""
    for seed, (spec, mesh) in scenes.items():
        boxes = np.stack(
            [solid_aabb(k, T, s) for k, T, s in zip(mesh.solid_kind, mesh.solid_T_world, mesh.solid_size_m)]
        )
        inst = np.array([mesh.face_instance[mesh.face_solid == i][0] for i in range(mesh.num_solids)])
        overlap = np.all(
            (boxes[:, None, 0] < boxes[None, :, 1] - 2e-3) & (boxes[None, :, 0] < boxes[:, None, 1] - 2e-3), -1
        )
        overlap &= inst[:, None] != inst[None, :]
        for a, b in zip(*np.nonzero(overlap)):
            pts = _solid_points(mesh.solid_kind[a], mesh.solid_T_world[a], mesh.solid_size_m[a])
            inside = points_inside(mesh.solid_kind[b], mesh.solid_T_world[b], mesh.solid_size_m[b], pts, margin_m=2e-3)
            assert not inside.any(), (seed, int(inst[a]), int(inst[b]))


def test_free_floor_reaches_every_room(scenes):
    for spec, _ in scenes.values():
        grid = floor_grid(spec, 0.05)
        from scipy import ndimage

        labels, _ = ndimage.label(grid.free & (grid.clearance_m >= 0.3), structure=np.ones((3, 3)))
        biggest = np.bincount(labels[labels > 0]).argmax()
        rooms = set(np.unique(grid.room_of[labels == biggest])) - {-1}
        assert rooms == {r.room_id for r in spec.rooms}
        for r in spec.rooms:  # a good share of every room stays walkable
            in_room = grid.room_of == r.room_id
            assert (labels[in_room] == biggest).mean() > 0.25


def test_generation_is_deterministic_and_seed_dependent():
    a, b, c = generate_scene(7).to_dict(), generate_scene(7).to_dict(), generate_scene(8).to_dict()
    assert a == b
    assert a != c


def test_single_room_config():
    spec = generate_scene(3, SceneConfig(min_rooms=1, max_rooms=1))
    assert len(spec.rooms) == 1
    assert scene_statistics(spec)["objects"] >= 5


# ----------------------------------------------------------------------------- files
def test_spec_save_load_rebuilds_identical_mesh(tmp_path, scenes):
    spec, mesh = scenes[1]
    path = tmp_path / "scene.json"
    spec.save(path)
    assert json.loads(path.read_text())["seed"] == 1
    assert not list(tmp_path.glob("*.tmp"))
    loaded = SceneSpec.load(path)
    assert loaded.to_dict() == spec.to_dict()
    again = loaded.build_mesh()
    for name in ("vertices", "triangles", "face_class", "face_instance", "face_albedo", "face_solid", "solid_T_world"):
        assert np.array_equal(getattr(again, name), getattr(mesh, name)), name
    assert again.instances == mesh.instances


def test_scene_mesh_npz_and_ply(tmp_path, scenes):
    _, mesh = scenes[0]
    mesh.save(tmp_path / "mesh.npz")
    back = SceneMesh.load(tmp_path / "mesh.npz")
    assert np.array_equal(back.vertices, mesh.vertices) and np.array_equal(back.face_instance, mesh.face_instance)
    assert back.instances == mesh.instances
    assert np.array_equal(back.interior_bounds_m, mesh.interior_bounds_m)
    save_scene_mesh(mesh, tmp_path / "mesh.ply")
    data = (tmp_path / "mesh.ply").read_bytes()
    header = data[: data.index(b"end_header\n")].decode()
    assert f"element face {len(mesh.triangles)}" in header and "property int instance" in header
    face_bytes = len(mesh.triangles) * (1 + 12 + 4 + 4 + 3)
    assert len(data) == len(header) + len("end_header\n") + 12 * len(mesh.vertices) + face_bytes
    legacy = o3d.io.read_triangle_mesh(str(tmp_path / "mesh.ply"))
    assert len(legacy.triangles) == len(mesh.triangles)


# ----------------------------------------------------------------------------- 3D ground truth
def _box_mesh(lo, hi, instance=1, class_name="table") -> SceneMesh:
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    solid = Solid(BOX, translation(*((lo + hi) / 2)), tuple(hi - lo), instance, (0.5, 0.5, 0.5))
    return SceneMesh.from_solids([solid], {instance: InstanceInfo(LABELS.id_of(class_name), class_name)})


def test_voxelized_box_gives_expected_surface_voxels():
    v = 0.05
    lo, hi = np.array([0.013, -0.071, 0.017]), np.array([0.287, 0.179, 0.113])
    mesh = _box_mesh(lo, hi, instance=4)
    gt = voxelize_surface(mesh, v)
    # expected: voxels whose cube meets the box but does not lie strictly inside it
    i0 = np.floor(lo / v + 0.5).astype(int)
    i1 = np.floor(hi / v + 0.5).astype(int)
    grid = np.stack(np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(i0, i1)], indexing="ij"), -1).reshape(-1, 3)
    cube_lo, cube_hi = (grid - 0.5) * v, (grid + 0.5) * v
    interior = np.all((cube_lo > lo) & (cube_hi < hi), axis=1)
    expected = {tuple(g) for g in grid[~interior]}
    assert {tuple(g) for g in gt.indices} == expected
    assert np.all(gt.instances == 4) and np.all(gt.classes == LABELS.id_of("table"))
    assert np.allclose(gt.positions_m(), gt.indices * v)
    occ = occupancy_grid(mesh, v, i0 - 1, i1 - i0 + 3, gt)
    inside = np.zeros_like(occ)
    inside[1:-1, 1:-1, 1:-1] = True
    assert np.array_equal(occ, inside)


def test_voxelization_hides_contact_faces_and_exterior():
    v = 0.05
    floor = Solid(BOX, translation(0.0, 0.0, -0.05), (2.0, 2.0, 0.1), 1, (0.5, 0.5, 0.5))
    crate = Solid(BOX, translation(0.0, 0.0, 0.15), (0.42, 0.42, 0.3), 2, (0.5, 0.5, 0.5))
    infos = {1: InstanceInfo(LABELS.id_of("floor"), "floor"), 2: InstanceInfo(LABELS.id_of("cabinet"), "cabinet")}
    mesh = SceneMesh.from_solids([floor, crate], infos, interior_bounds_m=np.array([[-1, -1, 0], [1, 1, 2]]))
    gt = voxelize_surface(mesh, v)
    cls = {tuple(i): c for i, c in zip(gt.indices, gt.classes)}
    assert (0, 0, 0) not in cls  # floor under the crate and the crate's bottom are hidden
    assert cls[(10, 0, 0)] == LABELS.id_of("floor")
    assert cls[(0, 0, 6)] == LABELS.id_of("cabinet")  # crate top at z = 0.3
    assert not np.any(gt.indices[:, 2] < 0)  # floor underside faces out of the interior
    occ = occupancy_grid(mesh, v, (-25, -25, -3), (51, 51, 10))
    assert occ[25, 25, 3] and occ[25, 25, 5] and occ[25, 25, 2]  # contact plane, crate interior, floor slab
    assert not occ[35, 25, 4]  # air beside the crate


def test_scene_surface_voxels_are_consistent(scenes):
    spec, mesh = scenes[0]
    v = 0.1
    gt = voxelize_surface(mesh, v)
    floor_z = gt.indices[gt.classes == LABELS.id_of("floor"), 2]
    ceiling_z = gt.indices[gt.classes == LABELS.id_of("ceiling"), 2]
    assert np.all(floor_z == 0)
    assert np.all(ceiling_z == int(math.floor(spec.wall_height_m / v + 0.5)))
    bounds = spec.interior_bounds_m()
    pos = gt.positions_m()
    assert np.all(pos >= bounds[0] - v) and np.all(pos <= bounds[1] + v)
    present = set(np.unique(gt.classes))
    assert {LABELS.id_of(n) for n in scene_statistics(spec)["classes"]} == present


# ----------------------------------------------------------------------------- trajectories
def test_trajectory_stays_in_free_space_and_is_smooth(scenes):
    cfg = TrajectoryConfig(num_frames=900)
    cam = CameraConfig()
    for seed, (spec, mesh) in scenes.items():
        poses = make_trajectory(spec, seed, cfg, cam)
        assert len(poses) == cfg.num_frames
        stamps = np.array([s for s, _ in poses])
        assert np.allclose(np.diff(stamps), 1e9 / cam.rate_hz, atol=1)
        T = np.stack([p for _, p in poses])
        R = T[:, :3, :3]
        assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-9)
        pos = T[:, :3, 3]
        assert np.all((pos[:, 2] >= cfg.height_min_m - 1e-9) & (pos[:, 2] <= cfg.height_max_m + 1e-9))
        # away from every surface, and never inside a solid
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(mesh.vertices), o3d.core.Tensor(mesh.triangles.astype(np.uint32)))
        dist = scene.compute_distance(o3d.core.Tensor(pos.astype(np.float32))).numpy()
        assert dist.min() >= cfg.min_clearance_m - 0.05, (seed, dist.min())
        for k, Tw, s in zip(mesh.solid_kind, mesh.solid_T_world, mesh.solid_size_m):
            assert not points_inside(k, Tw, s, pos).any()
        # bounded speed and angular rate
        speed = np.linalg.norm(np.diff(pos, axis=0), axis=1) * cam.rate_hz
        assert speed.max() <= 1.1 * cfg.speed_max_m_s
        assert speed.mean() >= 0.5 * cfg.speed_min_m_s
        rel = np.einsum("kji,kjl->kil", R[:-1], R[1:])
        angle = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1))) * cam.rate_hz
        assert angle.max() <= 1.3 * cfg.max_yaw_rate_deg_s, angle.max()
        # the optical axis stays near horizontal, looking slightly down on average
        forward_z = R[:, 2, 2]
        assert np.all(np.abs(forward_z) < math.sin(math.radians(40))) and forward_z.mean() < 0


@pytest.mark.parametrize("seed", [0, 2])
def test_trajectory_passes_between_rooms_and_revisits(seed):
    spec = generate_scene(seed, SceneConfig(min_rooms=2, max_rooms=2))
    poses = make_trajectory(spec, seed, TrajectoryConfig(num_frames=3000))
    grid = floor_grid(spec, 0.05)
    xy = np.array([T[:2, 3] for _, T in poses])
    rooms = grid.room_of[tuple(grid.cell_of(xy).T)]
    visited = rooms[rooms >= 0]
    assert set(visited) == {0, 1}
    assert np.count_nonzero(np.diff(visited)) >= 2  # through a doorway and back
    assert np.min(np.linalg.norm(xy[len(xy) // 2 :] - xy[0], axis=1)) < 0.5  # the lap closes at its start


def test_trajectory_is_deterministic_by_seed(scenes):
    spec, _ = scenes[2]
    cfg = TrajectoryConfig(num_frames=120)
    a, b, c = (make_trajectory(spec, s, cfg) for s in (3, 3, 4))
    assert all(sa == sb and np.array_equal(Ta, Tb) for (sa, Ta), (sb, Tb) in zip(a, b))
    assert not all(np.array_equal(Ta, Tc) for (_, Ta), (_, Tc) in zip(a, c))
