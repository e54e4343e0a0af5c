"""SSR-2D completion: the differentiable TSDF renderer against analytic surfaces and finite
differences, the 3D U-Net (overfits one chunk), checkpoints and their errors."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semantic_mapping.completion.network import (
    CompletionNetwork,
    CompletionNetworkConfig,
    CompletionWeightsError,
    chunk_inputs,
    load_completion_model,
    parameter_count,
    save_completion_model,
)
from semantic_mapping.completion.renderer import pixel_rays_cam, render_volume
from semantic_mapping.geometry.pose import look_at
from semantic_mapping.geometry.projection import intrinsics_from_fov
from semantic_mapping.types import CameraIntrinsics

VOXEL_M = 0.04
N = 32
ORIGIN_M = np.array([-0.62, -0.62, 0.3])  # centre of voxel (0, 0, 0); the volume spans z in [0.3, 1.54]
TRUNC_M = 4 * VOXEL_M
INTR = intrinsics_from_fov(64, 48, 60.0)


def voxel_centres(n=N, origin=ORIGIN_M, voxel_m=VOXEL_M, dtype=torch.float32):  # [n, n, n, 3] world, metres
    idx = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=dtype)] * 3, indexing="ij"), dim=-1)
    return torch.as_tensor(origin, dtype=dtype) + idx * voxel_m


def truncated(sdf_m):  # truncation-normalised, as the map stores it
    return sdf_m.clamp(-TRUNC_M, TRUNC_M) / TRUNC_M


def linear_field(points, coefficients, offsets):  # [..., 3] -> [K, ...]: channel k = a_k . p + b_k
    return torch.einsum("...i,ki->k...", points, coefficients) + offsets.reshape(-1, *[1] * (points.dim() - 1))


def rays_world(intrinsics, T_world_cam):  # [H, W, 3] world offset per metre of depth, float64
    rays = pixel_rays_cam(intrinsics, torch.float64).numpy() @ T_world_cam[:3, :3].T
    return rays.reshape(intrinsics.height_px, intrinsics.width_px, 3)


def inside_volume(points, margin_m=0.0):  # [..., 3] -> [...] bool, within the box of voxel centres
    low = ORIGIN_M + margin_m
    high = ORIGIN_M + (N - 1) * VOXEL_M - margin_m
    return np.all((points >= low) & (points <= high), axis=-1)


# ----------------------------------------------------------------------------- renderer: analytic surfaces
@pytest.mark.parametrize("normal, offset_m, T_world_cam", [
    ((0.0, 0.0, 1.0), 1.0, np.eye(4)),  # fronto-parallel plane z = 1 m
    ((0.3, -0.2, 1.0), 0.95, np.eye(4)),  # tilted plane
    ((0.0, 1.0, 0.4), 0.2, look_at(np.array([0.3, -1.2, 0.2]), np.array([0.0, 0.0, 0.9]))),  # floor-like, oblique camera
])
def test_render_plane_depth_color_semantics(normal, offset_m, T_world_cam):
    n = np.asarray(normal) / np.linalg.norm(normal)
    points = voxel_centres()
    sdf = offset_m - points @ torch.tensor(n, dtype=torch.float32)  # positive on the camera side of n . p = offset
    a_color = torch.tensor([[0.3, 0.1, -0.2], [-0.1, 0.4, 0.2], [0.2, -0.3, 0.1]])
    b_color = torch.tensor([0.5, 0.4, 0.3])
    a_sem = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    b_sem = torch.tensor([0.0, 1.0, -1.0, 2.0])
    color = linear_field(points, a_color, b_color)  # [3, N, N, N]
    semantics = linear_field(points, a_sem, b_sem)  # [4, N, N, N]
    out = render_volume(truncated(sdf), color, semantics, ORIGIN_M, VOXEL_M, INTR, T_world_cam)

    rays = rays_world(INTR, T_world_cam)
    cam = T_world_cam[:3, 3]
    depth_true = (offset_m - n @ cam) / (rays @ n)  # [H, W] z-depth of the plane along each ray
    surface = cam + depth_true[..., None] * rays  # [H, W, 3]
    facing = (rays @ n) > 0  # the ray meets the plane from its positive side
    expected_hit = facing & (depth_true > 0) & inside_volume(surface, margin_m=0.5 * VOXEL_M)
    expected_miss = ~facing | (depth_true <= 0) | ~inside_volume(surface, margin_m=-0.5 * VOXEL_M)
    hit = out.hit.numpy()
    assert expected_hit.sum() > 500
    assert hit[expected_hit].all() and not hit[expected_miss].any()
    err = np.abs(out.depth_m.numpy()[hit] - depth_true[hit])
    assert err.max() < 1e-3 * VOXEL_M  # a linear TSDF is reproduced exactly (up to float32)
    assert (out.depth_m.numpy()[~hit] == 0).all()

    surface_t = torch.as_tensor(surface[hit], dtype=torch.float32)
    np.testing.assert_allclose(out.color.numpy()[hit], linear_field(surface_t, a_color, b_color).T.numpy(), atol=1e-4)
    np.testing.assert_allclose(out.semantics.numpy()[hit], linear_field(surface_t, a_sem, b_sem).T.numpy(), atol=1e-4)
    assert (out.color.numpy()[~hit] == 0).all() and (out.semantics.numpy()[~hit] == 0).all()


def _sphere_depth(cam, rays, centre, radius):  # [H, W] nearest intersection depth, nan where the ray misses
    oc = cam - centre
    a = np.einsum("hwi,hwi->hw", rays, rays)
    b = 2 * rays @ oc
    c = oc @ oc - radius**2
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore"):
        return np.where(disc >= 0, (-b - np.sqrt(disc)) / (2 * a), np.nan)


@pytest.mark.parametrize("T_world_cam", [np.eye(4), look_at(np.array([0.8, -0.5, 0.1]), np.array([0.0, 0.05, 0.95]), up=(0.0, -1.0, 0.0))])
def test_render_sphere_depth(T_world_cam):
    centre, radius = np.array([0.05, -0.03, 0.95]), 0.4
    sdf = (voxel_centres() - torch.tensor(centre, dtype=torch.float32)).norm(dim=-1) - radius
    out = render_volume(truncated(sdf), None, None, ORIGIN_M, VOXEL_M, INTR, T_world_cam)
    rays = rays_world(INTR, T_world_cam)
    cam = T_world_cam[:3, 3]
    depth_true = _sphere_depth(cam, rays, centre, radius)
    # Ray distance to the centre decides hits, away from the silhouette by a voxel.
    unit = rays / np.linalg.norm(rays, axis=-1, keepdims=True)
    miss_distance = np.linalg.norm(np.cross(centre - cam, unit), axis=-1)
    hit = out.hit.numpy()
    assert hit[miss_distance < radius - VOXEL_M].all()
    assert not hit[miss_distance > radius + VOXEL_M].any()
    assert hit.sum() > 300
    err = np.abs(out.depth_m.numpy()[hit] - depth_true[hit])
    # Trilinear interpolation of a curved distance field is off by up to about 3 h^2 / (8 radius)
    # (0.04 voxel here); the depth error grows as 1 / cos of the incidence angle near the silhouette.
    grazing = miss_distance[hit] > radius - VOXEL_M
    assert np.median(err) < 0.04 * VOXEL_M
    assert err[~grazing].max() < 0.1 * VOXEL_M
    assert err.max() < 0.6 * VOXEL_M


def test_render_misses_give_no_hit():
    points = voxel_centres()
    empty = torch.ones(N, N, N)
    assert not render_volume(empty, None, None, ORIGIN_M, VOXEL_M, INTR, np.eye(4)).hit.any()
    # A back face (negative on the camera side, positive behind) is not a surface.
    back = truncated(points[..., 2] - 1.0)
    assert not render_volume(back, None, None, ORIGIN_M, VOXEL_M, INTR, np.eye(4)).hit.any()
    # A volume behind the camera, and a surface beyond depth_max_m, give nothing.
    front = truncated(1.0 - points[..., 2])
    behind = np.eye(4)
    behind[:3, :3] = np.diag([1.0, -1.0, -1.0])  # looking down -z
    assert not render_volume(front, None, None, ORIGIN_M, VOXEL_M, INTR, behind).hit.any()
    assert render_volume(front, None, None, ORIGIN_M, VOXEL_M, INTR, np.eye(4)).hit.any()
    assert not render_volume(front, None, None, ORIGIN_M, VOXEL_M, INTR, np.eye(4), depth_max_m=0.9).hit.any()


def test_render_first_surface_wins():
    """Two parallel walls: the nearer one is rendered, the ray stops there."""
    z = voxel_centres()[..., 2]
    sdf = torch.where(z < 1.1, 0.7 - z, z - 1.1)  # surface at 0.7 facing the camera, back face at 1.1...
    sdf = torch.minimum(sdf.abs(), (1.3 - z).abs()) * torch.sign(sdf)
    sdf = torch.where(z > 1.3, 1.3 - z, sdf)  # ...and a second front face at 1.3
    out = render_volume(truncated(sdf), None, None, ORIGIN_M, VOXEL_M, INTR, np.eye(4))
    assert out.hit.sum() > 500
    np.testing.assert_allclose(out.depth_m[out.hit].numpy(), 0.7, atol=1e-4)


@pytest.mark.parametrize("field", ["smooth", "specks"])
def test_render_empty_space_skipping_changes_nothing(field):
    """Skipping bricks gives the same render as sampling everywhere: on a cluttered smooth random
    field, and on isolated negative voxels (specks under a voxel across, which a ray can clip
    between two coarse samples)."""
    gen = torch.Generator().manual_seed(5)
    if field == "smooth":
        noise = torch.randn(1, 1, 8, 8, 8, generator=gen)
        tsdf = (F.interpolate(noise, size=(N, N, N), mode="trilinear", align_corners=True)[0, 0] - 0.9).clamp(-1, 1)
    else:
        tsdf = torch.ones(N, N, N)
        specks = torch.randint(0, N, (100, 3), generator=gen)
        tsdf[specks[:, 0], specks[:, 1], specks[:, 2]] = -1.0
    color = torch.rand(3, N, N, N, generator=gen)
    K = intrinsics_from_fov(160, 120, 60.0)
    T = look_at(np.array([0.5, -0.4, -0.1]), np.array([0.0, 0.0, 0.9]), up=(0.0, -1.0, 0.0))
    reference = render_volume(tsdf, color, None, ORIGIN_M, VOXEL_M, K, T, skip_brick_voxels=0)
    assert 0.02 < reference.hit.float().mean() < 0.9
    for brick in (1, 2, 4):
        out = render_volume(tsdf, color, None, ORIGIN_M, VOXEL_M, K, T, skip_brick_voxels=brick)
        assert torch.equal(out.hit, reference.hit)
        assert torch.equal(out.depth_m, reference.depth_m) and torch.equal(out.color, reference.color)


def test_render_of_a_fused_chunk_reproduces_the_scene():
    """A chunk read from a fused map (`VoxelMap.read_chunk`), rendered at fusion views, gives the true
    depth and colour where the true surface lies inside the chunk: frames, origin and voxel
    conventions agree with the map's."""
    from semantic_mapping.config import FusionConfig, MapperConfig
    from semantic_mapping.geometry.projection import backproject_depth
    from semantic_mapping.pipeline import Mapper
    from test_fusion import INTR as MAP_INTR, SphereInBox, trajectory

    world, poses = SphereInBox(), trajectory(12)
    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu", chunk_shape_voxels=(48, 48, 48))))
    for i, T in enumerate(poses):
        assert mapper.integrate(world.render(T, i * 33_000_000)).accepted
    voxel_m = mapper.map.voxel_size_m
    chunk = mapper.map.read_chunk((0, -1, 0))  # x in [0, 2.4), y in [-2.4, 0), z in [0, 2.4) m: sphere, walls, floor
    tsdf, observed, color = chunk_inputs(chunk)
    assert observed.float().mean() > 0.05
    origin_m = chunk["origin_index"] * voxel_m
    for T in (poses[2], poses[11]):  # looking into the chunk from outside it, and from inside it
        out = render_volume(tsdf[0], color[0], None, origin_m, voxel_m, MAP_INTR, T)
        truth = world.render(T, 0)
        surface_vox = (backproject_depth(truth.depth_m, MAP_INTR.K) @ T[:3, :3].T + T[:3, 3] - origin_m) / voxel_m
        in_chunk = np.all((surface_vox > 1) & (surface_vox < 46), axis=-1) & (truth.depth_m > 0)  # [H, W]
        assert in_chunk.sum() > 2000
        hit = out.hit.numpy()
        assert hit[in_chunk].mean() > 0.98
        both = in_chunk & hit
        err = np.abs(out.depth_m.numpy() - truth.depth_m)[both]
        assert np.median(err) < 0.25 * voxel_m and np.percentile(err, 95) < 0.75 * voxel_m
        assert np.median(np.abs(out.color.numpy()[both] - truth.rgb[both] / 255.0)) < 0.05


# ----------------------------------------------------------------------------- renderer: gradients
def test_render_gradients_match_finite_differences():
    n, voxel_m = 6, 0.1
    origin = np.array([-0.25, -0.25, 0.6])
    K = CameraIntrinsics(8.0, 8.0, 2.5, 1.5, 6, 4)
    T = look_at(np.array([0.05, -0.02, 0.0]), np.array([0.0, 0.0, 1.0]), up=(0.0, -1.0, 0.0))
    points = voxel_centres(n, origin, voxel_m, torch.float64)
    gen = torch.Generator().manual_seed(3)
    plane_m = 0.83 - points @ torch.tensor([0.1, 0.05, 1.0], dtype=torch.float64)  # [n, n, n] ~distance to a plane
    tsdf = (plane_m / 0.3 + 0.05 * torch.rand(n, n, n, generator=gen, dtype=torch.float64)).requires_grad_(True)
    color = torch.rand(3, n, n, n, generator=gen, dtype=torch.float64, requires_grad=True)
    semantics = torch.randn(2, n, n, n, generator=gen, dtype=torch.float64, requires_grad=True)

    def render(tsdf, color, semantics):
        out = render_volume(tsdf, color, semantics, origin, voxel_m, K, T)
        return out.depth_m, out.color, out.semantics

    assert render(tsdf, color, semantics)[0].gt(0).sum() >= 12  # most pixels see the surface
    assert torch.autograd.gradcheck(render, (tsdf, color, semantics), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)
    # Depth depends on the TSDF only, near the surface; every input gets a gradient.
    depth, rgb, sem = render(tsdf, color, semantics)
    (depth.sum() + rgb.sum() + sem.sum()).backward()
    assert tsdf.grad.abs().sum() > 0 and color.grad.abs().sum() > 0 and semantics.grad.abs().sum() > 0
    far_from_surface = plane_m.abs() > 2 * voxel_m
    assert far_from_surface.any() and (tsdf.grad[far_from_surface] == 0).all()


def test_render_speed_paper_resolution():
    """320 x 256 (the paper's render size) of a 64^3 volume: a floor, a wall and a sphere."""
    K = intrinsics_from_fov(320, 256, 60.0)
    voxel_m = 0.02
    origin = np.array([-0.63, -0.63, 0.4])
    points = voxel_centres(64, origin, voxel_m)
    sdf = torch.minimum((points - torch.tensor([0.1, 0.0, 1.0])).norm(dim=-1) - 0.3, 1.5 - points[..., 2])
    sdf = torch.minimum(sdf, 0.5 - points[..., 1])
    tsdf = (sdf.clamp(-0.08, 0.08) / 0.08).requires_grad_(True)
    color = torch.rand(3, 64, 64, 64, requires_grad=True)
    semantics = torch.randn(14, 64, 64, 64, requires_grad=True)
    render_volume(tsdf, color, semantics, origin, voxel_m, K, np.eye(4))  # warm-up
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        out = render_volume(tsdf, color, semantics, origin, voxel_m, K, np.eye(4))
        seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    (out.depth_m.sum() + out.color.sum() + out.semantics.sum()).backward()
    backward_s = time.perf_counter() - start
    print(f"\nrender 320x256 of 64^3: {min(seconds) * 1000:.0f} ms (best of 3), backward {backward_s * 1000:.0f} ms, "
          f"{out.hit.float().mean():.0%} of pixels hit")
    assert out.hit.float().mean() > 0.5
    assert min(seconds) < 1.0


# ----------------------------------------------------------------------------- network
TINY = CompletionNetworkConfig(num_classes=3, base_channels=4, max_channels=16, num_levels=3)


def _chunk(n=16, seed=0):
    """One chunk: a sphere on a floor, its colour and classes; the input lacks a cube of it."""
    points = voxel_centres(n, np.zeros(3), 0.05)
    sphere = (points - torch.tensor([0.4, 0.35, 0.4])).norm(dim=-1) - 0.22
    floor = points[..., 1] - 0.15
    sdf = torch.minimum(sphere, floor)
    target_tsdf = (sdf.clamp(-0.15, 0.15) / 0.15)[None]  # [1, n, n, n]
    labels = torch.where(sphere < floor, 2, 1)
    labels = torch.where(sdf > 0.1, 0, labels)[None]  # [1, n, n, n] 0 free, 1 floor, 2 sphere
    target_color = torch.stack([0.2 + 0.6 * (labels == 2), 0.3 + 0.5 * (labels == 1), 0.4 + 0.1 * points[None, ..., 0]], 1).float()
    observed = torch.ones_like(target_tsdf, dtype=torch.bool)
    observed[:, 8:, :, 6:12] = False  # a cube the camera never saw
    input_tsdf = torch.where(observed, target_tsdf, torch.ones_like(target_tsdf))
    input_color = target_color * observed[:, None]
    return input_tsdf, observed, input_color, target_tsdf, target_color, labels


def _loss(out, target_tsdf, target_color, labels):
    return ((out["tsdf"] - target_tsdf).abs().mean() + (out["color"] - target_color).abs().mean()
            + F.cross_entropy(out["semantics"], labels))


def test_network_shapes_and_ranges():
    net = CompletionNetwork(TINY)
    tsdf, observed, color, *_ = _chunk()
    out = net(tsdf, observed, color)
    assert out["tsdf"].shape == (1, 16, 16, 16) and out["tsdf"].abs().max() < 1
    assert out["color"].shape == (1, 3, 16, 16, 16) and out["color"].min() > 0 and out["color"].max() < 1
    assert out["semantics"].shape == (1, 3, 16, 16, 16)
    with pytest.raises(ValueError, match="multiple of 4"):
        net(tsdf[:, :14], observed[:, :14], color[:, :, :14])
    blind = CompletionNetwork(CompletionNetworkConfig(num_classes=3, base_channels=4, max_channels=8, num_levels=2,
                                                      use_color=False, use_observed_mask=False))
    assert set(blind(tsdf, observed)) == {"tsdf", "semantics"}


def test_network_overfits_one_chunk():
    torch.manual_seed(0)
    net = CompletionNetwork(TINY)
    tsdf, observed, color, target_tsdf, target_color, labels = _chunk()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        optimiser.zero_grad()
        loss = _loss(net(tsdf, observed, color), target_tsdf, target_color, labels)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    print(f"\noverfit one 16^3 chunk: loss {losses[0]:.3f} -> {losses[-1]:.4f}")
    assert losses[-1] < losses[0] / 10
    # The unseen cube is completed: the predicted surface classes match there.
    with torch.no_grad():
        out = net(tsdf, observed, color)
    unseen = ~observed
    assert (out["semantics"].argmax(1)[unseen] == labels[unseen]).float().mean() > 0.9
    assert (out["tsdf"][unseen] - target_tsdf[unseen]).abs().mean() < 0.1


def test_network_learns_a_chunk_from_renders_only():
    """2D supervision through the renderer (SSR-2D Eq. 1, 3, 4, normalised over valid pixels as in
    Eq. 5): depth, colour and class images of the complete chunk at four views teach the network
    the chunk's geometry; no 3D loss."""
    torch.manual_seed(0)
    net = CompletionNetwork(TINY)
    tsdf, observed, color, target_tsdf, target_color, labels = _chunk()
    voxel_m, origin_m = 0.05, np.zeros(3)
    one_hot = F.one_hot(labels[0], 3).permute(3, 0, 1, 2).float()  # [3, 16, 16, 16]
    K = CameraIntrinsics(30.0, 30.0, 15.5, 11.5, 32, 24)
    views = [look_at(np.array([0.4 + 0.9 * np.cos(a), 1.0, 0.4 + 0.9 * np.sin(a)]), np.array([0.4, 0.3, 0.4]), up=(0, 1, 0))
             for a in np.linspace(0, 2 * np.pi, 4, endpoint=False)]
    targets = [render_volume(target_tsdf[0], target_color[0], one_hot, origin_m, voxel_m, K, T) for T in views]
    assert all(t.hit.float().mean() > 0.3 for t in targets)

    def mismatch(volume):  # [16, 16, 16] -> share of pixels whose hit differs from the target's, worst view
        return max((render_volume(volume, None, None, origin_m, voxel_m, K, T).hit ^ t.hit).float().mean().item()
                   for T, t in zip(views, targets))

    def occupancy_iou(volume):
        return (((volume < 0) & (target_tsdf < 0)).sum() / ((volume < 0) | (target_tsdf < 0)).sum()).item()

    with torch.no_grad():
        start = net(tsdf, observed, color)["tsdf"]
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):
        optimiser.zero_grad()
        out = net(tsdf, observed, color)
        loss = 0.0
        for T, target in zip(views, targets):
            r = render_volume(out["tsdf"][0], out["color"][0], out["semantics"][0], origin_m, voxel_m, K, T)
            valid = r.hit & target.hit
            loss = loss + ((r.depth_m - target.depth_m).abs()[valid].sum() + (r.color - target.color).abs()[valid].sum()
                           + F.cross_entropy(r.semantics[valid], target.semantics[valid].argmax(-1), reduction="sum")
                           ) / valid.sum().clamp_min(1)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    end = out["tsdf"].detach()
    print(f"\nrender-supervised overfit: loss {losses[0]:.2f} -> {np.mean(losses[-5:]):.3f}, hit mismatch "
          f"{mismatch(start[0]):.2f} -> {mismatch(end[0]):.3f}, occupancy IoU {occupancy_iou(start):.2f} -> {occupancy_iou(end):.2f}")
    assert np.mean(losses[-5:]) < losses[0] / 10
    assert mismatch(start[0]) > 0.2 and mismatch(end[0]) < 0.06
    assert occupancy_iou(end) > 0.75


def test_default_network_size_and_speed():
    """The CPU-sized default: forward + backward of a 64^3 chunk on one core."""
    net = CompletionNetwork(CompletionNetworkConfig())
    tsdf = torch.rand(1, 64, 64, 64) * 2 - 1
    observed = torch.rand(1, 64, 64, 64) > 0.3
    color = torch.rand(1, 3, 64, 64, 64)
    start = time.perf_counter()
    out = net(tsdf, observed, color)
    forward_s = time.perf_counter() - start
    (out["tsdf"].sum() + out["color"].sum() + out["semantics"].sum()).backward()
    total_s = time.perf_counter() - start
    print(f"\ncompletion network (default): {parameter_count(net):,} parameters; 64^3 forward {forward_s:.2f} s, "
          f"forward + backward {total_s:.2f} s")
    assert total_s < 15.0


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    net = CompletionNetwork(TINY).eval()
    tsdf, observed, color, *_ = _chunk()
    path = tmp_path / "weights" / "completion.pt"
    save_completion_model(path, net, meta={"steps": 0})
    loaded = load_completion_model(path, num_classes=3)
    assert loaded.config == TINY and not loaded.training
    with torch.no_grad():
        before, after = net(tsdf, observed, color), loaded(tsdf, observed, color)
    for key in before:
        assert torch.equal(before[key], after[key])
    assert [p.name for p in path.parent.iterdir()] == ["completion.pt"]  # no temporary file left
    with pytest.raises(CompletionWeightsError, match="trained for 3 classes, the label space has 5"):
        load_completion_model(path, num_classes=5)


def test_checkpoint_errors_name_the_path(tmp_path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(CompletionWeightsError, match="no completion weights at .*nowhere.pt.*without completion"):
        load_completion_model(missing)
    corrupt = tmp_path / "corrupt.pt"
    save_completion_model(corrupt, CompletionNetwork(TINY))
    corrupt.write_bytes(corrupt.read_bytes()[:200])  # truncated
    with pytest.raises(CompletionWeightsError, match="corrupt.pt are unreadable"):
        load_completion_model(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"format": "something else"}, other)
    with pytest.raises(CompletionWeightsError, match="other.pt is not a completion checkpoint"):
        load_completion_model(other)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "semantic_mapping.completion", "config": TINY}, pickled)  # an object, not plain types
    with pytest.raises(CompletionWeightsError, match="pickled.pt are unreadable"):
        load_completion_model(pickled)
