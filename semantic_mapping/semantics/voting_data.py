"""What soft voting reads from the map and the keyframes, for training and for voting.

`point_views` gathers, for points near the fused surface, the N nearest keyframes that see them
(visibility by `visibility.visible_pairs`), the probabilities sampled there, the view cues and the
local TSDF geometry M(x). `prepare_scene` builds the 2D-supervised training data of one
simulated scene (GNeSF §3.3): rays of held-out views, a few samples along each ray around the
measured surface with the SDF rendering weights of Eq. 8-9, and the ground-truth 2D label.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from semantic_mapping.config import MapperConfig
from semantic_mapping.fusion.voxel_map import VoxelMap
from semantic_mapping.semantics.keyframes import KeyframeBuffer, KeyframeConfig, sample_views
from semantic_mapping.semantics.visibility import sample_tsdf, visible_pairs
from semantic_mapping.semantics.voting import GEOMETRY_DIM

_AXES = torch.tensor([[0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float64)


def geometry_encoding(vmap: VoxelMap, points_m: torch.Tensor) -> torch.Tensor:  # [P, GEOMETRY_DIM]
    """M(x): TSDF (truncation units, unknown = 1) at x and x ± one voxel per axis, the share of
    those 7 samples that are known, and the unit SDF gradient (towards free space)."""
    P = len(points_m)
    offsets = _AXES * vmap.voxel_size_m  # [7, 3]
    x = points_m.double()[:, None] + offsets  # [P, 7, 3]
    sdf, valid = sample_tsdf(vmap, x.reshape(-1, 3))
    tsdf = torch.where(valid, sdf / vmap.sdf_trunc_m, torch.ones_like(sdf)).reshape(P, 7).float()  # [P, 7]
    known = valid.reshape(P, 7).float().mean(1, keepdim=True)  # [P, 1]
    gradient = tsdf[:, 1::2] - tsdf[:, 2::2]  # [P, 3] central differences along x, y, z
    normal = gradient / gradient.norm(dim=1, keepdim=True).clamp(min=1e-6)
    out = torch.cat([tsdf, known, normal], dim=1)
    assert out.shape[1] == GEOMETRY_DIM
    return out


def facing_camera(normal: torch.Tensor, points_m: torch.Tensor, camera_m: torch.Tensor) -> torch.Tensor:  # [P, 3]
    """Normals [P, 3] at points [P, 3] turned to the side of the camera at `camera_m` ([P, 3] or [3],
    world frame): the observed side. Behind a surface, unknown TSDF reads as free space and turns the
    gradient away from the camera; a ceiling seen from below must face down."""
    away = ((camera_m - points_m) * normal).sum(-1, keepdim=True) < 0  # [P, 1]
    return torch.where(away, -normal, normal)


@dataclass
class PointViews:
    """Per point, up to N keyframes that see it, and its local geometry."""

    view_index: torch.Tensor  # [P, N] int64 keyframe index, -1 = none
    valid: torch.Tensor  # [P, N] bool: in the image, visible (unless disabled), with semantics
    probs: torch.Tensor  # [P, N, C] float32 sampled class probabilities
    pixel_uv: torch.Tensor  # [P, N, 2] float32 keyframe pixels (stored resolution)
    displacement_m: torch.Tensor  # [P, N, 3] float32 x - o_i, world frame
    geometry: torch.Tensor  # [P, GEOMETRY_DIM] float32
    features: Optional[torch.Tensor] = None  # [P, N, d] float32 sampled keyframe features (zeros where not valid), None without an encoder

    def select(self, rows: torch.Tensor) -> "PointViews":
        """The points `rows` (indices or a mask) only."""
        return PointViews(*(None if (value := getattr(self, f.name)) is None else value[rows]
                            for f in dataclasses.fields(self)))


def point_views(
    vmap: VoxelMap, buffer: KeyframeBuffer, points_m: torch.Tensor, num_views: int, visibility: bool = True
) -> PointViews:
    """Sample the `num_views` nearest keyframes of each point [P, 3] (world frame, metres)."""
    samples = sample_views(buffer, points_m, num_views)
    valid = samples.valid & (samples.probs.sum(-1) > 0)  # [P, N]
    if visibility and valid.any():
        p, s = valid.nonzero(as_tuple=True)
        centres = buffer.camera_centres_m[samples.view_index[p, s]]  # [M, 3]
        seen = visible_pairs(vmap, points_m[p], centres)  # [M]
        valid[p[~seen], s[~seen]] = False
    mask = valid.unsqueeze(-1)
    return PointViews(samples.view_index.where(valid, -1), valid, samples.probs * mask, samples.pixel_uv,
                      samples.displacement_m, geometry_encoding(vmap, points_m),
                      None if samples.features is None else samples.features * mask)


@dataclass
class SceneData:
    """One scene's training data: keyframe images and supervised rays of held-out views."""

    keyframe_rgb: torch.Tensor  # [K, 3, h, w] float32 in [0, 1]
    image_wh: tuple  # (w, h) of the stored keyframes
    views: PointViews  # for R * S points, ray-major
    render_weight: torch.Tensor  # [R, S] float32 Eq. 8-9 weights, rows sum to 1
    prior_normal: torch.Tensor  # [R * S, 3] float32 each sample's TSDF normal turned towards its ray's camera (`facing_camera`)
    height_m: torch.Tensor  # [R * S] float32 height of each sample above the floor (world z; the simulator's floor is at 0)
    label: torch.Tensor  # [R] int64 ground-truth class of each ray's pixel
    samples_per_ray: int


@dataclass
class TrainingDataConfig:
    """How one simulated scene becomes training data."""

    num_frames: int = 150
    """Frames simulated per scene."""
    held_out_every: int = 10
    """Every Nth frame that is not a keyframe is a held-out (supervision) view."""
    rays_per_view: int = 256
    """Pixels with a ground-truth label sampled per held-out view."""
    samples_per_ray: int = 4
    """Samples along each ray around the measured surface (within ± `sample_span_voxels`)."""
    sample_span_voxels: float = 1.5
    """Half-width, in voxels, of the band around the measured depth the samples span."""
    render_sharpness_voxels: float = 1.0
    """tr of Eq. 8, in voxels: the SDF scale over which rendering weights fall off from the surface."""
    num_views: int = 8
    """Keyframes per point (N)."""


def prepare_scene(seed: int, mapper_config: MapperConfig, keyframes: KeyframeConfig, config: TrainingDataConfig,
                  visibility: bool = True, sim_config=None) -> SceneData:
    """Simulate scene `seed`, fuse its geometry, keep its keyframes, and sample supervised rays."""
    from semantic_mapping.pipeline import Mapper
    from semantic_mapping.sim.sequence import simulate

    recording = simulate(seed, sim_config, num_frames=config.num_frames)
    mapper = Mapper(mapper_config)
    C = mapper.label_space.num_classes
    buffer = KeyframeBuffer(dataclasses.replace(keyframes, max_keyframes=10**6), C, semantics=mapper_config.semantics)
    rng = np.random.default_rng([seed, 0x7A1])
    rays = []  # (origin [3], directions [R, 3], depth [R], labels [R])
    candidates = 0
    for index in range(len(recording)):
        frame = recording.frame(index, masks=False)
        mapper.integrate(dataclasses.replace(frame, class_probs=None))
        if buffer.consider(frame):
            continue
        candidates += 1
        if candidates % config.held_out_every:
            continue
        labels = frame.ground_truth.labels
        good = np.flatnonzero((labels.reshape(-1) != mapper.label_space.ignore_id) & (frame.depth_m.reshape(-1) > 0))
        pick = rng.choice(good, size=min(config.rays_per_view, len(good)), replace=False)
        row, col = np.divmod(pick, frame.width_px)
        pixels = np.stack([col, row, np.ones_like(col)], axis=1).astype(np.float64)  # [R, 3] homogeneous
        rays_cam = pixels @ np.linalg.inv(frame.intrinsics.K).T * frame.depth_m.reshape(-1)[pick, None]  # [R, 3]
        depth = np.linalg.norm(rays_cam, axis=1)
        directions = (rays_cam / depth[:, None]) @ frame.T_world_cam[:3, :3].T
        rays.append((frame.T_world_cam[:3, 3], directions, depth, labels.reshape(-1)[pick]))
    origin = np.concatenate([np.repeat(o[None], len(d), 0) for o, d, _, _ in rays])  # [R, 3]
    directions = np.concatenate([d for _, d, _, _ in rays])
    depth = np.concatenate([t for _, _, t, _ in rays])
    labels = np.concatenate([lbl for _, _, _, lbl in rays])
    S = config.samples_per_ray
    vs = mapper.voxel_size_m
    offsets = np.linspace(-config.sample_span_voxels, config.sample_span_voxels, S) * vs  # [S]
    points = origin[:, None] + directions[:, None] * (depth[:, None] + offsets)[..., None]  # [R, S, 3]
    points_t = torch.from_numpy(points.reshape(-1, 3)).float()
    views = point_views(mapper.map, buffer, points_t, config.num_views, visibility)
    sdf, known = sample_tsdf(mapper.map, points_t)
    tr = config.render_sharpness_voxels * vs
    weight = torch.where(known, torch.sigmoid(sdf / tr) * torch.sigmoid(-sdf / tr), torch.zeros_like(sdf))  # Eq. 8
    weight = weight * views.valid.any(-1)
    weight = weight.reshape(-1, S)
    keep = weight.sum(1) > 0  # rays with something to render
    weight = weight[keep] / weight[keep].sum(1, keepdim=True)  # Eq. 9
    keep_samples = keep.repeat_interleave(S)
    views = views.select(keep_samples)
    camera_m = torch.from_numpy(np.repeat(origin, S, axis=0)[keep_samples.numpy()]).float()  # [R' * S, 3]
    prior_normal = facing_camera(views.geometry[:, -3:], points_t[keep_samples], camera_m)
    kf = buffer.keyframes
    return SceneData(
        keyframe_rgb=torch.stack([k.rgb_small for k in kf]),
        image_wh=(kf[0].intrinsics.width_px, kf[0].intrinsics.height_px),
        views=views, render_weight=weight.float(), prior_normal=prior_normal, height_m=points_t[keep_samples, 2],
        label=torch.from_numpy(labels[keep.numpy()]).long(),
        samples_per_ray=S,
    )
