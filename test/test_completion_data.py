"""Completion training data: kept frame runs, cube masks that agree between crops, crops across chunk
borders, virtual view poses and renders."""

import math
from dataclasses import replace

import numpy as np
import pytest

from semantic_mapping.completion.data import (
    IncompleteScanConfig,
    VirtualViewConfig,
    cube_mask,
    kept_frames,
    masked_input,
    perturbed_pose,
    virtual_views,
)


def test_kept_frames_are_whole_runs_of_the_asked_share():
    config = IncompleteScanConfig(keep_view_fraction=0.4, segment_frames=30)
    kept = kept_frames(300, config, np.random.default_rng(0))
    assert kept.shape == (300,) and kept.mean() == pytest.approx(0.4)
    runs = kept.reshape(10, 30)
    assert np.all(runs.all(1) | ~runs.any(1))  # each run of 30 is kept or dropped whole
    assert kept_frames(50, replace(config, keep_view_fraction=1.0), np.random.default_rng(0)).all()


def test_cube_masks_agree_between_crops_and_mask_about_half():
    config = IncompleteScanConfig(cube_probability=0.2)
    big = cube_mask(np.array([-40, 8, -3]), (96, 80, 64), 0.04, config, seed=3)
    part = cube_mask(np.array([-40 + 17, 8 + 30, -3 + 5]), (40, 20, 33), 0.04, config, seed=3)
    assert np.array_equal(part, big[17:57, 30:50, 5:38])  # the same cube is masked whichever crop asks
    # three sizes, each window masked with p = 0.2: about 1 - 0.8^3 = 0.49 of the voxels
    assert 0.3 < big.mean() < 0.7
    assert not np.array_equal(big, cube_mask(np.array([-40, 8, -3]), (96, 80, 64), 0.04, config, seed=4))
    assert not cube_mask(np.zeros(3, np.int64), (8, 8, 8), 0.04, IncompleteScanConfig(), seed=3).any()
    # the largest cube is 1 m: 25 voxels of 4 cm, so masked runs along an axis reach that long
    one = cube_mask(np.zeros(3, np.int64), (100, 4, 4), 0.04, replace(config, cube_sizes_m=(1.0,), cube_probability=0.5), 1)
    assert set(np.diff(np.flatnonzero(np.diff(one[:, 0, 0].astype(int)) != 0))) <= {25, 50, 75}


@pytest.fixture(scope="module")
def small_map():
    """A map of a few simulated frames with small chunks, so crops straddle chunk borders."""
    from semantic_mapping.config import FusionConfig, MapperConfig, ObjectsConfig
    from semantic_mapping.pipeline import Mapper
    from semantic_mapping.sim.sequence import simulate

    recording = simulate(5, num_frames=20)
    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=0.05, device="cpu", chunk_shape_voxels=(16, 16, 16)),
                                 objects=ObjectsConfig(enabled=False)))
    for i in range(0, 20, 4):
        mapper.integrate(recording.frame(i, masks=False))
    return recording, mapper.map


def test_crops_across_chunk_borders_read_what_the_chunks_hold(small_map):
    _, voxel_map = small_map
    surface = voxel_map.surface_voxel_indices()
    origin = surface[len(surface) // 2] - [10, 7, 12]
    crop = voxel_map.read_region(origin, (24, 20, 28))
    assert (crop["weight"] > 0).mean() > 0.05
    chunk_shape = voxel_map.chunk_shape_voxels
    for offset in ([0, 0, 0], [23, 19, 27], [5, 12, 20], [17, 3, 9]):
        index = origin + offset
        chunk = voxel_map.read_chunk(np.floor_divide(index, chunk_shape))
        local = tuple(index - chunk["origin_index"])
        for key in ("tsdf", "weight", "color"):
            assert np.array_equal(crop[key][tuple(offset)], chunk[key][local])
    holes = masked_input(crop, origin, 0.05, IncompleteScanConfig(cube_probability=0.5), seed=1)
    emptied = (crop["weight"] > 0) & (holes["weight"] == 0)
    assert emptied.any() and np.all(holes["tsdf"][emptied] == 1.0) and np.all(holes["color"][emptied] == 0)
    kept = holes["weight"] > 0
    assert np.array_equal(holes["tsdf"][kept], crop["tsdf"][kept])


def test_perturbed_poses_stay_within_the_configured_ranges():
    rng = np.random.default_rng(0)
    config = VirtualViewConfig(back_m=0.0)
    T = np.eye(4)
    T[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]  # camera looking along world +x, level
    T[:3, 3] = [1.0, 2.0, 1.2]
    for _ in range(50):
        P = perturbed_pose(T, config, rng)
        assert np.allclose(P[:3, :3] @ P[:3, :3].T, np.eye(3), atol=1e-9)
        forward = P[:3, 2]
        assert abs(math.degrees(math.asin(forward[2]))) <= 30.0 + 1e-6  # pitch
        assert abs(math.degrees(math.atan2(forward[1], forward[0]))) <= 45.0 + 1e-6  # yaw
        assert np.all(np.abs(P[:3, 3] - T[:3, 3]) <= 1.0 + 1e-9)


def test_virtual_views_are_wider_and_labelled(small_map):
    recording, _ = small_map
    views = virtual_views(recording, 3, VirtualViewConfig(), 80, 64, np.random.default_rng(1))
    assert len(views) == 3
    real_fx = recording.intrinsics.fx * 80 / recording.intrinsics.width_px
    ignore = recording.segmenter.label_space.ignore_id
    for view in views:
        assert view.is_virtual and view.labels.shape == view.depth_m.shape == (64, 80)
        assert real_fx / 3 - 1e-6 <= view.intrinsics.fx <= real_fx + 1e-6
        assert np.mean(view.labels != ignore) > 0.5
