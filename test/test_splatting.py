"""Gaussian-splat renders: the CPU rasteriser against a per-pixel reference and a known footprint,
the map's Gaussians, incremental updates, agreement with the raycast render, gsplat on CUDA."""

import numpy as np
import pytest
import torch

from semantic_mapping.geometry.pose import interpolate_pose
from semantic_mapping.config import FusionConfig, MapperConfig, SplattingConfig
from semantic_mapping.pipeline import Mapper
from semantic_mapping.splatting.gaussians import GaussianScene, quaternions_from_normals
from semantic_mapping.splatting.render import MAX_ALPHA, MIN_ALPHA, MIN_TRANSMITTANCE, rasterize_cpu, resolve_backend
from semantic_mapping.types import CameraIntrinsics
from test_fusion import INTR, LS, trajectory, world  # noqa: F401

SMALL = CameraIntrinsics(40.0, 40.0, 15.5, 11.5, 32, 24)


def _project(point_cam, K):  # [3] -> [2] pixel coordinates (centres at integers)
    return np.array([K.fx * point_cam[0] / point_cam[2] + K.cx, K.fy * point_cam[1] / point_cam[2] + K.cy])


def reference_composite(means, covs, opacities, features, T_cam_world, K):
    """Per pixel, per Gaussian in depth order: the 3DGS composite, with a numerical projection Jacobian."""
    R, t = T_cam_world[:3, :3], T_cam_world[:3, 3]
    cam = means @ R.T + t
    order = np.argsort(cam[:, 2])
    centres, conics = [], []
    for i in range(len(means)):
        J = np.zeros((2, 3))
        for k in range(3):  # central differences of the projection at the camera-frame mean
            step = np.eye(3)[k] * 1e-5
            J[:, k] = (_project(cam[i] + step, K) - _project(cam[i] - step, K)) / 2e-5
        cov2 = J @ R @ covs[i] @ R.T @ J.T + 0.3 * np.eye(2)
        centres.append(_project(cam[i], K))
        conics.append(np.linalg.inv(cov2))
    out = np.zeros((K.height_px, K.width_px, features.shape[1] + 2))
    for v in range(K.height_px):
        for u in range(K.width_px):
            T = 1.0
            for i in order:
                d = np.array([u, v]) - centres[i]
                alpha = min(MAX_ALPHA, opacities[i] * np.exp(-0.5 * d @ conics[i] @ d))
                if alpha < MIN_ALPHA:
                    continue
                if T * (1 - alpha) <= MIN_TRANSMITTANCE:
                    break
                out[v, u] += alpha * T * np.concatenate([features[i], [cam[i, 2], 1.0]])
                T *= 1 - alpha
    return out


def random_gaussians(rng, n):
    means = rng.uniform([-0.6, -0.4, 1.5], [0.6, 0.4, 3.0], (n, 3))
    normals = rng.normal(size=(n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    scales = rng.uniform(0.03, 0.15, (n, 1))
    flat = rng.uniform(0.1, 1.0, (n, 1)) * scales
    covs = scales[:, :, None] ** 2 * np.eye(3) + (flat**2 - scales**2)[:, :, None] * normals[:, :, None] * normals[:, None, :]
    opacities = rng.uniform(0.2, 0.99, n)
    features = rng.uniform(0, 1, (n, 4))
    return means, covs, opacities, features


def test_cpu_rasteriser_matches_per_pixel_reference():
    rng = np.random.default_rng(0)
    means, covs, opacities, features = random_gaussians(rng, 40)
    T_cam_world = np.eye(4)
    T_cam_world[:3, :3] = np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]])
    T_cam_world[:3, 3] = [0.05, -0.1, 0.2]
    expected = reference_composite(means, covs, opacities, features, T_cam_world, SMALL)
    image, depth, alpha = rasterize_cpu(*(torch.tensor(a, dtype=torch.float32) for a in (means, covs, opacities, features)),
                                        torch.tensor(T_cam_world, dtype=torch.float32), SMALL)
    assert expected[..., -1].max() > 0.9 and (expected[..., -1] == 0).any()  # overlaps and empty pixels
    np.testing.assert_allclose(image.numpy(), expected[..., :4], atol=2e-4)
    np.testing.assert_allclose(depth.numpy(), expected[..., 4], atol=1e-3)
    np.testing.assert_allclose(alpha.numpy(), expected[..., 5], atol=2e-4)


def test_a_known_gaussian_renders_to_its_known_footprint():
    """An isotropic Gaussian facing the camera: alpha = o exp(-r^2 / (2 (f sigma / z)^2 + 0.6)), cut at 1/255."""
    K = CameraIntrinsics(100.0, 100.0, 20.0, 15.0, 41, 31)
    sigma_m, z_m, opacity = 0.1, 2.0, 0.8
    image, depth, alpha = rasterize_cpu(
        torch.tensor([[0.0, 0.0, z_m]]), torch.eye(3)[None] * sigma_m**2, torch.tensor([opacity]),
        torch.ones(1, 1), torch.eye(4), K)
    v, u = np.mgrid[0:31, 0:41]
    var_px = (K.fx * sigma_m / z_m) ** 2 + 0.3
    expected = opacity * np.exp(-0.5 * ((u - 20.0) ** 2 + (v - 15.0) ** 2) / var_px)
    expected[expected < MIN_ALPHA] = 0.0
    np.testing.assert_allclose(alpha.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(image[..., 0].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(depth.numpy(), expected * z_m, atol=1e-4)
    footprint = int((expected > 0).sum())
    assert 100 < footprint < 41 * 31  # cut inside the image, by opacity


def test_quaternions_turn_z_onto_the_normal():
    normals = torch.nn.functional.normalize(torch.randn(50, 3), dim=1)
    normals[0] = torch.tensor([0.0, 0.0, -1.0])
    q = quaternions_from_normals(normals)
    w, x, y, z = q.unbind(1)
    rotated_z = torch.stack([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)], 1)
    torch.testing.assert_close(rotated_z, normals, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def mapped(world):  # noqa: F811
    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu")))
    poses = trajectory()
    scene = GaussianScene(LS.num_classes, mapper.voxel_size_m, SplattingConfig())
    sizes = []
    for i, T in enumerate(poses[:12]):
        assert mapper.integrate(world.render(T, i * 33_000_000)).accepted
        sizes.append((scene.update(mapper.map), len(scene)))
    return mapper, scene, sizes


def _sorted_fields(scene):
    keys = np.round(scene.means_m.numpy() / 1e-4).astype(np.int64)
    order = np.lexsort(keys.T)
    return {name: getattr(scene, name).numpy()[order] for name in GaussianScene.FIELDS}


def test_incremental_updates_equal_a_scene_built_from_scratch(mapped, world):  # noqa: F811
    mapper, scene, sizes = mapped
    assert all(blocks > 0 for blocks, _ in sizes)
    assert scene.update(mapper.map) == 0  # nothing changed since the last update
    assert len(scene) == len(GaussianScene.from_map(mapper.map))
    incremental, rebuilt = _sorted_fields(scene), _sorted_fields(GaussianScene.from_map(mapper.map))
    for name in GaussianScene.FIELDS:
        np.testing.assert_allclose(incremental[name], rebuilt[name], atol=1e-6, err_msg=name)


def test_gaussians_lie_on_the_surface_and_carry_the_labels(mapped):
    from test_fusion import analytic_sdf

    mapper, scene, _ = mapped
    means = scene.means_m.numpy()
    assert len(scene) > 1000
    assert np.median(np.abs(analytic_sdf(means))) < 0.25 * mapper.voxel_size_m
    probs = scene.class_probs.numpy()
    labelled = probs.sum(1) > 0
    assert labelled.mean() > 0.95
    np.testing.assert_allclose(probs[labelled].sum(1), 1.0, atol=1e-4)
    values = mapper.map.voxel_values(mapper.map.voxel_indices(means[labelled]))
    assert (probs[labelled].argmax(1) == values["labels"]).mean() > 0.9


def test_render_agrees_with_the_raycast_render_and_the_truth(mapped, world):  # noqa: F811
    mapper, scene, _ = mapped
    T = interpolate_pose(trajectory()[4], trajectory()[5], 0.5)  # a pose the map never integrated
    truth = world.render(T, 0)
    rendered = scene.render(INTR, T)
    raycast = mapper.render(INTR, T)
    both = (rendered.labels != LS.ignore_id) & (raycast.labels != LS.ignore_id)
    assert both.mean() > 0.85
    assert both.sum() > 0.97 * (raycast.labels != LS.ignore_id).sum()
    assert (rendered.labels[both] == raycast.labels[both]).mean() > 0.95
    assert (rendered.labels[both] == truth.labels[both]).mean() > 0.95
    solid = (rendered.depth_m > 0) & (truth.depth_m > 0)
    assert np.median(np.abs(rendered.depth_m[solid] - truth.depth_m[solid])) < 0.02
    assert rendered.rgb.shape == (INTR.height_px, INTR.width_px, 3) and rendered.rgb.dtype == np.uint8
    np.testing.assert_allclose(rendered.class_probs[both].sum(-1), 1.0, atol=1e-4)


def test_scene_starts_over_after_a_map_reset(mapped, world):  # noqa: F811
    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu")))
    for i, T in enumerate(trajectory()[:3]):
        assert mapper.integrate(world.render(T, i * 33_000_000)).accepted
    scene = GaussianScene.from_map(mapper.map)
    assert len(scene) > 0
    mapper.reset()
    scene.update(mapper.map)
    assert len(scene) == 0
    empty = scene.render(INTR, trajectory()[0])
    assert (empty.labels == LS.ignore_id).all() and (empty.alpha == 0).all()


def test_gsplat_backend_is_refused_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match="gsplat"):
        resolve_backend("gsplat", torch.device("cpu"))
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("opengl", torch.device("cpu"))
    assert resolve_backend("auto", torch.device("cpu")) == "cpu"


def test_cpu_rasteriser_matches_gsplat_on_cuda(mapped):
    """Run on a GPU machine: our renderer and gsplat's composite of the same scene agree."""
    from semantic_mapping.splatting.render import gsplat_available, render_scene

    if not gsplat_available():
        pytest.skip("needs CUDA and gsplat")
    mapper, scene, _ = mapped
    cuda_scene = GaussianScene(scene.num_classes, scene.voxel_size_m, scene.config, device="cuda")
    for name in GaussianScene.FIELDS:
        setattr(cuda_scene, name, getattr(scene, name).cuda())
    T = trajectory()[14]
    ours, theirs = render_scene(scene, INTR, T, "cpu"), render_scene(cuda_scene, INTR, T, "gsplat")
    assert np.abs(ours.alpha - theirs.alpha).mean() < 0.01
    assert (ours.labels == theirs.labels).mean() > 0.98
    solid = (ours.depth_m > 0) & (theirs.depth_m > 0)
    assert np.median(np.abs(ours.depth_m[solid] - theirs.depth_m[solid])) < 0.005


def test_render_cli_writes_the_three_views(mapped, tmp_path, capsys):
    import cv2

    from semantic_mapping.cli import main

    mapper, _, _ = mapped
    mapper.save(tmp_path / "map.npz")
    out = tmp_path / "view.png"
    assert main(["render", str(tmp_path / "map.npz"), "--look-at", "1.4,0,1.3,0,0,0.6", "--width", "160",
                 "--height", "120", "--out", str(out)]) == 0
    image = cv2.imread(str(out))
    assert image.shape == (120, 3 * 160, 3)
    assert "Gaussians" in capsys.readouterr().out
    assert main(["render", str(tmp_path / "map.npz"), "--pose", "1,2,3", "--out", str(out)]) == 2
    assert "7 comma-separated numbers" in capsys.readouterr().err
    assert main(["render", str(tmp_path / "missing.npz"), "--look-at", "1,0,1,0,0,0", "--out", str(out)]) == 2
