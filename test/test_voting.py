"""Soft voting: feature sampling against the keyframe sampler, Eq. 4 in both vote spaces, gradients."""

import math

import numpy as np
import torch

from semantic_mapping.semantics.keyframes import KeyframeBuffer, sample_views
from semantic_mapping.semantics.voting import CUE_DIM, GEOMETRY_DIM, VotingNet, sample_maps, view_cues
from semantic_mapping.semantics.voting_data import facing_camera
from test_keyframes import C, motion_only, pose, wall_frame


def _smooth_image(rng, h, w, ch):
    v, u = np.mgrid[0:h, 0:w] / max(h, w)
    phases = rng.uniform(0, 2 * np.pi, (ch, 2))
    return np.stack([np.sin(3 * u + a) * np.cos(2 * v + b) for a, b in phases], -1).astype(np.float32)


def test_sample_maps_matches_the_keyframe_sampler():
    rng = np.random.default_rng(0)
    encoder = lambda rgb: torch.cat([rgb, rgb[:, :1] * 2.0], dim=1)  # noqa: E731  [B, 4, h, w], smooth
    buffer = KeyframeBuffer(motion_only(min_translation_m=0.1), C, encoder)
    for i, x in enumerate((0.0, 0.5, 1.0)):
        rgb = (255 * (0.5 + 0.5 * _smooth_image(rng, 48, 64, 3))).astype(np.uint8)
        assert buffer.consider(wall_frame(pose([x, 0, 0]), stamp_ns=i, rgb=rgb))
    points = torch.tensor(np.c_[rng.uniform(-1, 2, 300), rng.uniform(-0.7, 0.7, 300), np.full(300, 2.0)], dtype=torch.float32)
    samples = sample_views(buffer, points, 3)
    assert samples.valid.sum() > 300
    ours = sample_maps(buffer.features, samples.view_index.where(samples.valid, -1), samples.pixel_uv)
    np.testing.assert_allclose(ours.numpy(), samples.features.numpy(), atol=1e-5)


def test_combine_is_equation_4_in_probability_and_logit_space():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(50, 4, C), -1)  # [P, N, C]
    valid = torch.rand(50, 4) > 0.3
    valid[0] = False  # a point no view sees
    logits = torch.randn(50, 4).masked_fill(~valid, -torch.inf)
    weights = torch.softmax(logits.masked_fill(~valid, -1e9), -1) * valid
    s = VotingNet(C, vote_space="probabilities").combine(probs, logits)
    expected = (weights[..., None] * probs).sum(1)
    expected[0] = 0
    torch.testing.assert_close(s, expected)
    assert torch.allclose(s[1:].sum(-1), torch.ones(49))
    g = VotingNet(C, vote_space="logits").combine(probs, logits)
    geometric = torch.exp((weights[..., None] * torch.log(probs + 1e-6)).sum(1))
    expected = geometric / geometric.sum(-1, keepdim=True)
    expected[0] = 0
    torch.testing.assert_close(g, expected)


def test_votes_are_differentiable_end_to_end_and_ignore_invalid_views():
    torch.manual_seed(0)
    net = VotingNet(C, feature_dim=8)
    rgb = torch.rand(3, 3, 24, 32, requires_grad=False)
    features = net.encoder(rgb)  # [K, 8, 24, 32]
    P, N = 40, 3
    view_index = torch.randint(0, 3, (P, N))
    valid = torch.rand(P, N) > 0.2
    uv = torch.rand(P, N, 2) * torch.tensor([31.0, 23.0])
    probs = torch.softmax(torch.randn(P, N, C), -1)
    displacement = torch.randn(P, N, 3)
    normal = torch.nn.functional.normalize(torch.randn(P, 3), dim=1)
    cues = view_cues(probs, valid, displacement, uv, normal, (32, 24))
    assert cues.shape == (P, N, CUE_DIM) and torch.isfinite(cues).all()
    geometry = torch.randn(P, GEOMETRY_DIM)
    sampled = sample_maps(features, view_index.where(valid, -1), uv)
    logits = net.vote_logits(sampled, valid, displacement, cues, geometry)
    assert torch.isinf(logits[~valid]).all() and torch.isfinite(logits[valid]).all()
    s = net.combine(probs, logits)
    s[:, 0].sum().backward()
    grads = [p.grad for name, p in net.named_parameters() if not name.startswith("prior_mlp")]  # the prior is apart
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in net.encoder.parameters() for g in [g.grad])
    # an invalid view's probabilities do not reach the result
    changed = probs.clone()
    changed[~valid] = 1.0 / C
    torch.testing.assert_close(net.combine(changed, logits.detach()), s.detach())


def test_the_geometry_prior_is_a_floored_distribution_per_normal():
    torch.manual_seed(0)
    net = VotingNet(C)
    normal = torch.nn.functional.normalize(torch.randn(64, 3), dim=1)
    height_m = torch.rand(64) * 3.0
    for floor in (0.01, 0.1, 1.0 / C):
        log_prior = net.observation_log_prior(normal, height_m, floor)  # [64, C]
        torch.testing.assert_close(log_prior.exp().sum(1), torch.ones(64))
        # a class falls at most log(1 / floor) below the most likely one
        assert float((log_prior.max(1).values - log_prior.min(1).values).max()) <= math.log(1 / floor) + 1e-5
    torch.testing.assert_close(net.observation_log_prior(normal, height_m, 1.0), torch.full((64, C), -math.log(C)))  # no prior
    net.observation_log_prior(normal, height_m, 0.1)[:, 0].sum().backward()
    assert all(float(p.grad.abs().sum()) > 0 for p in net.prior_mlp.parameters())


def test_checkpoint_round_trip_and_clear_errors(tmp_path):
    import pytest

    from semantic_mapping.semantics.voting import CheckpointError, load_checkpoint, save_checkpoint

    torch.manual_seed(1)
    net = VotingNet(C, feature_dim=8, vote_space="logits").eval()
    path = tmp_path / "voting.pt"
    save_checkpoint(path, net, {"seeds": [20, 21], "note": "test"})
    loaded, meta = load_checkpoint(path, C)
    assert meta == {"seeds": [20, 21], "note": "test"} and loaded.vote_space == "logits"
    rgb = torch.rand(2, 3, 24, 32)
    torch.testing.assert_close(loaded.encoder(rgb), net.encoder(rgb))
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="trained for 5 classes"):
        load_checkpoint(path, C + 1)
    with pytest.raises(CheckpointError, match="no voting weights"):
        load_checkpoint(tmp_path / "missing.pt", C)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(corrupt, C)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a voting checkpoint"):
        load_checkpoint(other, C)


def test_prior_normals_face_the_camera():
    """The prior reads the observed side: a floor seen from above faces up and a ceiling seen from
    below faces down, whichever way the TSDF gradient pointed."""
    camera_m = torch.tensor([0.0, 0.0, 1.5])
    points_m = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 2.5], [0.0, 1.0, 2.5], [0.0, 2.0, 1.0], [0.0, 2.0, 1.0]])
    up, side = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 0.0])
    normal = torch.stack([up, -up, up, -up, side, -side])  # floor, ceiling, wall; each both ways
    expected = torch.stack([up, up, -up, -up, -side, -side])
    torch.testing.assert_close(facing_camera(normal, points_m, camera_m), expected)
    torch.testing.assert_close(facing_camera(normal, points_m, camera_m.expand(6, 3)), expected)  # per-point cameras
