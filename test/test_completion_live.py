"""Scene completion inside the running map: fallback without weights, a worker that never blocks
integration, predictions beside observations (observations win), outputs with and without them,
save/load, and the completion config section."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from semantic_mapping.completion import live
from semantic_mapping.completion.network import CompletionNetwork, CompletionNetworkConfig, save_completion_model
from semantic_mapping.config import (
    CompletionConfig,
    ConfigError,
    FusionConfig,
    MapperConfig,
    ObjectsConfig,
    config_from_dict,
    load_config,
)
from semantic_mapping.fusion.voxel_map import pack_indices
from semantic_mapping.pipeline import Mapper
from semantic_mapping.semantics.label_space import default_label_space
from semantic_mapping.sim.sequence import simulate

VOXEL_M = 0.08
CHUNK = (16, 16, 32)
FRAMES = 24
NUM_CLASSES = default_label_space().num_classes
PLANE_Z_M = 0.0  # the test prediction: a horizontal surface at floor height everywhere
PLANE_LABEL = int(default_label_space().ids_with_role("floor")[0])
PLANE_COLOR = (10, 200, 30)


@pytest.fixture(scope="module")
def frames():
    recording = simulate(3, num_frames=FRAMES)
    return [recording.frame(i, masks=False) for i in range(FRAMES)]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny test-only network saved as a completion checkpoint for 8 cm voxels (plumbing, not quality)."""
    torch.manual_seed(0)
    net = CompletionNetwork(CompletionNetworkConfig(num_classes=NUM_CLASSES, base_channels=2, max_channels=8, num_levels=3))
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_completion_model(path, net, meta={"voxel_size_m": VOXEL_M})
    return path


def config(weights=None, **completion) -> MapperConfig:
    return MapperConfig(fusion=FusionConfig(voxel_size_m=VOXEL_M, device="cpu", chunk_shape_voxels=CHUNK),
                        objects=ObjectsConfig(enabled=False),
                        completion=CompletionConfig(weights=str(weights) if weights else None,
                                                    **{"enabled": True, "min_updates": 3, **completion}))


def plane_chunk(net, voxel_map, chunk_index, context_voxels=8, read=None):
    """Stands in for infer.complete_chunk: reads the chunk like it (through `read`, under the map lock)
    and predicts a labelled horizontal surface at PLANE_Z_M in every chunk."""
    shape = voxel_map.chunk_shape_voxels
    origin = np.asarray(chunk_index, np.int64) * shape
    crop = read(origin - context_voxels, shape + 2 * context_voxels)
    observed = crop["weight"][context_voxels:-context_voxels, context_voxels:-context_voxels, context_voxels:-context_voxels] > 0
    z_m = (origin[2] + np.arange(shape[2])) * voxel_map.voxel_size_m
    tsdf = np.broadcast_to(np.clip((z_m - PLANE_Z_M) / voxel_map.sdf_trunc_m, -1, 1), tuple(shape)).astype(np.float32)
    return {"tsdf": tsdf, "color": np.broadcast_to(np.array(PLANE_COLOR, np.uint8), (*shape, 3)),
            "labels": np.full(tuple(shape), PLANE_LABEL, np.int32),
            "label_probability": np.full(tuple(shape), 0.9, np.float32), "observed": observed, "origin_index": origin}


@pytest.fixture
def plane_mapper(weights, frames, monkeypatch):
    """A mapper whose completion predicts the plane, after every frame and every due chunk."""
    monkeypatch.setattr(live, "complete_chunk", plane_chunk)
    mapper = Mapper(config(weights))
    for frame in frames:
        assert mapper.integrate(frame).accepted
    assert mapper.wait_for_completion(timeout_s=120)
    yield mapper
    mapper.close()


# ----------------------------------------------------------------------------- fallback
@pytest.mark.parametrize("kind", ["missing", "corrupt", "other_voxel_size"])
def test_unusable_weights_leave_a_clear_reason_and_a_map_without_completion(kind, weights, frames, tmp_path, caplog):
    path = tmp_path / "completion.pt"
    expected = {"missing": "no completion weights at", "corrupt": "unreadable", "other_voxel_size": "trained for 0.04 m"}
    if kind == "corrupt":
        path.write_bytes(weights.read_bytes()[:200])
    elif kind == "other_voxel_size":
        net = CompletionNetwork(CompletionNetworkConfig(num_classes=NUM_CLASSES, base_channels=2, max_channels=8, num_levels=3))
        save_completion_model(path, net, meta={"voxel_size_m": 0.04})
    with caplog.at_level("ERROR"):
        mapper = Mapper(config(path))
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and expected[kind] in errors[0] and str(path) in errors[0]
    assert mapper.completion is None
    assert mapper.stats.completion.status == "unavailable" and expected[kind] in mapper.stats.completion.reason
    for frame in frames[:8]:
        assert mapper.integrate(frame).accepted
    assert mapper.stats.frames_integrated == 8 and mapper.wait_for_completion(timeout_s=0)
    voxels, mesh, grid = mapper.labelled_voxels(), mapper.mesh(), mapper.traversability()
    assert len(voxels.labels) > 100 and not voxels.predicted.any()
    assert len(mesh.triangles) > 100 and not mesh.vertex_predicted.any()
    assert not grid.predicted.any()
    assert mapper.stats.completion.status == "unavailable"  # counters reset, the reason stays
    mapper.reset()
    assert mapper.stats.completion.status == "unavailable" and expected[kind] in mapper.stats.completion.reason


def test_completion_is_off_by_default_and_says_so():
    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=VOXEL_M, device="cpu"), objects=ObjectsConfig(enabled=False)))
    assert mapper.completion is None and mapper.stats.completion.status == "off"
    assert "completion.enabled" in mapper.stats.completion.reason


# ----------------------------------------------------------------------------- the worker
def test_the_network_completes_changed_chunks_and_integration_never_waits_for_it(weights, frames):
    mapper = Mapper(config(weights))
    try:
        net = mapper.completion.net
        entered, release = threading.Event(), threading.Event()
        forward = net.forward

        def held_forward(*args, **kwargs):  # the network "runs" until the test releases it
            entered.set()
            assert release.wait(60)
            return forward(*args, **kwargs)

        net.forward = held_forward
        i = 0
        while not entered.is_set() and i < len(frames):
            assert mapper.integrate(frames[i]).accepted
            i += 1
        assert entered.wait(30), "no chunk became due"
        # while a chunk is being completed, frames integrate at their usual pace
        start = time.perf_counter()
        for frame in frames[i:i + 6]:
            assert mapper.integrate(frame).accepted
        during_s = time.perf_counter() - start
        assert mapper.stats.completion.chunks_completed == 0 and not mapper.wait_for_completion(timeout_s=0.05)
        release.set()
        assert mapper.wait_for_completion(timeout_s=120)
        stats = mapper.stats.completion
        assert during_s < 30 and stats.status == "running" and stats.errors == 0
        assert stats.chunks_completed >= 1 and stats.queue_length == 0 and stats.ms_per_chunk > 0
        assert mapper.predictions.num_chunks >= 1 and mapper.predictions.num_voxels > 0
        completed = set(mapper.predictions._chunks)
        assert completed <= set(mapper.map.chunk_updates)  # only chunks the frames touched
    finally:
        mapper.close()
    assert mapper.stats.completion.status == "stopped"


def test_only_chunks_updated_often_enough_are_completed(weights, frames, monkeypatch):
    monkeypatch.setattr(live, "complete_chunk", plane_chunk)
    mapper = Mapper(config(weights, min_updates=5))
    try:
        for frame in frames[:4]:
            mapper.integrate(frame)
        assert mapper.wait_for_completion(timeout_s=60) and mapper.stats.completion.chunks_completed == 0
        mapper.integrate(frames[4])
        assert mapper.wait_for_completion(timeout_s=60)
        due = {chunk for chunk, n in mapper.map.chunk_updates.items() if n >= 5}
        assert due and set(mapper.predictions._chunks) == due
    finally:
        mapper.close()


# ----------------------------------------------------------------------------- outputs
def test_observed_voxels_win_over_predictions(plane_mapper):
    mapper = plane_mapper
    observed = mapper.labelled_voxels(include_predicted=False)
    voxels = mapper.labelled_voxels()
    flagged = voxels.predicted
    assert flagged.sum() > 50 and (~flagged).sum() == len(observed.labels)
    # the observed part is unchanged, and no predicted voxel is one the map observed
    np.testing.assert_array_equal(voxels.positions_m[~flagged], observed.positions_m)
    np.testing.assert_array_equal(voxels.labels[~flagged], observed.labels)
    indices = mapper.map.voxel_indices(voxels.positions_m[flagged])
    assert np.isnan(mapper.map.observed_sdf(indices)).all()
    assert (voxels.labels[flagged] == PLANE_LABEL).all() and np.allclose(voxels.confidence[flagged], 0.9)
    assert (voxels.colors[flagged] == PLANE_COLOR).all()
    assert np.allclose(voxels.positions_m[flagged, 2], PLANE_Z_M)
    # only voxels the input had not observed are stored
    stored = mapper.predictions.voxels()
    assert len(stored.indices) < flagged.sum() * 8


def test_outputs_include_or_exclude_predictions_by_parameter(plane_mapper):
    mapper = plane_mapper
    without = (mapper.labelled_voxels(False), mapper.mesh(False), mapper.traversability(False))
    default = (mapper.labelled_voxels(), mapper.mesh(), mapper.traversability())
    assert not without[0].predicted.any() and not without[1].vertex_predicted.any() and not without[2].predicted.any()
    assert default[0].predicted.any() and default[1].vertex_predicted.any()
    mesh = default[1]
    assert len(mesh.triangles) > len(without[1].triangles)
    # the observed mesh comes first, unchanged (as a set: Open3D's CPU meshing orders vertices by thread timing)
    np.testing.assert_array_equal(np.unique(mesh.vertices_m[: len(without[1].vertices_m)], axis=0),
                                  np.unique(without[1].vertices_m, axis=0))
    flagged = mesh.vertex_predicted
    # mostly the plane; where it meets observed voxels behind a surface, their zero crossing too
    assert np.mean(np.abs(mesh.vertices_m[flagged, 2] - PLANE_Z_M) <= VOXEL_M) > 0.8
    assert (mesh.vertex_labels[flagged] == PLANE_LABEL).all()
    nearest = mapper.map.voxel_indices(mesh.vertices_m[flagged])
    assert np.isnan(mapper.map.observed_sdf(nearest)).all()
    # the predicted floor frees no cell of the grid: a planner should not drive on a guess
    grid, grid_observed = default[2], without[2]
    assert np.sum(grid.cells == grid.FREE) == np.sum(grid_observed.cells == grid.FREE) > 0
    assert not grid.predicted.any()
    # the config's default: completion.include_predicted
    mapper.config.completion.include_predicted = False
    assert not mapper.labelled_voxels().predicted.any() and not mapper.mesh().vertex_predicted.any()
    mapper.config.completion.include_predicted = True
    # below completion.min_confidence: left out
    mapper.config.completion.min_confidence = 0.95
    assert not mapper.labelled_voxels().predicted.any()
    mapper.config.completion.min_confidence = 0.0
    assert grid_observed.cells.size > 1


def test_save_load_keeps_predictions_and_reset_clears_them(plane_mapper, tmp_path):
    mapper = plane_mapper
    before = mapper.predictions.voxels()
    mapper.save(tmp_path / "map.npz")
    loaded = Mapper.from_file(tmp_path / "map.npz", config(None, enabled=False))
    after = loaded.predictions.voxels()
    order_b, order_a = np.argsort(pack_indices(before.indices)), np.argsort(pack_indices(after.indices))
    for name in ("indices", "tsdf", "colors", "labels", "confidence"):
        np.testing.assert_array_equal(getattr(before, name)[order_b], getattr(after, name)[order_a])
    assert loaded.predictions.num_chunks == mapper.predictions.num_chunks
    np.testing.assert_array_equal(loaded.labelled_voxels().predicted, mapper.labelled_voxels().predicted)
    version = mapper.predictions.version
    mapper.reset()
    assert mapper.predictions.num_voxels == 0 and mapper.predictions.version > version
    assert not mapper.labelled_voxels().predicted.any() and mapper.stats.completion.chunks_completed == 0
    mapper.load(tmp_path / "map.npz")
    assert mapper.predictions.num_voxels == len(before.indices)


def test_a_chunk_completed_across_a_reset_is_not_stored(weights, frames, monkeypatch):
    entered, release = threading.Event(), threading.Event()

    def held(net, voxel_map, chunk_index, context_voxels=8, read=None):
        out = plane_chunk(net, voxel_map, chunk_index, context_voxels, read)
        entered.set()
        assert release.wait(60)
        return out

    monkeypatch.setattr(live, "complete_chunk", held)
    mapper = Mapper(config(weights))
    try:
        for frame in frames[:3]:
            mapper.integrate(frame)
        assert entered.wait(30)
        mapper.reset()
        release.set()
        assert mapper.wait_for_completion(timeout_s=60)
        assert mapper.predictions.num_voxels == 0
    finally:
        mapper.close()


# ----------------------------------------------------------------------------- config
def test_completion_config_section():
    assert load_config().completion == CompletionConfig()  # mapping.yaml: off for library users and the CLI
    cfg = config_from_dict(MapperConfig, {"completion": {"enabled": True, "weights": "w.pt", "min_updates": 4,
                                                         "include_predicted": False, "min_confidence": 0.5}})
    assert cfg.completion == CompletionConfig(enabled=True, weights="w.pt", min_updates=4, include_predicted=False,
                                              min_confidence=0.5)
    with pytest.raises(ConfigError, match="completion.min_update"):
        config_from_dict(MapperConfig, {"completion": {"min_update": 4}})
    with pytest.raises(ConfigError, match="completion.enabled"):
        config_from_dict(MapperConfig, {"completion": {"enabled": "yes"}})


def test_completion_node_parameters():
    from semantic_mapping.ros.node_config import check_values, parameter_specs, parameters_from_values

    specs = {s.name: s for s in parameter_specs()}
    assert specs["completion.include_predicted"].kind == "bool" and specs["completion.weights"].optional
    assert specs["completion.min_updates"].description
    params = parameters_from_values({"completion.enabled": True, "completion.min_confidence": 0.3})
    assert params.mapper.completion.enabled and params.mapper.completion.min_confidence == 0.3
    for name, value in (("completion.min_updates", 0), ("completion.threads", 0), ("completion.min_confidence", 1.5),
                        ("completion.device", "tpu")):
        with pytest.raises(ConfigError, match=name):
            parameters_from_values({name: value})
    check_values(params)


def test_predicted_obstacles_block_the_grid_and_predicted_floor_frees_nothing():
    from semantic_mapping.config import OutputConfig
    from semantic_mapping.fusion.outputs import build_traversability
    from semantic_mapping.types import LabelledVoxels

    space = default_label_space()
    floor, chair = PLANE_LABEL, space.names.index("chair")
    # cells along x at 0.1 m: observed floor, predicted floor, predicted chair above predicted floor, observed chair
    positions = np.array([[0.05, 0.05, 0.0], [0.15, 0.05, 0.0], [0.25, 0.05, 0.0], [0.25, 0.05, 0.5],
                          [0.35, 0.05, 0.0], [0.35, 0.05, 0.5]], np.float32)
    labels = np.array([floor, floor, floor, chair, floor, chair], np.int32)
    predicted = np.array([False, True, True, True, False, False])
    voxels = LabelledVoxels(positions, np.zeros((6, 3), np.uint8), labels, np.ones(6, np.float32), predicted)
    grid = build_traversability(voxels, space, OutputConfig(grid_resolution_m=0.1), 0.1)
    col = np.floor((positions[[0, 1, 2, 4], 0] - grid.origin_xy_m[0]) / 0.1).astype(int)
    row = int(np.floor((0.05 - grid.origin_xy_m[1]) / 0.1))
    assert list(grid.cells[row, col]) == [grid.FREE, grid.UNKNOWN, grid.OCCUPIED, grid.OCCUPIED]
    assert list(grid.predicted[row, col]) == [False, False, True, False]
