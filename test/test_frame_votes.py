"""Frame votes: cues, the map's weighted means, training, checkpoints and fallback."""

import logging

import numpy as np
import pytest
import torch

from semantic_mapping.config import FusionConfig, MapperConfig, SemanticFusionConfig, VotingConfig
from semantic_mapping.eval.voting_bench import FRAME_VOTE_LOGITS_WEIGHTS
from semantic_mapping.fusion.voxel_map import VoxelMap
from semantic_mapping.pipeline import Mapper
from semantic_mapping.semantics.bayesian import PixelSemantics
from semantic_mapping.semantics.frame_votes import (
    CUE_NAMES,
    SHIPPED_WEIGHTS,
    FrameVoteCheckpointError,
    FrameVoteNet,
    pixel_normals,
    frame_cues,
    load_checkpoint,
    save_checkpoint,
)
from semantic_mapping.semantics.frame_votes_train import FrameVoteScene, FrameVoteTrainConfig, scene_loss, train
from semantic_mapping.sim.sequence import DEVELOPMENT_SEEDS, VOTING_BENCHMARK_SEEDS
from semantic_mapping.types import Frame
from test_fusion import INTR, LS, assert_same_map, trajectory, world  # noqa: F401

H, W = INTR.height_px, INTR.width_px


def tilted_plane_depth(slope: float) -> np.ndarray:
    """[H, W] depth of the plane z = 2 + slope * x (camera frame), seen by INTR."""
    u = np.arange(W)[None, :].repeat(H, 0)
    x_over_z = (u - INTR.K[0, 2]) / INTR.K[0, 0]
    return (2.0 / (1.0 - slope * x_over_z)).astype(np.float32)


def test_cues_on_planes_facing_and_tilted():
    pixels = np.array([(H // 2) * W + W // 2, (H // 2) * W + 3, 5 * W + W // 2])  # centre, left edge, top
    probs = np.array([[0.25] * 4, [1.0, 0, 0, 0], [0.7, 0.1, 0.1, 0.1]], np.float32)
    cues = frame_cues(np.full((H, W), 2.0, np.float32), INTR.K, pixels, probs, 0.6)
    assert cues.shape == (3, len(CUE_NAMES))
    depth, cos, border, entropy, peak, frame_peak = cues.T
    assert np.allclose(depth, 2.0) and np.allclose(frame_peak, 0.6)
    assert cos[0] == pytest.approx(1.0, abs=1e-5)  # the ray at the centre meets the plane head-on
    assert border[0] == pytest.approx((H // 2 - 1) / W, abs=2 / W) and border[1] == pytest.approx(3 / W)
    assert border[2] == pytest.approx(5 / W)
    assert entropy[0] == pytest.approx(np.log(4), abs=1e-4) and entropy[1] == pytest.approx(0, abs=1e-4)
    assert np.allclose(peak, [0.25, 1.0, 0.7])
    # a plane tilted 45 degrees about the camera's y axis: normal (-1, 0, 1) / sqrt 2, centre ray (0, 0, 1)
    normals = pixel_normals(tilted_plane_depth(1.0), INTR.K, np.array([(H // 2) * W + W // 2, W // 2, (H // 2) * W + W - 1]))
    assert abs(normals[0] @ np.array([-1, 0, 1]) / np.sqrt(2)) == pytest.approx(1.0, abs=1e-3)
    assert not normals[1:].any()  # no normal without both neighbours (top row, right column)


WALL_VOXELS = np.stack(np.meshgrid(np.arange(-5, 5), np.arange(-5, 5), [30], indexing="ij"), -1).reshape(-1, 3)
"""[100, 3] voxels (5 cm) of the wall `wall_map` sees."""


def wall_map(semantics: SemanticFusionConfig) -> VoxelMap:
    """A 4-class map of a wall 1.5 m in front of the camera, integrated three times without semantics."""
    vmap = VoxelMap(FusionConfig(voxel_size_m=0.05, device="cpu"), 4, semantics)
    for _ in range(3):
        vmap.integrate(np.full((120, 160), 1.5, np.float32), np.zeros((120, 160, 3), np.uint8), INTR, np.eye(4))
    return vmap


def random_observations(seed: int) -> list:
    """Three (class probabilities [100, 4], weight) observations of WALL_VOXELS."""
    rng = np.random.default_rng(seed)
    return [(rng.dirichlet(np.ones(4), len(WALL_VOXELS)).astype(np.float32), w) for w in (0.5, 3.0, 1.5)]


def test_the_map_keeps_the_weighted_mean_of_the_frame_votes():
    vmap, index = wall_map(SemanticFusionConfig(context_iterations=0)), WALL_VOXELS
    observations = random_observations(0)
    for probs, w in observations:
        assert vmap.fuse_distributions(index, probs, w, average="probabilities") == len(index)
    expected = sum(w * p for p, w in observations) / sum(w for _, w in observations)
    values = vmap.voxel_values(index, with_probs=True)
    assert np.abs(values["class_probs"] - expected).max() < 2e-3  # int16 log fixed point
    assert np.allclose(vmap._flat("semantic_weight")[torch.from_numpy(vmap.lookup(index)[0])].numpy(), 5.0)
    assert (values["semantic_count"] == 3).all()
    # a distribution fused by another method before (Bayesian product) counts as one vote of weight 1
    before = np.random.default_rng(1).dirichlet(np.ones(4), len(index)).astype(np.float32)
    other = wall_map(SemanticFusionConfig(context_iterations=0, probability_floor=1e-6))
    other.fuse_distributions(index, before, 1.0)
    other.fuse_distributions(index, observations[0][0], 3.0, average="probabilities")
    expected = (before + 3.0 * observations[0][0]) / 4.0
    assert np.abs(other.voxel_values(index, with_probs=True)["class_probs"] - expected).max() < 2e-3


def test_votes_over_logits_keep_the_weighted_mean_of_the_log_probabilities():
    vmap, index = wall_map(SemanticFusionConfig(context_iterations=0)), WALL_VOXELS
    observations = random_observations(1)
    for probs, w in observations:
        assert vmap.fuse_distributions(index, probs, w, average="logits") == len(index)
    mean_log = sum(w * np.log(p + 1e-6) for p, w in observations) / sum(w for _, w in observations)
    expected = np.exp(mean_log) / np.exp(mean_log).sum(1, keepdims=True)
    assert np.abs(vmap.voxel_values(index, with_probs=True)["class_probs"] - expected).max() < 2e-3
    # not the mean of the probabilities: that differs by far more than the fixed point's error
    arithmetic = sum(w * p for p, w in observations) / sum(w for _, w in observations)
    assert np.abs(expected - arithmetic).max() > 0.05


def _frame_with_label(depth, label: int, p: float) -> tuple:
    probs = np.full((H, W, LS.num_classes), (1 - p) / (LS.num_classes - 1), np.float32)
    probs[..., label] = p
    return Frame(rgb=np.zeros((H, W, 3), np.uint8), depth_m=depth, intrinsics=INTR, T_world_cam=np.eye(4),
                 class_probs=probs)


@pytest.mark.parametrize("frame_votes", [False, True])
def test_a_heavy_frame_vote_outweighs_several_light_ones(frame_votes):
    """Three frames say class 1, one says class 2 with ten times their weight: the weighted mean
    follows the heavy one; the Bayesian product (no weights) follows the majority."""
    vmap = VoxelMap(FusionConfig(voxel_size_m=0.05, device="cpu"), LS.num_classes)
    depth = np.full((H, W), 1.5, np.float32)
    pixels = vmap.sample_pixels(depth.shape, INTR)
    for label, weight in ((1, 1.0), (1, 1.0), (1, 1.0), (2, 10.0)):
        frame = _frame_with_label(depth, label, 0.8)
        semantics = PixelSemantics(frame, pixels, LS.num_classes, SemanticFusionConfig())
        if frame_votes:
            semantics.weights = np.full(len(pixels), weight, np.float32)
        vmap.integrate(depth, frame.rgb, INTR, np.eye(4), semantics)
    centre = np.array([[0, 0, 30]])  # the voxel at the optical axis, 1.5 m
    assert vmap.voxel_values(centre)["labels"][0] == (2 if frame_votes else 1)


@pytest.mark.parametrize("vote_space", ["probabilities", "logits"])
def test_training_learns_which_views_to_trust(vote_space):
    """Views nearer than 2 m are right, farther ones (the majority) wrong: equal weights get the voxels
    wrong, the trained weights right, averaging probabilities or logits."""
    rng = np.random.default_rng(0)
    V, C, per_voxel = 400, 4, 6
    labels = rng.integers(0, C, V)
    voxel = np.repeat(np.arange(V), per_voxel)
    near = np.tile([True, True, False, False, False, False], V)
    said = np.where(near, labels[voxel], (labels[voxel] + 1) % C)
    probs = np.full((len(voxel), C), 0.1 / (C - 1), np.float32)
    probs[np.arange(len(voxel)), said] = 0.9
    cues = rng.uniform(0, 1, (len(voxel), len(CUE_NAMES))).astype(np.float32)
    cues[:, 0] = np.where(near, rng.uniform(0.5, 1.9, len(voxel)), rng.uniform(2.1, 5, len(voxel)))
    scene = FrameVoteScene(torch.from_numpy(voxel), torch.ones(len(voxel)), torch.from_numpy(probs), torch.from_numpy(cues),
                           torch.from_numpy(labels))
    net, history = train([scene], [scene], FrameVoteTrainConfig(steps=60, vote_space=vote_space), progress=False)
    assert net.vote_space == vote_space
    with torch.no_grad():
        assert scene_loss(net, scene, uniform=True)[1] < 0.1
        assert scene_loss(net, scene)[1] > 0.95
    assert history.val_loss[-1] < history.val_loss[0]
    weights = net.weights(cues)
    assert np.median(weights[near]) > 20 * np.median(weights[~near])
    assert np.mean(weights) == pytest.approx(1.0, rel=1e-4)  # an average observation weighs 1


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    net = FrameVoteNet(vote_space="logits")
    path = tmp_path / "frame_votes.pt"
    save_checkpoint(path, net, {"train_seeds": [1], "note": "tests only"})
    loaded, meta = load_checkpoint(path)
    cues = np.random.default_rng(0).uniform(0, 3, (50, len(CUE_NAMES))).astype(np.float32)
    assert np.allclose(loaded.weights(cues), net.weights(cues)) and meta["train_seeds"] == [1]
    assert loaded.vote_space == "logits"
    data = torch.load(path, weights_only=True)
    torch.save({**data, "vote_space": "medians"}, path)
    with pytest.raises(FrameVoteCheckpointError, match="medians"):
        load_checkpoint(path)


@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_unusable_frame_vote_weights_fall_back_to_bayesian(world, tmp_path, caplog, problem):  # noqa: F811
    path = tmp_path / "frame_votes.pt"
    if problem == "corrupt":
        path.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    config = MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu"), semantics=SemanticFusionConfig(method="voting"),
                          voting=VotingConfig(frame_vote_weights=str(path)))
    with caplog.at_level(logging.ERROR):
        mapper = Mapper(config)
    assert mapper.semantics_method == "bayesian" and str(path) in caplog.text and "falling back to Bayesian" in caplog.text
    bayesian = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu")))
    for m in (mapper, bayesian):
        for i, T in enumerate(trajectory()[:3]):
            m.integrate(world.render(T, i * 33_000_000))
    assert_same_map(mapper, bayesian)


@pytest.mark.parametrize("path, vote_space", [(SHIPPED_WEIGHTS, "probabilities"),
                                              (FRAME_VOTE_LOGITS_WEIGHTS, "logits")])
def test_shipped_frame_vote_weights_come_from_development_seeds_and_beat_equal_weights(path, vote_space):
    net, meta = load_checkpoint(path)
    assert net.vote_space == vote_space
    seeds = set(meta["train_seeds"]) | set(meta["val_seeds"])
    assert seeds and all(s in DEVELOPMENT_SEEDS for s in seeds)
    assert meta["val_learned"]["cross_entropy"] < meta["val_uniform"]["cross_entropy"]
    assert path.stat().st_size < 100_000


def test_maps_saved_before_frame_votes_still_load(tmp_path, world):  # noqa: F811
    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu")))
    for i, T in enumerate(trajectory()[:2]):
        mapper.integrate(world.render(T, i * 33_000_000))
    path = tmp_path / "map.npz"
    mapper.map.save(path)
    arrays = dict(np.load(path))
    del arrays["attr_semantic_weight"]
    np.savez(path, **arrays)
    other = VoxelMap(FusionConfig(voxel_size_m=0.05, device="cpu"), LS.num_classes)
    other.load_state_arrays(VoxelMap.read_file(path)[1])
    assert not other._flat("semantic_weight").any()
    index = mapper.labelled_voxels().positions_m / 0.05
    index = np.round(index).astype(np.int64)
    assert (other.voxel_values(index)["labels"] == mapper.map.voxel_values(index)["labels"]).all()


def test_train_voting_frame_votes_writes_a_checkpoint_the_mapper_loads(tmp_path):
    from semantic_mapping.cli import main

    out = tmp_path / "frame_votes.pt"
    assert main(["train-voting", "--frame-votes", "--out", str(out), "--seeds", "20", "--val-seeds", "21",
                 "--frames", "12", "--steps", "2"]) == 0
    assert out.with_suffix(".png").stat().st_size > 1000 and out.with_suffix(".json").exists()
    assert main(["train-voting", "--frame-votes", "--out", str(out), "--seeds", str(VOTING_BENCHMARK_SEEDS[-1])]) == 2
    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu"), semantics=SemanticFusionConfig(method="voting"),
                                 voting=VotingConfig(frame_vote_weights=str(out))))
    assert mapper.semantics_method == "voting" and mapper.voting.frame_net is not None
