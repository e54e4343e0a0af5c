"""Soft voting inside the Mapper: fallback, fusion of votes, the per-frame budget, shipped weights, training CLI."""

import logging

import numpy as np
import pytest
import torch

from semantic_mapping.config import FusionConfig, KeyframeConfig, MapperConfig, SemanticFusionConfig, VotingConfig
from semantic_mapping.fusion.voxel_map import VoxelMap
from semantic_mapping.pipeline import Mapper
from semantic_mapping.semantics.voting import VotingNet, load_checkpoint, save_checkpoint
from semantic_mapping.semantics.voting_fusion import SHIPPED_WEIGHTS
from semantic_mapping.sim.sequence import DEVELOPMENT_SEEDS, VOTING_BENCHMARK_SEEDS
from test_fusion import FLOOR, INTR, LS, OBJECT, SPHERE_CENTRE_M, SPHERE_RADIUS_M, WALL, assert_same_map, trajectory, world  # noqa: F401


def true_label(points_m):  # [N, 3] -> [N] class of the nearest analytic surface
    sphere = np.abs(np.linalg.norm(points_m - SPHERE_CENTRE_M, axis=1) - SPHERE_RADIUS_M)
    return np.where(sphere < 0.1, OBJECT, np.where(points_m[:, 2] < 0.1, FLOOR, WALL))


def config(weights, **voting):
    """The keyframe path (keyframe votes multiplying Bayesian fusion) unless `voting` says otherwise."""
    keyframes = KeyframeConfig(min_translation_m=0.3, min_rotation_deg=20.0, views_per_voxel=4)
    voting = {"frame_votes": False, "keyframe_votes": True, **voting}
    return MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu"), semantics=SemanticFusionConfig(method="voting"),
                        voting=VotingConfig(weights=str(weights), keyframes=keyframes, **voting))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A checkpoint of an untrained network: enough to exercise the plumbing (quality is the benchmark's)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "voting.pt"
    save_checkpoint(path, VotingNet(LS.num_classes), {"train_seeds": [], "note": "untrained, tests only"})
    return path


def run(mapper, world, frames=12):  # noqa: F811
    for i, T in enumerate(trajectory()[:frames]):
        assert mapper.integrate(world.render(T, i * 33_000_000)).accepted
    return mapper


@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_unusable_weights_fall_back_to_bayesian(world, tmp_path, caplog, problem):  # noqa: F811
    path = tmp_path / "voting.pt"
    if problem == "corrupt":
        path.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with caplog.at_level(logging.ERROR):
        mapper = Mapper(config(path))
    assert mapper.semantics_method == "bayesian" and mapper.voting is None
    assert "falling back to Bayesian" in caplog.text and str(path) in caplog.text
    bayesian = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu")))
    assert_same_map(run(mapper, world, 4), run(bayesian, world, 4))


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="semantics.method"):
        Mapper(MapperConfig(semantics=SemanticFusionConfig(method="kimera")))


def test_votes_are_fused_into_the_voxels_the_keyframes_see(world, weights):  # noqa: F811
    mapper = run(Mapper(config(weights)), world)
    bayesian = run(Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu"))), world)
    stats = mapper.voting.stats
    assert mapper.semantics_method == "voting" and stats.keyframes >= 3 and mapper.voting.pending == 0
    assert stats.voxels_voted > 1000 and stats.voxels_without_view < 0.05 * stats.voxels_voted
    voxels = mapper.labelled_voxels()
    index = np.round(voxels.positions_m / mapper.voxel_size_m).astype(np.int64)
    count = mapper.map.voxel_values(index)["semantic_count"]
    count_bayesian = bayesian.map.voxel_values(index)["semantic_count"]
    assert np.mean(count > count_bayesian) > 0.5  # most surface voxels got at least one vote on top
    # the frames' labels are right, so any convex combination of views is too: labels stay right
    assert np.mean(voxels.labels == true_label(voxels.positions_m)) > 0.95
    mapper.reset()
    assert len(mapper.voting.buffer) == 0 and mapper.voting.stats.voxels_voted == 0


def test_the_geometry_prior_multiplies_every_observation(world, tmp_path):  # noqa: F811
    """A prior that puts every surface orientation on FLOOR, weighted far above the (right) pixels,
    labels the whole map FLOOR; without it, or at weight 0, the labels stay right."""
    torch.manual_seed(0)
    net = VotingNet(LS.num_classes)
    with torch.no_grad():
        last = net.prior_mlp[-1]
        last.weight.zero_()
        last.bias.fill_(-20.0)
        last.bias[FLOOR] = 20.0
    path = tmp_path / "floor_prior.pt"
    save_checkpoint(path, net, {"train_seeds": [], "note": "hand-set prior, tests only"})
    labels = {}
    for name, options in {"strong": {"prior_weight": 5.0}, "off": {"geometry_prior": False},
                          "zero": {"prior_weight": 0.0}}.items():
        mapper = run(Mapper(config(path, **options)), world, 6)
        voxels = mapper.labelled_voxels()
        labels[name] = (voxels.labels, true_label(voxels.positions_m))
        if name == "strong":
            assert mapper.voting.stats.prior_voxels > 1000
    for name, (label, truth) in labels.items():
        not_floor = truth != FLOOR
        assert not_floor.sum() > 200
        if name == "strong":
            assert np.mean(label[not_floor] == FLOOR) > 0.9  # a few voxels the (right) keyframe votes outweigh
        else:
            assert np.mean(label == truth) > 0.95 and np.mean(label[not_floor] == FLOOR) < 0.05


def test_equal_weights_without_the_prior_read_no_weights(tmp_path):
    mapper = Mapper(config(tmp_path / "missing.pt", learned=False, geometry_prior=False))
    assert mapper.semantics_method == "voting" and mapper.voting.uniform and mapper.voting.semantic_prior is None
    assert Mapper(config(tmp_path / "missing.pt", learned=False)).semantics_method == "bayesian"  # the prior needs them


def test_a_budget_spreads_the_votes_over_frames_and_bounds_the_queue(world, weights):  # noqa: F811
    mapper = Mapper(config(weights, max_voxels_per_frame=100, max_pending_voxels=3000))
    voted = []
    for i, T in enumerate(trajectory()[:8]):
        before = mapper.voting.stats.voxels_voted
        mapper.integrate(world.render(T, i * 33_000_000))
        voted.append(mapper.voting.stats.voxels_voted - before)
        assert mapper.voting.pending <= 3000
    assert max(voted) == 100 and mapper.voting.pending > 0
    assert mapper.voting.stats.pending_dropped > 0  # the first keyframe alone queues more than 3000


def test_a_vote_of_weight_two_is_two_votes_of_weight_one():
    maps = [VoxelMap(FusionConfig(voxel_size_m=0.05, device="cpu"), 4) for _ in range(2)]
    depth = np.full((120, 160), 1.5, np.float32)
    rgb = np.zeros((120, 160, 3), np.uint8)
    for m in maps:
        for _ in range(3):
            m.integrate(depth, rgb, INTR, np.eye(4))
    index = np.stack(np.meshgrid(np.arange(-5, 5), np.arange(-5, 5), [30], indexing="ij"), -1).reshape(-1, 3)  # z = 1.5 m
    probs = np.random.default_rng(0).dirichlet(np.ones(4), len(index)).astype(np.float32)
    assert maps[0].fuse_distributions(index, probs, 2.0) == len(index) == 100
    maps[1].fuse_distributions(index, probs, 1.0)
    maps[1].fuse_distributions(index, probs, 1.0)
    a, b = (m._flat("semantic")[torch.from_numpy(m.lookup(index)[0])].numpy().astype(int) for m in maps)
    assert np.abs(a - b).max() <= 2  # int16 fixed point: at most a rounding per update


def test_shipped_weights_load_and_come_from_development_seeds():
    net, meta = load_checkpoint(SHIPPED_WEIGHTS, LS.num_classes)
    assert meta["vote_space"] == "probabilities" and net.vote_space == "probabilities"
    seeds = set(meta["train_seeds"]) | set(meta["val_seeds"])
    assert seeds and all(s in DEVELOPMENT_SEEDS for s in seeds)
    assert meta["val_learned"]["cross_entropy"] < meta["val_uniform"]["cross_entropy"]
    assert SHIPPED_WEIGHTS.stat().st_size < 1_000_000


def test_train_voting_writes_a_checkpoint_the_mapper_loads(tmp_path, world):  # noqa: F811
    from semantic_mapping.cli import main

    out = tmp_path / "voting.pt"
    assert main(["train-voting", "--out", str(out), "--seeds", "20", "--val-seeds", "21", "--frames", "12",
                 "--steps", "2"]) == 0
    assert out.with_suffix(".png").stat().st_size > 1000 and out.with_suffix(".json").exists()
    assert main(["train-voting", "--out", str(out), "--seeds", str(VOTING_BENCHMARK_SEEDS[-1])]) == 2  # held out
    mapper = Mapper(config(out))
    assert mapper.semantics_method == "voting"

