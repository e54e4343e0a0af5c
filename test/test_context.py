"""Labels read in their surface context (semantics.context)."""

from dataclasses import replace

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from semantic_mapping.config import FusionConfig, MapperConfig, SemanticFusionConfig
from semantic_mapping.pipeline import Mapper
from semantic_mapping.semantics.context import SpatialContext, context_log_probs, surface_adjacency, surface_normals
from test_fusion import FLOOR, INTR, LS, OBJECT, ROOM_HALF_M, WALL, trajectory, world  # noqa: F401

PATCH = dict(y=(-0.85, -0.55), z=(0.45, 0.75))  # on the wall x = +ROOM_HALF_M, labelled object by every view


def _with_wrong_patch(frame):
    """The frame with the wall patch PATCH labelled OBJECT: an error every view makes."""
    from semantic_mapping.geometry import backproject_depth, transform_points

    points = transform_points(frame.T_world_cam, backproject_depth(frame.depth_m, INTR.K).reshape(-1, 3))
    points = points.reshape(*frame.depth_m.shape, 3)
    patch = ((points[..., 0] > ROOM_HALF_M - 0.05) & (frame.depth_m > 0)
             & (points[..., 1] > PATCH["y"][0]) & (points[..., 1] < PATCH["y"][1])
             & (points[..., 2] > PATCH["z"][0]) & (points[..., 2] < PATCH["z"][1]))
    return replace(frame, labels=np.where(patch, OBJECT, frame.labels))


@pytest.fixture(scope="module")
def mappers(world):
    """The same frames fused twice: labels read with context (the default), and per voxel."""
    out = {}
    for name, iterations in (("context", SemanticFusionConfig().context_iterations), ("plain", 0)):
        mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu"),
                                     semantics=SemanticFusionConfig(context_iterations=iterations)))
        for i, T in enumerate(trajectory()):
            assert mapper.integrate(_with_wrong_patch(world.render(T, i * 33_000_000))).accepted
        out[name] = mapper
    return out


def _patch_voxels(mapper):
    voxels = mapper.labelled_voxels()
    p = voxels.positions_m
    inside = ((p[:, 0] > ROOM_HALF_M - 0.08) & (p[:, 1] > PATCH["y"][0]) & (p[:, 1] < PATCH["y"][1])
              & (p[:, 2] > PATCH["z"][0]) & (p[:, 2] < PATCH["z"][1]))
    return voxels, inside


def test_context_undoes_an_error_every_view_makes(mappers):
    plain, inside = _patch_voxels(mappers["plain"])
    assert inside.sum() >= 20 and np.mean(plain.labels[inside] == OBJECT) > 0.9  # per voxel, the error stands
    voxels, inside = _patch_voxels(mappers["context"])
    assert np.mean(voxels.labels[inside] == WALL) > 0.9
    p = voxels.positions_m
    patch = ((p[:, 0] > ROOM_HALF_M - 0.08) & (p[:, 1] > PATCH["y"][0] - 0.1) & (p[:, 1] < PATCH["y"][1] + 0.1)
             & (p[:, 2] > PATCH["z"][0] - 0.1) & (p[:, 2] < PATCH["z"][1] + 0.1))
    # It stops at edges: the floor along that wall, the sphere and the walls keep their classes.
    floor = (p[:, 2] < 0.03) & (np.abs(p[:, 0]) < ROOM_HALF_M - 0.1) & (np.abs(p[:, 1]) < ROOM_HALF_M - 0.1)
    assert np.mean(voxels.labels[floor] == FLOOR) > 0.95
    wall = (p[:, 0] > ROOM_HALF_M - 0.08) & (p[:, 2] > 0.15) & (p[:, 2] < 1.0) & (np.abs(p[:, 1]) < ROOM_HALF_M - 0.1) & ~patch
    assert np.mean(voxels.labels[wall] == WALL) > 0.95
    sphere = np.linalg.norm(p - [0.0, 0.0, 0.8], axis=1) < 0.5
    assert np.mean(voxels.labels[sphere] == OBJECT) > 0.9


def test_renders_and_voxel_reads_decode_the_same_labels(mappers):
    mapper = mappers["context"]
    view = mapper.render(INTR, trajectory()[0])
    hit = view.depth_m > 0
    from semantic_mapping.geometry import backproject_depth, transform_points

    points = transform_points(trajectory()[0], backproject_depth(view.depth_m, INTR.K)[hit])
    values = mapper.map.voxel_values(mapper.map.voxel_indices(points))
    labelled = values["labels"] >= 0
    assert np.mean(view.labels[hit][labelled] == values["labels"][labelled]) > 0.97


def test_context_follows_the_map(world):
    """A read after new frames recomputes the context (max age 0), a read of an unchanged map does not,
    and a reset map reads nothing stale."""
    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu")))
    frames = [world.render(T, i * 33_000_000) for i, T in enumerate(trajectory(8))]
    for frame in frames[:3]:
        mapper.integrate(frame)
    first = mapper.labelled_voxels()
    for frame in frames[3:]:
        mapper.integrate(frame)
    voxels = mapper.labelled_voxels()
    assert (voxels.labels != LS.ignore_id).sum() > (first.labels != LS.ignore_id).sum()
    mapper.labelled_voxels()
    assert mapper.map.context.refreshes == 2
    mapper.reset()
    assert len(mapper.labelled_voxels().labels) == 0


def test_background_context_is_refreshed_by_its_owner_and_never_by_reads(world):
    """With `background` (the ROS node), reads use the latest refreshed read-out and never recompute;
    the owner's snapshot + refresh gives the labels a reader would compute itself."""
    frames = [world.render(T, i * 33_000_000) for i, T in enumerate(trajectory())]
    mappers = [Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu"))) for _ in range(2)]
    background, foreground = mappers
    context = background.map.context
    context.background = True
    for frame in frames:
        for mapper in mappers:
            mapper.integrate(_with_wrong_patch(frame))
    assert context.refreshes == 0  # nothing refreshed yet: every voxel reads its own distribution
    plain, inside = _patch_voxels(background)
    assert inside.sum() > 0 and np.mean(plain.labels[inside] == OBJECT) > 0.9
    assert context.due()  # the read asked for a refresh
    snapshot = context.snapshot(background.map)
    context.refresh(snapshot)
    assert context.snapshot(background.map) is None and not context.due()  # of the current version
    voxels, inside = _patch_voxels(background)
    assert np.mean(voxels.labels[inside] == WALL) > 0.9
    assert np.array_equal(voxels.labels, foreground.labelled_voxels().labels)
    for i, T in enumerate(trajectory()[:2]):  # the map changes
        assert background.integrate(_with_wrong_patch(world.render(T, (len(frames) + i) * 33_000_000))).accepted
    background.labelled_voxels()
    assert context.refreshes == 1 and context.due()
    background.reset()
    assert len(background.labelled_voxels().labels) == 0


def test_ceiling_normals_face_down_with_nothing_observed_above():
    # voxel, +x, -x, +y, -y, +z (unobserved: above the ceiling), -z (free space below)
    sdf = np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 9.9, 0.04]])
    known = np.array([[True, True, True, True, True, False, True]])
    np.testing.assert_allclose(surface_normals(sdf, known), [[0.0, 0.0, -1.0]], atol=1e-6)


def test_adjacency_joins_neighbours_whose_normals_agree():
    indices = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 0, 1], [5, 5, 5]])
    normals = np.array([[0, 0, 1], [0, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 1]], float)
    A = surface_adjacency(indices, normals, 0.9).toarray()
    pairs = {tuple(sorted(map(tuple, indices[[i, j]].tolist()))) for i, j in zip(*np.nonzero(A))}
    assert pairs == {((0, 0, 0), (1, 0, 0)), ((0, 0, 0), (0, 0, 1)), ((0, 0, 1), (1, 0, 0))}
    assert np.array_equal(A, A.T)


def test_context_keeps_a_voxel_without_neighbours_as_it_is():
    log_probs = np.log(np.array([[0.6, 0.4], [0.1, 0.9]], np.float32))
    out = context_log_probs(log_probs, csr_matrix((2, 2), dtype=np.float32), iterations=5, weight=30.0)
    assert np.array_equal(out.argmax(1), [0, 1])
    np.testing.assert_allclose(np.exp(out).sum(1), 1.0, rtol=1e-5)


def _chain(n: int) -> csr_matrix:
    """[n, n] adjacency of n voxels in a row."""
    i = np.arange(n - 1)
    return csr_matrix((np.ones(2 * (n - 1), np.float32), (np.r_[i, i + 1], np.r_[i + 1, i])), shape=(n, n))


def test_context_slows_at_label_edges_with_the_similarity_power():
    """A small confident region inside a large one (a chain of voxels): with equal shares the
    surroundings swallow it; weighted by distribution similarity, disjoint neighbours barely share."""
    n, small = 61, np.arange(28, 33)
    probs = np.full((n, 2), [0.999, 0.001], np.float32)
    probs[small] = [0.001, 0.999]
    chain = _chain(n)
    equal = context_log_probs(np.log(probs), chain, iterations=96, weight=10.0, similarity_power=0.0).argmax(1)
    alike = context_log_probs(np.log(probs), chain, iterations=96, weight=10.0, similarity_power=2.0).argmax(1)
    assert np.all(equal == 0)
    assert np.array_equal(alike, probs.argmax(1))


def test_context_weighs_voxels_by_their_evidence():
    """A hedged region many votes agree on, inside surroundings few votes lean the other way: without
    evidence the surroundings take it; with it, it keeps its class and pulls its weak neighbours."""
    n, strong = 41, np.arange(15, 26)
    probs = np.full((n, 2), [0.6, 0.4], np.float32)
    probs[strong] = [0.45, 0.55]
    evidence = np.full(n, 0.05)
    evidence[strong] = 5.0
    chain = _chain(n)
    without = context_log_probs(np.log(probs), chain, iterations=96, weight=10.0).argmax(1)
    assert np.all(without == 0)
    with_evidence = context_log_probs(np.log(probs), chain, iterations=96, weight=10.0, evidence=evidence).argmax(1)
    assert np.all(with_evidence[strong] == 1)
    assert with_evidence[strong[0] - 1] == 1 and with_evidence[0] == 0  # its neighbours follow, far ones do not
    unit = context_log_probs(np.log(probs), chain, iterations=96, weight=10.0, evidence=np.ones(n))
    np.testing.assert_allclose(np.exp(unit), np.exp(context_log_probs(np.log(probs), chain, iterations=96, weight=10.0)),
                               atol=1e-5)


def test_bayesian_maps_read_the_same_with_or_without_vote_weights(mappers):
    """Bayesian fusion keeps no vote weights: its evidence is 1 everywhere, so the setting changes nothing."""
    mapper = mappers["context"]
    assert mapper.semantics_method == "bayesian" and mapper.config.semantics.context_vote_weight_ref > 0
    off = replace(mapper.config.semantics, context_vote_weight_ref=0.0)
    context = SpatialContext(off)
    context.refresh(context.snapshot(mapper.map))
    keys = context._decoded.keys_sorted
    found, log_probs = context.log_probs(mapper.map, keys)
    found_default, log_probs_default = mapper.map.context.log_probs(mapper.map, keys)
    assert found.all() and found_default.all()
    np.testing.assert_allclose(np.exp(log_probs), np.exp(log_probs_default), atol=1e-5)
    assert np.array_equal(log_probs.argmax(1), log_probs_default.argmax(1))


def test_bad_context_settings_are_refused_by_name():
    for change in ({"context_iterations": -1}, {"context_weight": -1.0}, {"context_min_normal_dot": 1.5},
                   {"context_similarity_power": -1.0}, {"context_vote_weight_ref": -1.0},
                   {"context_vote_weight_power": -0.5}):
        with pytest.raises(ValueError, match=rf"semantics\.{next(iter(change))}\b"):
            Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu"),
                                semantics=SemanticFusionConfig(**change)))
    with pytest.raises(ValueError) as refused:  # only the bad settings are named
        SpatialContext(SemanticFusionConfig(context_weight=-1.0))
    assert "context_weight" in str(refused.value) and "context_iterations" not in str(refused.value)
