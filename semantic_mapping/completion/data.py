"""Training and evaluation data for scene completion (SSR-2D §4.2 and §3.5) from simulated scenes.

An incomplete scan fuses part of a recording: the views kept (SSR-2D keeps about 40 %; our
recordings are continuous video, so whole runs of frames are kept or dropped) and, optionally, the
result with cube-shaped holes (SSR-2D's 50^3, 25^3 and 10^3 cubes of 2 cm voxels, each window masked
with p = 0.2). The more complete scan fuses every frame. Crops of both, aligned on the voxel grid,
are what the network reads and what its TSDF is compared against (Eq. 2). The 2D supervision comes
from views: the recording's own frames (depth, colour and the simulated segmenter's labels: Eq. 1,
3, 4) and virtual views at perturbed poses with wider fields of view (labels only, §3.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from semantic_mapping.config import FusionConfig, MapperConfig, ObjectsConfig
from semantic_mapping.types import CameraIntrinsics

_MASK_SALT = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class IncompleteScanConfig:
    """How an incomplete input scan is made from a recording (SSR-2D §4.2)."""

    keep_view_fraction: float = 0.4
    """Share of the recording's frames fused into the input; 1 keeps every frame."""
    segment_frames: int = 30
    """Frames are kept or dropped in runs of this many (neighbouring video frames see the same things)."""
    cube_sizes_m: tuple = (1.0, 0.5, 0.2)
    """Edges of the masking cubes: SSR-2D's 50, 25 and 10 voxels of 2 cm."""
    cube_probability: float = 0.0
    """Each cube-sized window of the grid is emptied with this probability (SSR-2D: 0.2); 0 = no cubes."""


@dataclass
class VirtualViewConfig:
    """Perturbations of real camera poses that make virtual views (SSR-2D §3.5)."""

    yaw_deg: float = 45.0
    """Yaw change, uniform in [-yaw, yaw]."""
    pitch_deg: float = 30.0
    """Pitch change, uniform in [-pitch, pitch]."""
    offset_m: float = 1.0
    """Position change along each axis, uniform in [-offset, offset]."""
    back_m: float = 2.0
    """Further move backwards along the view direction, uniform in [0, back]."""
    fov_factor: tuple = (1.0, 3.0)
    """The tangent of the half field of view grows by a factor uniform in this range."""
    min_clearance_m: float = 0.2
    """A virtual camera must stand on free floor at least this far from obstacles."""
    height_range_m: tuple = (0.3, 2.2)
    """... and at a height in this range."""


@dataclass
class TrainingView:
    """One view that supervises renders of the completed volume."""

    intrinsics: CameraIntrinsics
    T_world_cam: np.ndarray  # [4, 4]
    labels: np.ndarray  # [H, W] int32 class ids from the (simulated) 2D segmenter, ignore id where none
    depth_m: np.ndarray  # [H, W] float32, 0 = invalid: what the crop must explain (a loss on real views only)
    rgb: np.ndarray  # [H, W, 3] uint8 (a loss on real views only)
    is_virtual: bool


@dataclass
class CompletionScene:
    """A simulated scene fused twice: the incomplete input and the more complete target."""

    seed: int
    voxel_size_m: float
    incomplete: object  # Mapper: the input scan
    complete: object  # Mapper: every frame fused
    kept_frames: np.ndarray  # [N] bool, frames fused into the input
    views: list = field(default_factory=list)  # [TrainingView] real then virtual


def kept_frames(num_frames: int, config: IncompleteScanConfig, rng: np.random.Generator) -> np.ndarray:
    """[num_frames] bool: whole runs of `segment_frames` frames kept so that about `keep_view_fraction` are."""
    if config.keep_view_fraction >= 1.0:
        return np.ones(num_frames, bool)
    segments = math.ceil(num_frames / config.segment_frames)
    count = min(segments, max(1, round(config.keep_view_fraction * segments)))
    keep_segment = np.zeros(segments, bool)
    keep_segment[rng.choice(segments, count, replace=False)] = True
    return np.repeat(keep_segment, config.segment_frames)[:num_frames]


def _uniform_hash(seed: int, salt: int, cells: np.ndarray) -> np.ndarray:  # [M] float64 in [0, 1)
    """A uniform number per integer cell [M, 3] that depends only on (seed, salt, cell): the same cube
    is masked whichever crop asks (a splitmix64-style mix)."""
    with np.errstate(over="ignore"):
        h = np.full(len(cells), np.uint64(seed) * _MASK_SALT + np.uint64(salt), np.uint64)
        for axis in range(3):
            h ^= cells[:, axis].astype(np.int64).view(np.uint64) + _MASK_SALT + (h << np.uint64(6)) + (h >> np.uint64(2))
            h ^= h >> np.uint64(30)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(27)
            h *= np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def cube_mask(origin_index: np.ndarray, shape: tuple, voxel_size_m: float, config: IncompleteScanConfig,
              seed: int) -> np.ndarray:  # [X, Y, Z] bool, True = masked out
    """Voxels of a crop (integer index of its first voxel, shape) inside masked cubes: for each cube
    size, the grid is tiled by cube-sized windows and each window is masked with `cube_probability`."""
    masked = np.zeros(shape, bool)
    if config.cube_probability <= 0.0:
        return masked
    index = np.stack(np.meshgrid(*[np.arange(n) + o for n, o in zip(shape, origin_index)], indexing="ij"), -1)
    for salt, size_m in enumerate(config.cube_sizes_m):
        edge = max(1, round(size_m / voxel_size_m))
        window = np.floor_divide(index, edge).reshape(-1, 3)  # [X*Y*Z, 3]
        cells, inverse = np.unique(window, axis=0, return_inverse=True)
        hit = _uniform_hash(seed, salt, cells) < config.cube_probability
        masked |= hit[inverse.reshape(-1)].reshape(shape)
    return masked


def fuse_frames(recording, frame_ids, voxel_size_m: float, progress: bool = False, on_frame=None):
    """A Mapper (CPU, objects off) with the given frames of a simulated recording fused; `on_frame(frame)`
    sees each frame as it is fused."""
    from tqdm import tqdm

    from semantic_mapping.pipeline import Mapper

    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=voxel_size_m, device="cpu"),
                                 objects=ObjectsConfig(enabled=False)))
    for i in tqdm(list(frame_ids), desc=f"fuse scene {recording.seed}", unit="frame", disable=not progress):
        frame = recording.frame(int(i), masks=False)
        mapper.integrate(frame)
        if on_frame is not None:
            on_frame(frame)
    return mapper


def training_view(frame, width_px: int, height_px: int, virtual: bool) -> TrainingView:
    """A frame brought to the training resolution (nearest-neighbour: depth edges stay sharp)."""
    H, W = frame.depth_m.shape
    rows = np.minimum(((np.arange(height_px) + 0.5) * H / height_px).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(width_px) + 0.5) * W / width_px).astype(np.int64), W - 1)
    pick = np.ix_(rows, cols)
    return TrainingView(frame.intrinsics.scaled(width_px, height_px), np.asarray(frame.T_world_cam),
                        frame.class_probs.argmax(-1).astype(np.int32)[pick], frame.depth_m[pick].astype(np.float32),
                        frame.rgb[pick], virtual)


def perturbed_pose(T_world_cam: np.ndarray, config: VirtualViewConfig, rng: np.random.Generator) -> np.ndarray:
    """A camera pose [4, 4] moved and turned from a real one as SSR-2D §3.5 describes."""
    yaw = math.radians(rng.uniform(-config.yaw_deg, config.yaw_deg))
    pitch = math.radians(rng.uniform(-config.pitch_deg, config.pitch_deg))
    from semantic_mapping.sim.primitives import yaw_matrix

    Rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(pitch), -math.sin(pitch)], [0.0, math.sin(pitch), math.cos(pitch)]])
    T = np.eye(4)
    T[:3, :3] = yaw_matrix(yaw)[:3, :3] @ T_world_cam[:3, :3] @ Rx  # yaw about the world's up axis, pitch about the camera's x
    forward = T[:3, 2]
    T[:3, 3] = T_world_cam[:3, 3] + rng.uniform(-config.offset_m, config.offset_m, 3) - forward * rng.uniform(0, config.back_m)
    return T


def virtual_views(recording, count: int, config: VirtualViewConfig, width_px: int, height_px: int,
                  rng: np.random.Generator, max_tries: int = 50) -> list:
    """`count` virtual views: real poses perturbed until the camera stands in free space, rendered
    noise-free with a wider field of view and labelled by the simulated segmenter."""
    from semantic_mapping.sim.render import SceneRenderer
    from semantic_mapping.sim.scene import floor_grid

    grid = floor_grid(recording.spec)
    views = []
    for _ in range(count):
        for _ in range(max_tries):
            _, T_real = recording.poses[rng.integers(len(recording.poses))]
            T = perturbed_pose(T_real, config, rng)
            xy, z = T[:3, 3][None, :2], T[2, 3]
            free = grid.free[tuple(grid.cell_of(xy)[0])] and grid.clearance_at(xy)[0] >= config.min_clearance_m
            if free and config.height_range_m[0] <= z <= config.height_range_m[1]:
                break
        else:
            continue
        factor = rng.uniform(*config.fov_factor)
        camera = replace(recording.config.camera, width_px=width_px, height_px=height_px)
        camera = replace(camera, fx=camera.fx * width_px / recording.config.camera.width_px / factor,
                         fy=camera.fy * height_px / recording.config.camera.height_px / factor,
                         cx=(width_px - 1) / 2.0, cy=(height_px - 1) / 2.0)
        renderer = SceneRenderer(recording.mesh, camera, recording.config.depth_noise, recording.segmenter.label_space)
        frame = renderer.render(T)
        frame.class_probs = recording.segmenter.predict(frame)
        views.append(training_view(frame, width_px, height_px, virtual=True))
    return views


def make_completion_scene(seed: int, num_frames: int, voxel_size_m: float, scan: IncompleteScanConfig,
                          view_size_px: tuple = (160, 128), real_view_stride: int = 10, num_virtual: int = 20,
                          virtual: Optional[VirtualViewConfig] = None, progress: bool = False) -> CompletionScene:
    """Scene `seed` fused incompletely and completely, with real and virtual training views (when every
    frame is kept, both are the same map and the input's holes come from `masked_input`'s cubes).

    Real views are every `real_view_stride`-th frame of the whole recording (views the input never
    saw are the ones that teach completion).
    """
    from semantic_mapping.sim.sequence import simulate

    recording = simulate(seed, num_frames=num_frames)
    rng = np.random.default_rng([seed, 6])
    kept = kept_frames(len(recording), scan, rng)
    complete = fuse_frames(recording, range(len(recording)), voxel_size_m, progress)
    incomplete = complete if kept.all() else fuse_frames(recording, np.flatnonzero(kept), voxel_size_m, progress)
    width, height = view_size_px
    views = [training_view(recording.frame(i, masks=False), width, height, virtual=False)
             for i in range(0, len(recording), real_view_stride)]
    views += virtual_views(recording, num_virtual, virtual or VirtualViewConfig(), width, height, rng)
    return CompletionScene(seed, voxel_size_m, incomplete, complete, kept, views)


def masked_input(crop: dict, origin_index: np.ndarray, voxel_size_m: float, scan: IncompleteScanConfig,
                 seed: int) -> dict:
    """The input crop with the scan's cube masks applied (masked voxels become unobserved)."""
    masked = cube_mask(origin_index, crop["tsdf"].shape, voxel_size_m, scan, seed)
    return {"tsdf": np.where(masked, 1.0, crop["tsdf"]).astype(np.float32),
            "weight": np.where(masked, 0.0, crop["weight"]).astype(np.float32),
            "color": np.where(masked[..., None], 0, crop["color"]).astype(np.uint8)}
