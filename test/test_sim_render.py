"""Raycast rendering and the depth sensor model (semantic_mapping.sim.render)."""

import math

import numpy as np
import pytest

from semantic_mapping.config import CameraConfig, DepthNoiseConfig, TrajectoryConfig
from semantic_mapping.geometry import invert_pose, look_at, project_points, transform_points
from semantic_mapping.semantics.label_space import default_label_space
from semantic_mapping.sim import (
    BOX,
    InstanceInfo,
    SceneMesh,
    SceneRenderer,
    Solid,
    TextureSpec,
    apply_depth_noise,
    generate_scene,
    make_trajectory,
)
from semantic_mapping.sim.primitives import translation

LABELS = default_label_space()
SMALL = CameraConfig(width_px=160, height_px=120, fx=131.25, fy=131.25, cx=79.5, cy=59.5)
CLEAN = DepthNoiseConfig(random_dropout_prob=0.0, edge_dropout_prob=0.0, grazing_start_deg=89.9, grazing_end_deg=90.0)


def _quad(center, normal, size_m=40.0, instance=1, class_name="wall", texture=TextureSpec(), albedo=(0.5, 0.5, 0.5)):
    """Hand-made SceneMesh: one square of two triangles, wound to face along `normal`."""
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    a = np.cross(n, [0.0, 0.0, 1.0] if abs(n[2]) < 0.9 else [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    c = np.asarray(center, float)
    h = size_m / 2
    verts = np.array([c - h * a - h * b, c + h * a - h * b, c + h * a + h * b, c - h * a + h * b])
    tris = np.array([[0, 1, 2], [0, 2, 3]])
    cls = LABELS.id_of(class_name)
    return SceneMesh(
        vertices=verts,
        triangles=tris,
        face_class=[cls, cls],
        face_instance=[instance, instance],
        instances={instance: InstanceInfo(cls, class_name, albedo, texture)},
        face_albedo=np.tile(np.asarray(albedo, np.float32), (2, 1)),
    )


def test_fronto_parallel_plane_depth_labels_normals():
    mesh = _quad((0.0, 0.0, 2.5), (0.0, 0.0, -1.0), instance=3, class_name="door")
    frame = SceneRenderer(mesh, SMALL, CLEAN).render(np.eye(4), stamp_ns=42)
    gt = frame.ground_truth
    assert frame.rgb.shape == (120, 160, 3) and frame.rgb.dtype == np.uint8
    assert frame.depth_m.dtype == np.float32 and frame.stamp_ns == 42
    assert np.allclose(gt.depth_m, 2.5, atol=1e-5) and np.allclose(frame.depth_m, 2.5, atol=1e-5)
    assert np.all(gt.labels == LABELS.id_of("door")) and np.all(gt.instances == 3)
    assert np.allclose(gt.normals_cam, [0.0, 0.0, -1.0], atol=1e-6)
    assert frame.class_probs is None and frame.labels is None and frame.instance_masks is None
    assert frame.intrinsics.fx == SMALL.fx and frame.intrinsics.width_px == 160


def test_tilted_plane_depth_matches_analytic_intersection():
    p0 = np.array([0.3, -0.2, 3.0])
    n_world = np.array([0.3, 0.4, -1.0]) / np.linalg.norm([0.3, 0.4, -1.0])
    T_world_cam = look_at((0.5, 0.2, 0.1), (0.4, 0.0, 3.0), up=(0.0, -1.0, 0.0))
    mesh = _quad(p0, n_world)
    frame = SceneRenderer(mesh, SMALL, CLEAN).render(T_world_cam)
    K = frame.intrinsics.K
    v, u = np.mgrid[0:120, 0:160]
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)], -1)
    rays_world = rays_cam @ T_world_cam[:3, :3].T
    origin = T_world_cam[:3, 3]
    z = ((p0 - origin) @ n_world) / (rays_world @ n_world)  # ray parameter = z-depth (rays have unit z)
    assert np.allclose(frame.ground_truth.depth_m, z, atol=1e-4)
    n_cam = T_world_cam[:3, :3].T @ n_world
    assert np.allclose(frame.ground_truth.normals_cam, n_cam, atol=1e-5)


def test_known_point_projects_to_its_instance():
    wall = _quad((0.0, 6.0, 0.0), (0.0, -1.0, 0.0), instance=1, class_name="wall")
    box_center, box_size = np.array([0.7, 3.0, 1.1]), np.array([0.3, 0.2, 0.4])
    mesh = SceneMesh.from_solids(
        [
            Solid(BOX, translation(*box_center), tuple(box_size), 7, (0.8, 0.2, 0.2)),
        ],
        {7: InstanceInfo(LABELS.id_of("chair"), "chair")},
    )
    merged = SceneMesh(
        vertices=np.vstack([mesh.vertices, wall.vertices]),
        triangles=np.vstack([mesh.triangles, wall.triangles + len(mesh.vertices)]),
        face_class=np.concatenate([mesh.face_class, wall.face_class]),
        face_instance=np.concatenate([mesh.face_instance, wall.face_instance]),
        instances={**mesh.instances, **wall.instances},
    )
    eye = np.array([-0.4, 0.2, 1.5])
    T_world_cam = look_at(eye, (0.5, 3.0, 1.0))
    frame = SceneRenderer(merged, SMALL, CLEAN).render(T_world_cam)
    # centre of the box face that looks towards -y (towards the camera)
    point = box_center - np.array([0.0, box_size[1] / 2, 0.0])
    p_cam = transform_points(invert_pose(T_world_cam), point[None])[0]
    uv, z = project_points(p_cam[None], frame.intrinsics.K)
    u, v = np.round(uv[0]).astype(int)
    assert frame.ground_truth.instances[v, u] == 7
    assert frame.ground_truth.labels[v, u] == LABELS.id_of("chair")
    assert abs(frame.ground_truth.depth_m[v, u] - z[0]) < 0.01
    # the box covers about the pixels its projected corners span
    assert np.count_nonzero(frame.ground_truth.instances == 7) > 50
    assert np.all(frame.ground_truth.instances[frame.ground_truth.labels == LABELS.id_of("wall")] == 1)


def test_pixels_seeing_nothing_are_ignored():
    mesh = _quad((0.0, 0.0, 2.0), (0.0, 0.0, -1.0), size_m=0.5, instance=2, class_name="picture")
    frame = SceneRenderer(mesh, SMALL, DepthNoiseConfig()).render(np.eye(4), rng=np.random.default_rng(0))
    gt = frame.ground_truth
    empty = gt.depth_m == 0
    assert 0.5 < empty.mean() < 0.99
    assert np.all(gt.labels[empty] == LABELS.ignore_id) and np.all(gt.instances[empty] == 0)
    assert np.all(frame.depth_m[empty] == 0) and frame.rgb[empty].mean() < 2.0  # black plus sensor noise
    assert np.all(gt.labels[~empty] == LABELS.id_of("picture"))


def test_depth_noise_grows_with_range_and_is_quantised():
    cfg = DepthNoiseConfig(random_dropout_prob=0.0)
    stds = []
    for dist in (1.0, 4.0):
        mesh = _quad((0.0, 0.0, dist), (0.0, 0.0, -1.0))
        frame = SceneRenderer(mesh, SMALL, cfg).render(np.eye(4), rng=np.random.default_rng(1))
        valid = frame.depth_m > 0
        assert valid.mean() > 0.99
        err = frame.depth_m[valid] - dist
        expected = cfg.sigma_base_m + cfg.sigma_quadratic_per_m * (dist - cfg.sigma_offset_m) ** 2
        assert abs(err.mean()) < 0.2 * expected + 5e-4
        # millimetre rounding adds a uniform error of variance 1/12 mm^2
        assert abs(err.std() - math.sqrt(expected**2 + 1e-6 / 12)) < 0.1 * expected
        assert np.allclose(frame.depth_m[valid] * 1000, np.round(frame.depth_m[valid] * 1000), atol=1e-3)
        stds.append(err.std())
    assert stds[1] > 3 * stds[0]


def test_missing_returns_beyond_range_at_grazing_angles_and_edges():
    cfg = DepthNoiseConfig(random_dropout_prob=0.0)
    floor = _quad((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), size_m=200.0, class_name="floor")
    height = 0.3
    T_world_cam = look_at((0.0, 0.0, height), (3.0, 0.0, 0.0))  # low view over the floor up to the horizon
    frame = SceneRenderer(
        floor, CameraConfig(width_px=320, height_px=240, fx=262.5, fy=262.5, cx=159.5, cy=119.5), cfg
    ).render(T_world_cam, rng=np.random.default_rng(2))
    gt = frame.ground_truth
    ray_length = np.hypot(1.0, np.hypot((np.arange(320) - 159.5) / 262.5, ((np.arange(240) - 119.5) / 262.5)[:, None]))
    with np.errstate(divide="ignore"):
        angle = np.degrees(np.arccos(np.clip(height / (gt.depth_m * ray_length), 0.0, 1.0)))  # incidence on the floor
    seen = (gt.depth_m > cfg.min_range_m) & (gt.depth_m < cfg.max_range_m)
    valid = frame.depth_m > 0
    assert valid[seen & (angle < cfg.grazing_start_deg - 5)].mean() > 0.97
    assert not valid[seen & (angle > cfg.grazing_end_deg)].any()
    assert not valid[gt.depth_m > cfg.max_range_m].any()
    mid = seen & (np.abs(angle - 0.5 * (cfg.grazing_start_deg + cfg.grazing_end_deg)) < 2)
    assert 0.3 < valid[mid].mean() < 0.7

    # a box in front of a wall: pixels on both sides of the silhouette go missing at the edge rate
    depth = np.full((60, 80), 3.0, np.float32)
    depth[20:40, 30:50] = 1.5
    cos_incidence = np.ones_like(depth)
    out = apply_depth_noise(depth, cos_incidence, DepthNoiseConfig(random_dropout_prob=0.0), np.random.default_rng(3))
    edge = np.zeros_like(depth, bool)
    edge[19:41, 29:51] = True
    edge[21:39, 31:49] = False
    assert 0.55 < (out[edge] == 0).mean() < 0.85
    assert (out[~edge] == 0).mean() == 0.0


def test_colour_follows_albedo_and_texture():
    plain = _quad((0.0, 0.0, 2.0), (0.0, 0.0, -1.0), albedo=(0.6, 0.3, 0.1))
    frame = SceneRenderer(plain, SMALL, CLEAN).render(np.eye(4))
    rgb = frame.rgb.reshape(-1, 3).astype(int)
    assert np.all(rgb.std(0) < 1.0)  # flat, untextured, view-independent lighting
    assert rgb[0, 0] > rgb[0, 1] > rgb[0, 2]
    checker = TextureSpec("checker", period_m=0.25, contrast=0.4, offset_m=(0.1, 0.1, 0.1))
    frame = SceneRenderer(_quad((0.0, 0.0, 2.0), (0.0, 0.0, -1.0), texture=checker), SMALL, CLEAN).render(np.eye(4))
    levels = np.unique(frame.rgb[..., 0])
    assert len(levels) == 2 and levels[1] - levels[0] > 30
    noisy = SceneRenderer(plain, SMALL, DepthNoiseConfig()).render(np.eye(4), rng=np.random.default_rng(0))
    diff = noisy.rgb.astype(float) - SceneRenderer(plain, SMALL, CLEAN).render(np.eye(4)).rgb
    assert 1.0 < diff.std() < 3.0


@pytest.fixture(scope="module")
def scene_renderer():
    spec = generate_scene(4)
    return spec, SceneRenderer(spec.build_mesh(), SMALL, DepthNoiseConfig())


def test_rendering_is_deterministic_by_rng_seed(scene_renderer):
    spec, renderer = scene_renderer
    stamp, T = make_trajectory(spec, 0, TrajectoryConfig(num_frames=30), SMALL)[10]
    a = renderer.render(T, stamp, np.random.default_rng(5))
    b = renderer.render(T, stamp, np.random.default_rng(5))
    c = renderer.render(T, stamp, np.random.default_rng(6))
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth_m, b.depth_m)
    assert not np.array_equal(a.depth_m, c.depth_m)
    assert np.array_equal(a.ground_truth.labels, c.ground_truth.labels)


def test_generated_scene_frames_look_like_indoor_rgbd(scene_renderer):
    spec, renderer = scene_renderer
    poses = make_trajectory(spec, 1, TrajectoryConfig(num_frames=300), SMALL)
    rng = np.random.default_rng(0)
    classes = set()
    for stamp, T in poses[::50]:
        frame = renderer.render(T, stamp, rng)
        gt = frame.ground_truth
        assert np.all(gt.depth_m > 0)  # a closed house: every ray hits something
        assert np.all(gt.labels != LABELS.ignore_id) and np.all(gt.instances > 0)
        valid = frame.depth_m > 0
        assert valid.mean() > 0.6
        assert np.median(np.abs(frame.depth_m[valid] - gt.depth_m[valid])) < 0.02
        assert np.allclose(np.linalg.norm(gt.normals_cam, axis=-1), 1.0, atol=1e-4)
        K = frame.intrinsics
        v, u = np.mgrid[0 : K.height_px, 0 : K.width_px]
        rays = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones(u.shape)], -1)
        assert np.all(np.sum(gt.normals_cam * rays, axis=-1) <= 1e-6)  # normals face the camera
        classes |= set(np.unique(gt.labels).tolist())
    assert len(classes) >= 5
