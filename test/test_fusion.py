"""Map engine: analytic fusion, semantics, outputs, save/load, bad input."""

import subprocess
import sys

import numpy as np
import open3d as o3d
import open3d.core as o3c
import pytest

from semantic_mapping.config import FusionConfig, MapperConfig
from semantic_mapping.geometry import invert_pose, look_at
from semantic_mapping.pipeline import Mapper
from semantic_mapping.semantics.label_space import default_label_space
from semantic_mapping.types import CameraIntrinsics, Frame, TraversabilityGrid

LS = default_label_space()
WALL, FLOOR, OBJECT = LS.id_of("wall"), LS.id_of("floor"), LS.id_of("object")
ROOM_HALF_M, ROOM_HEIGHT_M = 2.0, 2.5
SPHERE_CENTRE_M, SPHERE_RADIUS_M = np.array([0.0, 0.0, 0.8]), 0.45
INTR = CameraIntrinsics(160.0, 160.0, 79.5, 59.5, 160, 120)


def analytic_sdf(points):  # [N, 3] -> [N] metres, positive in free space
    inside_room = np.minimum.reduce([
        ROOM_HALF_M - np.abs(points[:, 0]), ROOM_HALF_M - np.abs(points[:, 1]),
        points[:, 2], ROOM_HEIGHT_M - points[:, 2],
    ])
    sphere = np.linalg.norm(points - SPHERE_CENTRE_M, axis=1) - SPHERE_RADIUS_M
    return np.minimum(inside_room, sphere)


class SphereInBox:
    """A sphere on a stand in a closed room, rendered with Open3D raycasting; per-pixel class ids."""

    def __init__(self):
        self.scene = o3d.t.geometry.RaycastingScene()
        room = o3d.geometry.TriangleMesh.create_box(2 * ROOM_HALF_M, 2 * ROOM_HALF_M, ROOM_HEIGHT_M)
        room.translate((-ROOM_HALF_M, -ROOM_HALF_M, 0.0))
        sphere = o3d.geometry.TriangleMesh.create_sphere(SPHERE_RADIUS_M, resolution=60)
        sphere.translate(SPHERE_CENTRE_M)
        self.room_id = self.scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(room))
        self.sphere_id = self.scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(sphere))

    def render(self, T_world_cam, stamp_ns):
        rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
            o3c.Tensor(INTR.K), o3c.Tensor(invert_pose(T_world_cam)), INTR.width_px, INTR.height_px)
        hit = self.scene.cast_rays(rays)
        dirs_world = rays.numpy()[..., 3:]
        dirs_cam = dirs_world @ T_world_cam[:3, :3]
        depth = (hit["t_hit"].numpy() * dirs_cam[..., 2]).astype(np.float32)
        depth[~np.isfinite(depth)] = 0.0
        geom = hit["geometry_ids"].numpy()
        points = T_world_cam[:3, 3] + hit["t_hit"].numpy()[..., None] * dirs_world
        labels = np.full(depth.shape, WALL, np.int32)
        labels[(geom == self.room_id) & (points[..., 2] < 0.01)] = FLOOR
        labels[geom == self.sphere_id] = OBJECT
        rgb = LS.colorize(labels)
        return Frame(rgb=rgb, depth_m=depth, intrinsics=INTR, T_world_cam=T_world_cam, stamp_ns=stamp_ns,
                     labels=labels, label_confidence=np.full(depth.shape, 0.9, np.float32))


def trajectory(n=24):
    poses = []
    for i, a in enumerate(np.linspace(0, 2 * np.pi, n, endpoint=False)):
        eye = np.array([1.4 * np.cos(a), 1.4 * np.sin(a), 1.3 + 0.2 * np.sin(3 * a)])
        poses.append(look_at(eye, [0.3 * np.sin(a), 0.0, 0.6]))
    return poses


def assert_same_map(a: Mapper, b: Mapper) -> None:
    """Every block and attribute equal (block order in the hash map is arbitrary)."""
    arrays_a, arrays_b = a.map.state_arrays(), b.map.state_arrays()
    order_a, order_b = np.lexsort(arrays_a["block_coords"].T), np.lexsort(arrays_b["block_coords"].T)
    assert arrays_a.keys() == arrays_b.keys()
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key][order_a], arrays_b[key][order_b], err_msg=key)


@pytest.fixture(scope="module")
def world():
    return SphereInBox()


@pytest.fixture(scope="module")
def fused(world):
    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu")))
    for i, T in enumerate(trajectory()):
        assert mapper.integrate(world.render(T, i * 33_000_000)).accepted
    return mapper


def test_fused_tsdf_matches_analytic_sdf(fused):
    vmap = fused.map
    arrays = vmap.state_arrays()
    R = vmap.block_resolution
    local = np.stack(np.meshgrid(np.arange(R), np.arange(R), np.arange(R), indexing="ij"), -1)[..., ::-1]  # z,y,x -> x,y,z
    idx = (arrays["block_coords"][:, None, None, None, :] * R + local[None]).reshape(-1, 3)
    sdf = arrays["attr_tsdf"].reshape(-1) * vmap.sdf_trunc_m
    weight = arrays["attr_weight"].reshape(-1).astype(np.float32)
    truth = analytic_sdf(idx * vmap.voxel_size_m)
    near = (weight >= 2) & (np.abs(truth) < vmap.sdf_trunc_m * 0.75)
    assert near.sum() > 5000
    err = np.abs(sdf[near] - truth[near])
    assert np.all(err < vmap.sdf_trunc_m)
    # Projective distances overestimate away from the surface; at the surface they are exact.
    at_surface = np.abs(truth[near]) < vmap.voxel_size_m
    assert np.median(err[at_surface]) < 0.25 * vmap.voxel_size_m


def test_surface_and_labels(fused):
    voxels = fused.labelled_voxels()
    assert len(voxels.labels) > 1000
    dist = np.abs(analytic_sdf(voxels.positions_m))
    assert np.median(dist) < 0.5 * fused.voxel_size_m
    on_sphere = np.linalg.norm(voxels.positions_m - SPHERE_CENTRE_M, axis=1) < SPHERE_RADIUS_M + 0.05
    on_floor = voxels.positions_m[:, 2] < 0.03
    assert np.mean(voxels.labels[on_sphere] == OBJECT) > 0.9
    assert np.mean(voxels.labels[on_floor] == FLOOR) > 0.9
    labelled = voxels.labels != LS.ignore_id
    assert voxels.confidence[on_sphere & labelled].mean() > 0.9


def test_raycast_reproduces_rendered_view(fused, world):
    T = trajectory()[3]
    truth = world.render(T, 0)
    view = fused.render(INTR, T)
    both = (view.depth_m > 0) & (truth.depth_m > 0)
    assert both.mean() > 0.8
    assert np.median(np.abs(view.depth_m[both] - truth.depth_m[both])) < 0.5 * fused.voxel_size_m
    assert np.mean(view.labels[both] == truth.labels[both]) > 0.9


def test_mesh_and_traversability(fused):
    mesh = fused.mesh()
    assert len(mesh.triangles) > 1000 and mesh.vertex_labels.shape == (len(mesh.vertices_m),)
    assert np.abs(analytic_sdf(mesh.vertices_m.astype(np.float64))).max() < 2 * fused.voxel_size_m
    grid = fused.traversability()
    res, (ox, oy) = grid.resolution_m, grid.origin_xy_m

    def cell(x, y):
        return grid.cells[int((y - oy) // res), int((x - ox) // res)]

    r = SPHERE_RADIUS_M - 0.02  # the sphere's sides, at robot height
    occupied = [cell(x, y) for x, y in [(r, 0.0), (-r, 0.0), (0.0, r), (0.0, -r)]]
    assert occupied.count(TraversabilityGrid.OCCUPIED) >= 3
    assert cell(1.0, -1.0) == TraversabilityGrid.FREE and cell(-1.0, 1.0) == TraversabilityGrid.FREE
    assert np.mean(grid.cells == TraversabilityGrid.FREE) > 0.25
    assert cell(0.0, -ROOM_HALF_M + 0.02) == TraversabilityGrid.OCCUPIED  # a wall


def test_chunks_read_densely_and_count_updates(fused):
    vmap = fused.map
    assert sum(vmap.chunk_updates.values()) >= fused.stats.frames_integrated
    chunk = max(vmap.chunk_updates, key=vmap.chunk_updates.get)
    dense = vmap.read_chunk(chunk)
    assert dense["tsdf"].shape == tuple(vmap.config.chunk_shape_voxels)
    observed = np.argwhere(dense["weight"] > 0)
    assert len(observed) > 100
    pick = observed[np.random.default_rng(0).choice(len(observed), 200)]
    values = vmap.voxel_values(pick + dense["origin_index"])
    np.testing.assert_allclose(dense["tsdf"][tuple(pick.T)] * vmap.sdf_trunc_m, values["sdf_m"], atol=1e-6)
    np.testing.assert_array_equal(dense["weight"][tuple(pick.T)], values["weight"])
    labelled = values["labels"] >= 0
    np.testing.assert_array_equal(dense["log_probs"][tuple(pick.T)].argmax(-1)[labelled], values["labels"][labelled])


def test_empty_and_barely_observed_maps_give_empty_outputs(world):
    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu")))
    for stage in ("empty", "one frame", "after reset"):
        if stage == "one frame":
            mapper.integrate(world.render(trajectory()[0], 1))  # weights below the surface threshold
        if stage == "after reset":
            mapper.reset()
        assert len(mapper.labelled_voxels().labels) == 0, stage
        assert len(mapper.mesh().triangles) == 0, stage
        assert (mapper.traversability().cells == TraversabilityGrid.UNKNOWN).all(), stage
        assert (mapper.render(INTR, trajectory()[0]).depth_m == 0).all(), stage


def test_weight_cap():
    cfg = MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu", max_weight=3))
    world, mapper = SphereInBox(), Mapper(cfg)
    for i, T in enumerate(trajectory(6)):
        mapper.integrate(world.render(T, i))
    weight = mapper.map.attribute("weight").to(__import__("torch").int32)
    assert weight.max() > 3
    mapper.map._cap_weights()
    assert mapper.map.attribute("weight").to(__import__("torch").int32).max() == 3


def test_save_load_identical(fused, tmp_path, world):
    path = tmp_path / "map.npz"
    fused.save(path)
    other = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu")))
    other.load(path)
    assert_same_map(fused, other)
    T = trajectory()[5]
    np.testing.assert_array_equal(fused.render(INTR, T).labels, other.render(INTR, T).labels)
    other.reset()
    assert other.map.num_blocks == 0 and other.stats.frames_integrated == 0


def test_a_reset_map_integrates_as_a_new_one(fused, world):
    """A reset (the node's ~/reset, a replayed bag) leaves no trace: the same frames give the same map."""
    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu")))
    for i, T in enumerate(trajectory()[:3]):  # a turn count that is not a multiple of the interleave period
        mapper.integrate(world.render(T, i * 33_000_000))
    mapper.reset()
    for i, T in enumerate(trajectory()):
        mapper.integrate(world.render(T, i * 33_000_000))
    assert_same_map(fused, mapper)


def test_load_refuses_foreign_files(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu")))
    with pytest.raises(ValueError, match="not a semantic_mapping map file"):
        mapper.load(bad)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable map file"):
        mapper.load(tmp_path / "junk.npz")


def _bad_frames(good: Frame):
    def variant(**changes):
        values = dict(good.__dict__)
        values.update(changes)
        return Frame(**values)

    H, W = good.depth_m.shape
    T_nan = good.T_world_cam.copy()
    T_nan[0, 3] = np.nan
    T_shear = good.T_world_cam.copy()
    T_shear[:3, :3] *= 1.5
    return {
        "depth_dtype": variant(depth_m=(good.depth_m * 1000).astype(np.uint16)),
        "depth_shape": variant(depth_m=good.depth_m[None]),
        "rgb_shape": variant(rgb=good.rgb[:-1]),
        "rgb_dtype": variant(rgb=good.rgb.astype(np.float32)),
        "depth_empty": variant(depth_m=np.zeros((H, W), np.float32)),
        "intrinsics_size": variant(depth_m=np.ones((H + 2, W), np.float32), rgb=np.zeros((H + 2, W, 3), np.uint8)),
        "pose_invalid": variant(T_world_cam=T_nan),
        "labels_shape": variant(labels=good.labels[:, :-1]),
        "stamp_backwards": variant(stamp_ns=1),
    }, variant


def test_bad_input_is_rejected_and_counted_without_touching_the_map(world):
    cfg = MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu"))
    poses = trajectory(6)
    clean, noisy = Mapper(cfg), Mapper(cfg)
    first = world.render(poses[0], 1_000)
    clean.integrate(first)
    noisy.integrate(first)
    bad, variant = _bad_frames(world.render(poses[1], 2_000))
    T_shear = poses[1].copy()
    T_shear[:3, :3] *= 1.5
    bad["pose_non_rigid"] = variant(T_world_cam=T_shear)
    for reason, frame in bad.items():
        result = noisy.integrate(frame)
        assert not result.accepted, reason
        assert result.message
    assert noisy.stats.frames_rejected_total == len(bad)
    assert noisy.stats.frames_rejected["pose_invalid"] == 2  # NaN and sheared
    # Cleanable input: NaN/inf/65535 depth pixels and labels outside the label space.
    second = world.render(poses[1], 2_000)
    dirty_depth = second.depth_m.copy()
    dirty_depth[:5] = np.nan
    dirty_depth[5:10] = np.inf
    dirty_depth[10:12] = 65535.0
    dirty_labels = second.labels.copy()
    dirty_labels[:, :3] = 77
    assert noisy.integrate(variant(depth_m=dirty_depth, labels=dirty_labels, stamp_ns=2_000)).accepted
    cleaned_depth = dirty_depth.copy()
    cleaned_depth[:12] = 0.0
    cleaned_labels = dirty_labels.copy()
    cleaned_labels[:, :3] = LS.ignore_id
    assert clean.integrate(variant(depth_m=cleaned_depth, labels=cleaned_labels, stamp_ns=2_000)).accepted
    assert noisy.stats.pixels_cleaned["labels_outside_label_space"] == 3 * second.labels.shape[0]
    assert_same_map(clean, noisy)
    # The next good frame integrates normally.
    assert noisy.integrate(world.render(poses[2], 3_000)).accepted


def test_library_never_imports_rclpy():
    code = (
        "import sys, semantic_mapping, semantic_mapping.pipeline, semantic_mapping.cli;"
        "assert 'rclpy' not in sys.modules, 'rclpy imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))


def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path):
    from semantic_mapping.atomic_files import atomic_write_bytes

    atomic_write_bytes(tmp_path / "a.bin", b"x")
    (tmp_path / "b.bin").write_bytes(b"x")
    assert (tmp_path / "a.bin").stat().st_mode == (tmp_path / "b.bin").stat().st_mode
