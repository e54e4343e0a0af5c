"""Keyframe buffer (selection, eviction, overlap) and multi-view sampling for soft voting."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from semantic_mapping.geometry import invert_pose, look_at
from semantic_mapping.semantics.keyframes import KeyframeBuffer, KeyframeConfig, sample_views, view_overlap
from semantic_mapping.types import CameraIntrinsics, Frame

W, H = 64, 48
INTR = CameraIntrinsics(32.0, 32.0, 31.5, 23.5, W, H)  # image width at 2 m depth: 4 m
C = 5


def pose(position_m, yaw_deg=0.0):
    """Camera at `position_m` looking along +z of the world, turned by yaw about its own y axis."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("y", yaw_deg, degrees=True).as_matrix()
    T[:3, 3] = position_m
    return T


def wall_frame(T_world_cam, stamp_ns=0, depth_m=2.0, class_probs=None, rgb=None):
    """A frame of a fronto-parallel wall at `depth_m` with uniform semantics unless given."""
    if class_probs is None:
        class_probs = np.full((H, W, C), 1.0 / C, np.float32)
    if rgb is None:
        rgb = np.full((H, W, 3), 128, np.uint8)
    return Frame(rgb=rgb, depth_m=np.full((H, W), depth_m, np.float32), intrinsics=INTR,
                 T_world_cam=T_world_cam, stamp_ns=stamp_ns, class_probs=class_probs)


def motion_only(**kwargs):
    """Config whose overlap test never fires (max_overlap 0)."""
    return KeyframeConfig(max_overlap=0.0, downsample=1, **kwargs)


# ----------------------------------------------------------------------------- selection and eviction
def test_keyframes_follow_motion_thresholds_and_the_buffer_stays_bounded():
    config = motion_only(max_keyframes=4, min_translation_m=0.1, min_rotation_deg=10.0)
    buffer = KeyframeBuffer(config, C)
    # 20 frames along x at 0.03 m, then 20 frames turning in place at 3 deg per frame.
    poses = [pose([0.03 * i, 0, 0]) for i in range(20)] + [pose([0.57, 0, 0], 3.0 * i) for i in range(1, 21)]
    added = []
    for i, T in enumerate(poses):
        if buffer.consider(wall_frame(T, stamp_ns=i)):
            added.append(i)
        assert len(buffer) <= config.max_keyframes
    # every 4th frame moves >= 0.1 m (0.12) from the last keyframe; 3 frames only 0.09 m.
    # Frame 19 is 0.09 m past keyframe 16; the turn reaches 12 deg at frames 23, 27, ... (3 deg is not enough).
    assert added == [0, 4, 8, 12, 16, 23, 27, 31, 35, 39]
    assert len(buffer) == config.max_keyframes
    assert buffer.keyframes[-1].stamp_ns == 39


def test_eviction_drops_the_most_redundant_keyframe_oldest_among_ties():
    config = motion_only(max_keyframes=3, min_translation_m=1.0, min_rotation_deg=30.0)
    buffer = KeyframeBuffer(config, C)

    def stamps():
        return [kf.stamp_ns for kf in buffer.keyframes]

    assert buffer.consider(wall_frame(pose([0.0, 0, 0]), 0))
    assert not buffer.consider(wall_frame(pose([0.9, 0, 0], 29.0), 1))  # below both thresholds
    assert buffer.consider(wall_frame(pose([3.0, 0, 0]), 2))
    assert buffer.consider(wall_frame(pose([4.2, 0, 0]), 3))
    assert stamps() == [0, 2, 3]
    # Full: nearest-neighbour scores 3.0 (stamp 0), 1.2 (stamp 2), 1.2 (stamp 3); the new keyframe is exempt.
    assert buffer.consider(wall_frame(pose([8.0, 0, 0]), 4))
    assert stamps() == [0, 3, 4]  # stamp 2 goes although stamp 0 is older
    # Turning 40 deg in place: score of stamp 4 is 40/30 < 3.8 (stamp 3) < 4.2 (stamp 0).
    assert buffer.consider(wall_frame(pose([8.0, 0, 0], 40.0), 5))
    assert stamps() == [0, 3, 5]
    # Equal spacing: all scores tie at 1.25, the oldest goes.
    buffer = KeyframeBuffer(config, C)
    for i in range(4):
        assert buffer.consider(wall_frame(pose([1.25 * i, 0, 0]), i))
    assert stamps() == [1, 2, 3]


def test_view_overlap_selects_keyframes_when_the_view_changes():
    config = KeyframeConfig(max_overlap=0.8, min_translation_m=10.0, min_rotation_deg=90.0, downsample=2,
                            overlap_grid_stride_px=4)
    buffer = KeyframeBuffer(config, C)
    assert buffer.consider(wall_frame(pose([0, 0, 0])))
    kf = buffer.keyframes[0]
    assert view_overlap(wall_frame(pose([0, 0, 0])), kf, config) == pytest.approx(1.0)
    # 1 m sideways at 2 m of a 4 m wide view: a quarter of the grid leaves the keyframe's image.
    assert view_overlap(wall_frame(pose([1.0, 0, 0])), kf, config) == pytest.approx(0.75)
    assert view_overlap(wall_frame(pose([0, 0, 0], 180.0)), kf, config) == 0.0  # behind the keyframe
    # Same pixels but 1 m behind the keyframe's wall: occluded there.
    assert view_overlap(wall_frame(pose([0, 0, -1.0]), depth_m=4.0), kf, config) == 0.0
    assert not buffer.consider(wall_frame(pose([0.4, 0, 0])))  # overlap 0.875
    assert buffer.consider(wall_frame(pose([1.0, 0, 0])))  # overlap 0.75, moved far less than 10 m


# ----------------------------------------------------------------------------- sampling
def smooth_field(rng, channels, h, w):
    """[h, w, channels] float32: random low-frequency sinusoids."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    field = np.zeros((h, w, channels))
    for _ in range(3):
        fu, fv, phase = rng.uniform(0.05, 0.4, channels), rng.uniform(0.05, 0.4, channels), rng.uniform(0, 6, channels)
        field += np.sin(u[..., None] * fu + v[..., None] * fv + phase)
    return field.astype(np.float32)


def random_frame(rng, T_world_cam, stamp_ns):
    logits = 2.0 * smooth_field(rng, C, H, W)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    rgb = (127.5 + 127.0 * np.tanh(smooth_field(rng, 3, H, W))).astype(np.uint8)
    return Frame(rgb=rgb, depth_m=np.full((H, W), 3.0, np.float32), intrinsics=INTR, T_world_cam=T_world_cam,
                 stamp_ns=stamp_ns, class_probs=probs.astype(np.float32))


D = 4
ENCODER_WEIGHTS = torch.randn(D, 3, generator=torch.Generator().manual_seed(0))


def encoder(rgb):  # [B, 3, h, w] -> [B, D, h, w]
    return torch.tanh(torch.einsum("dc,bchw->bdhw", ENCODER_WEIGHTS, 4.0 * rgb - 2.0))


def bilinear(image, u, v):
    """image [ch, h, w] at pixel (u, v), integer = pixel centre, border values held; explicit 4 neighbours."""
    h, w = image.shape[1:]
    u, v = min(max(u, 0.0), w - 1.0), min(max(v, 0.0), h - 1.0)
    u0, v0 = int(np.floor(u)), int(np.floor(v))
    u1, v1 = min(u0 + 1, w - 1), min(v0 + 1, h - 1)
    a, b = u - u0, v - v0
    return ((1 - a) * (1 - b) * image[:, v0, u0] + a * (1 - b) * image[:, v0, u1]
            + (1 - a) * b * image[:, v1, u0] + a * b * image[:, v1, u1])


def reference_views(buffer, point, num_views):
    """Slow per-view loop: [(keyframe index, uv, z)] of the nearest keyframes that see the point."""
    seen = []
    for k, kf in enumerate(buffer.keyframes):
        p = invert_pose(kf.T_world_cam) @ np.append(point, 1.0)
        if p[2] <= 0:
            continue
        u = kf.intrinsics.fx * p[0] / p[2] + kf.intrinsics.cx
        v = kf.intrinsics.fy * p[1] / p[2] + kf.intrinsics.cy
        w, h = kf.intrinsics.width_px, kf.intrinsics.height_px
        if -0.5 <= u <= w - 0.5 and -0.5 <= v <= h - 0.5:
            seen.append((np.linalg.norm(point - kf.T_world_cam[:3, 3]), k, (u, v), p[2]))
    return [s[1:] for s in sorted(seen)[:num_views]]


@pytest.fixture(scope="module")
def ring():
    """Six keyframes on a ring of radius 3 m, looking at the origin, with random smooth images."""
    rng = np.random.default_rng(1)
    buffer = KeyframeBuffer(KeyframeConfig(downsample=2, min_translation_m=0.01, max_keyframes=8), C, encoder)
    for i in range(6):
        angle = 2 * np.pi * i / 6 + rng.uniform(-0.2, 0.2)
        eye = [3.0 * np.cos(angle), 3.0 * np.sin(angle), rng.uniform(-0.5, 0.5)]
        assert buffer.consider(random_frame(rng, look_at(eye, [0, 0, 0]), i))
    return buffer


def test_sample_views_matches_a_per_point_reference(ring):
    rng = np.random.default_rng(2)
    num_views = 4
    inside = rng.uniform(-1.2, 1.2, (300, 3))  # seen by several keyframes, often more than 4
    wide = rng.uniform(-6.0, 6.0, (200, 3))  # many outside some images or behind cameras
    behind = np.stack([kf.T_world_cam[:3, 3] - 0.5 * kf.T_world_cam[:3, 2] for kf in ring.keyframes])
    points = np.concatenate([inside, wide, behind])  # [P, 3]
    got = sample_views(ring, torch.from_numpy(points), num_views, chunk_points=97)

    cases = {"more than N see it": 0, "1 to N-1 see it": 0, "none sees it": 0}
    for i, x in enumerate(points):
        all_views = reference_views(ring, x, len(ring))
        ref = all_views[:num_views]
        assert got.view_index[i].tolist() == [k for k, _, _ in ref] + [-1] * (num_views - len(ref))
        assert got.valid[i].tolist() == [True] * len(ref) + [False] * (num_views - len(ref))
        cases["more than N see it"] += len(all_views) > num_views
        cases["1 to N-1 see it"] += 0 < len(all_views) < num_views
        cases["none sees it"] += len(all_views) == 0
        for s, (k, (u, v), z) in enumerate(ref):
            kf = ring.keyframes[k]
            np.testing.assert_allclose(got.probs[i, s], bilinear(kf.probs.numpy(), u, v), atol=1e-5)
            np.testing.assert_allclose(got.features[i, s], bilinear(kf.features.numpy(), u, v), atol=1e-5)
            np.testing.assert_allclose(got.pixel_uv[i, s], [u, v], atol=1e-3)
            np.testing.assert_allclose(got.depth_in_view_m[i, s], z, atol=1e-5)
            np.testing.assert_allclose(got.displacement_m[i, s], x - kf.T_world_cam[:3, 3], atol=1e-5)
        for field in (got.probs, got.features, got.displacement_m, got.pixel_uv, got.depth_in_view_m):
            assert torch.all(field[i, len(ref):] == 0)
    assert all(n >= 20 for n in cases.values()), cases  # every case was exercised
    for j in range(len(behind)):  # a point behind a camera is never sampled in it
        assert j not in got.view_index[len(points) - len(behind) + j].tolist()
    whole = sample_views(ring, torch.from_numpy(points), num_views)  # one chunk gives the same
    assert torch.equal(whole.view_index, got.view_index) and torch.allclose(whole.probs, got.probs, atol=1e-6)


def test_sample_views_shapes_without_encoder_and_with_an_empty_buffer():
    buffer = KeyframeBuffer(KeyframeConfig(downsample=2, views_per_voxel=3), C)
    empty = sample_views(buffer, torch.zeros(7, 3))
    assert empty.view_index.shape == (7, 3) and (empty.view_index == -1).all() and empty.features is None
    buffer.consider(random_frame(np.random.default_rng(0), pose([0, 0, -2.0]), 0))
    got = sample_views(buffer, torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -3.0]]))
    assert got.probs.shape == (2, 3, C) and got.features is None
    assert got.valid.tolist() == [[True, False, False], [False, False, False]]
    np.testing.assert_allclose(got.probs[0, 0].sum(), 1.0, atol=1e-5)


def test_a_point_on_a_pixel_centre_samples_exactly_that_pixel():
    ds = 4
    rng = np.random.default_rng(3)
    probs_full = rng.dirichlet(np.ones(C), (H, W)).astype(np.float32)  # rough: neighbours differ a lot
    T = look_at([0.3, -0.2, -2.0], [0.1, 0.1, 1.0])
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth_m = rng.uniform(1.0, 3.0, (H, W)).astype(np.float32)
    depth_m[rng.uniform(size=(H, W)) < 0.3] = 0.0
    depth_m[:ds, :ds] = 0.0  # a block without any reading
    buffer = KeyframeBuffer(KeyframeConfig(downsample=ds), C)
    buffer.consider(Frame(rgb=rgb, depth_m=depth_m, intrinsics=INTR, T_world_cam=T, class_probs=probs_full))
    kf = buffer.keyframes[0]
    assert kf.probs.shape == (C, H // ds, W // ds)
    np.testing.assert_allclose(  # block means
        kf.rgb_small.permute(1, 2, 0), (rgb / 255.0).reshape(H // ds, ds, W // ds, ds, 3).mean((1, 3)), atol=1e-6)
    valid_depth = np.where(depth_m > 0, depth_m, np.inf).reshape(H // ds, ds, W // ds, ds).min((1, 3))
    np.testing.assert_allclose(kf.depth_small, np.where(np.isinf(valid_depth), 0.0, valid_depth))  # nearest valid
    assert kf.depth_small[0, 0] == 0

    def point_at(u, v, z_m=1.0):  # world point at stored pixel (u, v): full-res ds*u + (ds-1)/2, depth z_m
        u_full, v_full = ds * u + (ds - 1) / 2, ds * v + (ds - 1) / 2
        p_cam = np.array([(u_full - INTR.cx) / INTR.fx, (v_full - INTR.cy) / INTR.fy, 1.0]) * z_m
        return torch.from_numpy((T[:3, :3] @ p_cam + T[:3, 3])[None])  # [1, 3]

    for u, v in [(0, 0), (3, 2), (W // ds - 1, H // ds - 1), (7, 5)]:
        block = probs_full[ds * v: ds * v + ds, ds * u: ds * u + ds].reshape(-1, C).mean(0)
        np.testing.assert_allclose(kf.probs[:, v, u], block, atol=1e-6)  # the stored pixel is its block's mean
        z_m = rng.uniform(0.5, 5.0)
        got = sample_views(buffer, point_at(u, v, z_m), 1)
        np.testing.assert_allclose(got.pixel_uv[0, 0], [u, v], atol=1e-4)
        np.testing.assert_allclose(got.probs[0, 0], kf.probs[:, v, u], atol=1e-5)
        np.testing.assert_allclose(got.depth_in_view_m[0, 0], z_m, rtol=1e-5)
    # Between the outer edge and the border pixel centres, the border pixel's value holds.
    for (u, v), (cu, cv) in [((-0.45, -0.3), (0, 0)), ((W // ds - 0.6, 1.0), (W // ds - 1, 1))]:
        got = sample_views(buffer, point_at(u, v), 1)
        assert got.valid[0, 0]
        np.testing.assert_allclose(got.probs[0, 0], kf.probs[:, cv, cu], atol=1e-5)
    # Half a pixel right of a centre: the mean of the two neighbours; past the outer edge: no view.
    got = sample_views(buffer, point_at(3.5, 2), 1)
    np.testing.assert_allclose(got.probs[0, 0], (kf.probs[:, 2, 3] + kf.probs[:, 2, 4]) / 2, atol=1e-5)
    assert not sample_views(buffer, point_at(-0.55, 2), 1).valid.any()


def test_label_frames_store_the_bayesian_pixel_probabilities():
    labels = np.zeros((H, W), np.int32)
    labels[:, W // 2:] = 2
    labels[: H // 2, : W // 2] = 255  # ignore: no semantics
    frame = Frame(rgb=np.zeros((H, W, 3), np.uint8), depth_m=np.full((H, W), 2.0, np.float32), intrinsics=INTR,
                  T_world_cam=np.eye(4), labels=labels, label_confidence=np.full((H, W), 0.6, np.float32))
    buffer = KeyframeBuffer(KeyframeConfig(downsample=4), C)
    buffer.consider(frame)
    probs = buffer.keyframes[0].probs
    np.testing.assert_allclose(probs[:, -1, -1], [0.1, 0.1, 0.6, 0.1, 0.1], atol=1e-6)
    np.testing.assert_allclose(probs[:, -1, 0], [0.6, 0.1, 0.1, 0.1, 0.1], atol=1e-6)
    assert torch.all(probs[:, 0, 0] == 0)
    with pytest.raises(ValueError, match="no semantics"):
        KeyframeBuffer(KeyframeConfig(), C).consider(Frame(rgb=frame.rgb, depth_m=frame.depth_m, intrinsics=INTR,
                                                           T_world_cam=np.eye(4)))
