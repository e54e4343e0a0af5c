"""SDF visibility test (GNeSF §4.2) and trilinear TSDF sampling on a fused wall-and-box scene."""

import numpy as np
import open3d as o3d
import open3d.core as o3c
import pytest
import torch

from semantic_mapping.config import FusionConfig, MapperConfig
from semantic_mapping.fusion.voxel_map import VoxelMap
from semantic_mapping.geometry import invert_pose, look_at
from semantic_mapping.pipeline import Mapper
from semantic_mapping.semantics.visibility import sample_tsdf, visible_from
from semantic_mapping.types import Frame
from test_fusion import INTR

VOXEL_M = 0.05
WALL_LO_M, WALL_HI_M = np.array([-2.5, 2.0, 0.0]), np.array([2.5, 2.2, 2.5])  # back wall, front face y = 2
BOX_LO_M, BOX_HI_M = np.array([-0.2, 0.8, 0.8]), np.array([0.2, 1.2, 1.2])  # occluder, front face y = 0.8
CAM_BLOCKED_M = np.array([0.0, -0.5, 1.0])  # the box hides the wall behind it
CAM_CLEAR_M = np.array([2.0, -0.5, 1.0])  # sees that wall patch past the box's side
CAM_BEHIND_M = np.array([0.0, 3.5, 1.0])  # behind the back wall


def box_sdf(points, lo, hi):  # [N, 3] -> [N] metres
    q = np.abs(points - (lo + hi) / 2) - (hi - lo) / 2
    return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)


def analytic_sdf(points):
    return np.minimum(box_sdf(points, WALL_LO_M, WALL_HI_M), box_sdf(points, BOX_LO_M, BOX_HI_M))


def segment_hits_box(a, b, lo, hi):  # segments a [3] -> b [N, 3]; [N] bool
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (lo - a) / (b - a), (hi - a) / (b - a)
    near, far = np.minimum(t0, t1).max(axis=1), np.maximum(t0, t1).min(axis=1)
    return (near <= far) & (far >= 0) & (near <= 1)


def render(scene, T_world_cam, stamp_ns):
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        o3c.Tensor(INTR.K), o3c.Tensor(invert_pose(T_world_cam)), INTR.width_px, INTR.height_px)
    t_hit = scene.cast_rays(rays)["t_hit"].numpy()
    depth = (t_hit * (rays.numpy()[..., 3:] @ T_world_cam[:3, :3])[..., 2]).astype(np.float32)
    depth[~np.isfinite(depth)] = 0.0
    return Frame(rgb=np.zeros(depth.shape + (3,), np.uint8), depth_m=depth, intrinsics=INTR,
                 T_world_cam=T_world_cam, stamp_ns=stamp_ns)


@pytest.fixture(scope="module")
def vmap() -> VoxelMap:
    scene = o3d.t.geometry.RaycastingScene()
    for lo, hi in ((WALL_LO_M, WALL_HI_M), (BOX_LO_M, BOX_HI_M)):
        box = o3d.geometry.TriangleMesh.create_box(*(hi - lo)).translate(lo)
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(box))
    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=VOXEL_M, device="cpu")))
    eyes = [(x, -0.5, z) for x in (-1.5, -0.75, 0.0, 0.75, 1.5) for z in (0.8, 1.4)]
    for i, eye in enumerate(eyes):
        assert mapper.integrate(render(scene, look_at(eye, (0.0, 2.0, 1.0)), (i + 1) * 1000)).accepted
    return mapper.map


def surface(vmap):
    points, _ = vmap.surface_points()
    return points.astype(np.float64)


def test_occluder_hides_the_wall_behind_it(vmap):
    points = surface(vmap)
    wall = points[np.abs(points[:, 1] - WALL_LO_M[1]) < VOXEL_M]
    front = points[(np.abs(points[:, 1] - BOX_LO_M[1]) < VOXEL_M) & (np.abs(points[:, [0, 2]] - [0.0, 1.0]) < 0.15).all(1)]
    assert len(front) > 20
    vis = visible_from(vmap, np.concatenate([wall, front]), np.stack([CAM_BLOCKED_M, CAM_CLEAR_M])).numpy()
    assert vis.shape == (len(wall) + len(front), 2) and vis.dtype == bool
    wall_vis, front_vis = vis[:len(wall)], vis[len(wall):]
    margin = 2 * VOXEL_M  # shadow edges are left out
    assert segment_hits_box(CAM_BLOCKED_M, wall, BOX_LO_M + margin, BOX_HI_M - margin).sum() > 50
    for v, cam in enumerate((CAM_BLOCKED_M, CAM_CLEAR_M)):
        hidden = segment_hits_box(cam, wall, BOX_LO_M + margin, BOX_HI_M - margin)
        clear = ~segment_hits_box(cam, wall, BOX_LO_M - margin, BOX_HI_M + margin)
        assert clear.sum() > 1000
        assert not wall_vis[hidden, v].any(), cam
        assert wall_vis[clear, v].all(), cam
    behind_box = (np.abs(wall[:, [0, 2]] - [0.0, 1.0]) < 0.2).all(1)
    assert behind_box.sum() > 20
    assert not wall_vis[behind_box, 0].any() and wall_vis[behind_box, 1].all()
    assert front_vis[:, 0].all()
    assert not visible_from(vmap, wall[behind_box], CAM_BEHIND_M[None]).any()  # a surface seen from its back
    # Targets up to a voxel off the surface (e.g. voxel centres) do not occlude themselves.
    inside = wall[behind_box] + [0.0, 0.7 * VOXEL_M, 0.0]
    assert visible_from(vmap, inside, CAM_CLEAR_M[None]).all()


def test_sample_tsdf_matches_per_point_reference(vmap):
    rng = np.random.default_rng(0)
    points = surface(vmap)
    near = points[rng.choice(len(points), 300)] + rng.normal(0.0, 0.08, (300, 3))
    anywhere = rng.uniform([-3.0, -1.0, -0.5], [3.0, 3.0, 3.0], (100, 3))
    points = np.concatenate([near, anywhere])
    sdf, valid = sample_tsdf(vmap, torch.from_numpy(points))
    assert sdf.dtype == torch.float32 and valid.dtype == torch.bool and sdf.shape == valid.shape == (400,)
    ref_sdf, ref_valid = np.full(len(points), np.nan), np.zeros(len(points), bool)
    for i, p in enumerate(points):
        base = np.floor(p / VOXEL_M)
        corners = np.array([base + [dx, dy, dz] for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)])
        values = vmap.voxel_values(corners.astype(np.int64))
        if (values["weight"] > 0).all():
            w = np.prod(np.where(corners > base, p / VOXEL_M - base, 1.0 - (p / VOXEL_M - base)), axis=1)
            ref_sdf[i], ref_valid[i] = (w * values["sdf_m"]).sum(), True
    np.testing.assert_array_equal(valid.numpy(), ref_valid)
    assert 150 < ref_valid.sum() < len(points) - 50
    np.testing.assert_allclose(sdf.numpy()[ref_valid], ref_sdf[ref_valid], atol=1e-5)
    assert torch.isnan(sdf[~valid]).all()


def test_sample_tsdf_matches_analytic_sdf_near_surface(vmap):
    rng = np.random.default_rng(1)
    points = surface(vmap)
    points = points[rng.choice(len(points), 2000)] + rng.uniform(-VOXEL_M, VOXEL_M, (2000, 3))
    sdf, valid = sample_tsdf(vmap, points)
    truth = analytic_sdf(points)
    near = valid.numpy() & (np.abs(truth) < VOXEL_M)
    assert near.sum() > 1000
    err = np.abs(sdf.numpy()[near] - truth[near])
    assert np.median(err) < 0.25 * VOXEL_M and np.quantile(err, 0.95) < VOXEL_M


def test_unobserved_space_is_not_an_occluder(vmap):
    empty = VoxelMap(vmap.config, vmap.num_classes)
    wall_point = np.array([[0.0, 2.0, 1.0]])
    assert not sample_tsdf(empty, wall_point)[1].any()
    assert visible_from(empty, wall_point, CAM_BLOCKED_M[None]).all()
    assert visible_from(vmap, wall_point, [[12.0, -8.0, 1.0]]).all()  # the ray starts far outside the map
    assert not visible_from(vmap, wall_point, CAM_BLOCKED_M[None]).any()
    # The same map with the occluder's voxels marked unobserved (their negative TSDF values kept).
    copy = VoxelMap(vmap.config, vmap.num_classes)
    copy.load_state_arrays(vmap.state_arrays())
    lo, hi = np.floor((BOX_LO_M - 0.3) / VOXEL_M), np.ceil((BOX_HI_M + 0.3) / VOXEL_M)
    grid = np.stack(np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    flat, found = copy.lookup(grid.astype(np.int64))
    index = torch.from_numpy(flat[found])
    assert (copy._flat("tsdf")[index, 0] < -0.5).any()
    copy._flat("weight").view(torch.int16)[index] = 0
    assert visible_from(copy, wall_point, CAM_BLOCKED_M[None]).all()
