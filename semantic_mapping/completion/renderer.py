"""Differentiable raycast of a dense TSDF volume into depth, colour and semantic images (SSR-2D §3.3).

Each pixel's ray is marched through the volume at a fixed step (a fraction of a voxel); the TSDF is
trilinearly interpolated between voxel centres, and the first sample pair whose value changes sign
from + to - brackets the surface. The zero crossing is placed by linear interpolation between the
two samples, so the depth is a smooth function of the TSDF at those two points, and the colour and
semantic channels are trilinearly interpolated at the surface point (SPSG-style raycasting, which
SSR-2D extends with semantics). The search runs without autograd; only the two bracketing samples
and the surface lookups are evaluated differentiably, so gradients reach the TSDF (through depth,
and through the position of the colour/semantic lookups), the colour and the semantics.

Choices where the paper is silent:
- The TSDF may be in any unit (metres or truncation-normalised, as `VoxelMap` stores it): the
  crossing depends only on signs and ratios of values. Unobserved space should be positive.
- Semantics are whatever per-voxel channels are passed (logits are recommended: they are
  interpolated linearly and a cross-entropy applies the softmax to the rendered logits). The paper's
  one-hot class masks are the argmax of this image.
- A ray entering the volume inside a surface (negative first sample) hits only at a later + to -
  change; a - to + change (a back face) never counts.
- Pixels without a surface up to `depth_max_m` (6 m in the paper) get depth 0 and zero colour and
  semantics, the project's "no surface" convention, and are False in `hit`.
- Depth is z-depth in the camera frame (as every depth image of the project), not ray length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from semantic_mapping.types import CameraIntrinsics


@dataclass
class VolumeRender:
    """Images rendered from a dense volume; everything is zero where `hit` is False."""

    depth_m: torch.Tensor  # [H, W] z-depth, camera frame
    color: Optional[torch.Tensor]  # [H, W, 3] in the volume's colour range, None when no colour was given
    semantics: Optional[torch.Tensor]  # [H, W, C] the volume's semantic channels, None when none were given
    hit: torch.Tensor  # [H, W] bool, a surface was found along the pixel's ray


def pixel_rays_cam(intrinsics: CameraIntrinsics, dtype=torch.float32) -> torch.Tensor:  # [H * W, 3]
    """Camera-frame ray of every pixel (row-major), scaled so that z = 1: a point at depth d is d * ray.

    Pixel centres are at integer coordinates (OpenCV: x right, y down, z forward).
    """
    W, H = intrinsics.width_px, intrinsics.height_px
    v, u = torch.meshgrid(torch.arange(H, dtype=dtype), torch.arange(W, dtype=dtype), indexing="ij")
    x = (u - intrinsics.cx) / intrinsics.fx
    y = (v - intrinsics.cy) / intrinsics.fy
    return torch.stack([x, y, torch.ones_like(x)], dim=-1).reshape(-1, 3)


def _ray_box_interval(
    origin_vox: torch.Tensor,  # [3] ray origin, voxel coordinates (voxel centres at integers)
    dirs_vox: torch.Tensor,  # [R, 3] voxels per metre of depth
    box_max_vox: torch.Tensor,  # [3] far corner of the box of voxel centres (the near corner is 0)
) -> tuple[torch.Tensor, torch.Tensor]:  # t_near [R], t_far [R] in metres of depth (t_near > t_far: miss)
    """Slab test of every ray against the axis-aligned box [0, box_max_vox]."""
    safe = torch.where(dirs_vox.abs() < 1e-12, torch.full_like(dirs_vox, 1e-12), dirs_vox)
    t0 = (0.0 - origin_vox) / safe  # [R, 3]
    t1 = (box_max_vox - origin_vox) / safe
    t_near = torch.minimum(t0, t1).amax(dim=1)
    t_far = torch.maximum(t0, t1).amin(dim=1)
    return t_near, t_far


def _sample(volume: torch.Tensor, points_vox: torch.Tensor) -> torch.Tensor:  # [C, P]
    """Trilinear values of `volume` [C, X, Y, Z] at continuous voxel coordinates [P, 3] (centres at integers)."""
    size = torch.tensor(volume.shape[1:], dtype=points_vox.dtype, device=points_vox.device)
    grid = points_vox * (2.0 / (size - 1).clamp_min(1)) - 1.0  # [P, 3] in [-1, 1] over the voxel centres
    grid = grid.flip(-1).reshape(1, -1, 1, 1, 3)  # grid_sample wants (z, y, x) for a [X, Y, Z] volume
    out = F.grid_sample(volume.unsqueeze(0), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(volume.shape[0], -1)


def render_volume(
    tsdf: torch.Tensor,  # [X, Y, Z] signed distance (any unit; positive in free and unobserved space)
    color: Optional[torch.Tensor],  # [3, X, Y, Z] e.g. in [0, 1], or None
    semantics: Optional[torch.Tensor],  # [C, X, Y, Z] logits (or probabilities), or None
    origin_m,  # [3] world position of the centre of voxel (0, 0, 0) (for a map chunk: origin_index * voxel_size_m)
    voxel_size_m: float,
    intrinsics: CameraIntrinsics,
    T_world_cam,  # [4, 4] camera pose
    step_voxels: float = 0.5,
    depth_min_m: float = 0.05,
    depth_max_m: float = 6.0,
    skip_brick_voxels: int = 2,
) -> VolumeRender:
    """Raycast the volume at a pinhole camera; differentiable w.r.t. tsdf, color and semantics.

    The ray is sampled every `step_voxels` voxels (3D distance) from where it enters the box of
    voxel centres (or `depth_min_m`) to where it leaves it (or `depth_max_m`); samples far from any
    non-positive value are skipped (bricks of `skip_brick_voxels`^3 voxels; 0 samples everywhere)
    and rays stop at their first hit (see `_first_crossing`); both leave the result unchanged.
    """
    dtype, device = tsdf.dtype, tsdf.device
    X, Y, Z = tsdf.shape
    W, H = intrinsics.width_px, intrinsics.height_px
    T = torch.as_tensor(np.asarray(T_world_cam, dtype=np.float64)).to(dtype=dtype, device=device)
    origin = torch.as_tensor(np.asarray(origin_m, dtype=np.float64)).to(dtype=dtype, device=device)
    rays = pixel_rays_cam(intrinsics, dtype).to(device)  # [R, 3]
    dirs_vox = rays @ T[:3, :3].T / voxel_size_m  # [R, 3] voxels per metre of depth
    cam_vox = (T[:3, 3] - origin) / voxel_size_m  # [3] camera centre in voxel coordinates
    box_max = torch.tensor([X - 1, Y - 1, Z - 1], dtype=dtype, device=device)
    t_near, t_far = _ray_box_interval(cam_vox, dirs_vox, box_max)
    t_near = t_near.clamp_min(depth_min_m)
    t_far = t_far.clamp_max(depth_max_m)
    dt = step_voxels / dirs_vox.norm(dim=1)  # [R] metres of depth per sample
    num_samples = torch.where(t_far >= t_near, torch.floor((t_far - t_near) / dt) + 1, torch.zeros_like(dt)).long()

    hit_ray, hit_index = _first_crossing(tsdf, cam_vox, dirs_vox, t_near, dt, num_samples, step_voxels, skip_brick_voxels)

    # Differentiable part: the two bracketing samples of every hit ray, then the surface lookups.
    t_a = t_near[hit_ray] + hit_index.to(dtype) * dt[hit_ray]  # [P] depth of the last positive sample
    t_b = t_a + dt[hit_ray]
    d_hit = dirs_vox[hit_ray]  # [P, 3]
    pair = torch.cat([cam_vox + t_a[:, None] * d_hit, cam_vox + t_b[:, None] * d_hit])  # [2P, 3]
    values = _sample(tsdf.unsqueeze(0), pair)[0]  # [2P]
    sdf_a, sdf_b = values[: len(t_a)], values[len(t_a):]
    fraction = (sdf_a / (sdf_a - sdf_b).clamp_min(torch.finfo(dtype).tiny)).clamp(0.0, 1.0)  # [P]
    depth_hit = t_a + fraction * (t_b - t_a)  # [P]
    surface_vox = cam_vox + depth_hit[:, None] * d_hit  # [P, 3]

    hit = torch.zeros(H * W, dtype=torch.bool, device=device)
    hit[hit_ray] = True
    depth = torch.zeros(H * W, dtype=dtype, device=device).index_put((hit_ray,), depth_hit)
    color_img = sem_img = None
    if color is not None or semantics is not None:
        channels = [v for v in (color, semantics) if v is not None]
        looked_up = _sample(torch.cat(channels, dim=0), surface_vox).T  # [P, 3 + C]
        out = torch.zeros(H * W, looked_up.shape[1], dtype=looked_up.dtype, device=device).index_put((hit_ray,), looked_up)
        if color is not None:
            color_img = out[:, : color.shape[0]].reshape(H, W, -1)
        if semantics is not None:
            sem_img = out[:, out.shape[1] - semantics.shape[0]:].reshape(H, W, -1)
    return VolumeRender(depth_m=depth.reshape(H, W), color=color_img, semantics=sem_img, hit=hit.reshape(H, W))


def _may_cross(tsdf: torch.Tensor, brick_voxels: int) -> torch.Tensor:  # [X', Y', Z'] bool
    """Bricks of `brick_voxels`^3 voxel cells whose trilinear support holds a value <= 0.

    Brick b covers continuous coordinates [b B, (b + 1) B) on each axis; interpolation there reads
    voxels b B .. (b + 1) B, so a brick without a flag interpolates only positive values.
    """
    B = brick_voxels
    padded_shape = [-(-n // B) * B + 1 for n in tsdf.shape]
    pad = []
    for n, m in zip(reversed(tsdf.shape), reversed(padded_shape)):
        pad += [0, m - n]
    padded = F.pad(tsdf[None, None], pad, mode="replicate")  # edge values, as grid_sample's border padding
    lowest = -F.max_pool3d(-padded, kernel_size=B + 1, stride=B)  # [1, 1, X', Y', Z']
    return lowest[0, 0] <= 0


@torch.no_grad()
def _first_crossing(
    tsdf: torch.Tensor,  # [X, Y, Z]
    cam_vox: torch.Tensor,  # [3] camera centre, voxel coordinates
    dirs_vox: torch.Tensor,  # [R, 3] voxels per metre of depth
    t_near: torch.Tensor,  # [R] depth of sample 0
    dt: torch.Tensor,  # [R] depth step (step_voxels voxels of 3D distance)
    num_samples: torch.Tensor,  # [R] samples along each ray (0: the ray misses the volume)
    step_voxels: float,
    brick_voxels: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # hit ray indices [P], index of the last positive sample [P]
    """For every ray, the first sample i with tsdf(i) > 0 >= tsdf(i + 1).

    Empty-space skipping: every `per_coarse`-th sample is a coarse sample (at most a brick apart).
    A fine sample inside a flagged brick (`_may_cross`) is less than a brick from its nearest
    coarse sample, so that coarse sample lies in a flagged brick of the flags dilated by one brick.
    A segment of fine samples (two coarse steps) whose three coarse samples are all unflagged after
    dilation is therefore known to be positive and is not interpolated. Rays are dropped as soon as
    they hit.
    """
    device, dtype = tsdf.device, tsdf.dtype
    volume = tsdf.detach().unsqueeze(0)
    skip = brick_voxels > 0
    flags = _may_cross(tsdf.detach(), max(brick_voxels, 1)).to(dtype)[None, None]
    flags = (F.max_pool3d(flags, kernel_size=3, stride=1, padding=1)[0, 0] > 0)  # [X', Y', Z'] dilated by a brick
    nbx, nby, nbz = flags.shape
    flags = flags.reshape(-1) if skip else torch.ones_like(flags.reshape(-1))
    per_coarse = max(1, int(brick_voxels / step_voxels)) if skip else 8  # fine samples per coarse step
    S = 2 * per_coarse  # fine samples per segment
    offsets = torch.arange(S, dtype=dtype, device=device)  # [S]
    coarse_offsets = torch.arange(0, S + 1, per_coarse, dtype=dtype, device=device)  # [3]

    def flagged(points: torch.Tensor) -> torch.Tensor:  # [N, 3] voxel coordinates -> [N] bool
        brick = (points * (1.0 / max(brick_voxels, 1))).floor().long()
        flat = (brick[:, 0].clamp(0, nbx - 1) * nby + brick[:, 1].clamp(0, nby - 1)) * nbz + brick[:, 2].clamp(0, nbz - 1)
        return flags[flat]

    active = torch.nonzero(num_samples > 1)[:, 0]  # rays still marching
    previous = torch.full((len(active),), -1.0, dtype=dtype, device=device)  # value before the segment
    hit_rays, hit_indices = [], []
    start = 0
    while len(active):
        t0, step = t_near[active, None] + start * dt[active, None], dt[active, None]  # [A, 1]
        coarse = cam_vox + (t0 + coarse_offsets * step)[..., None] * dirs_vox[active, None, :]  # [A, 3, 3]
        coarse_flag = flagged(coarse.reshape(-1, 3)).reshape(len(active), -1)  # [A, 3]
        values = torch.ones(len(active), S, dtype=dtype, device=device)  # known positive where not sampled
        near = torch.nonzero(coarse_flag.any(dim=1))[:, 0]  # rays that pass near a surface here
        if len(near):  # all samples of the segment: cheaper than picking the flagged ones
            points = cam_vox + (t0[near] + offsets * step[near])[..., None] * dirs_vox[active[near], None, :]  # [N, S, 3]
            values[near] = _sample(volume, points.reshape(-1, 3))[0].reshape(len(near), S)
        inside = (start + offsets.long())[None] < num_samples[active, None]  # [A, S]
        values = torch.where(inside, values, torch.ones_like(values))  # samples past the end never cross
        with_previous = torch.cat([previous[:, None], values], dim=1)  # [A, S + 1]
        crossing = (with_previous[:, :-1] > 0) & (with_previous[:, 1:] <= 0) & inside  # [A, S]: i-1 -> i
        found = crossing.any(dim=1)
        if found.any():
            first = crossing[found].to(torch.int8).argmax(dim=1)  # first crossing in the segment
            hit_rays.append(active[found])
            hit_indices.append(start + first - 1)  # the last positive sample (may be in the previous segment)
        keep = ~found & (start + S < num_samples[active])
        previous = values[keep, -1]
        active = active[keep]
        start += S
    if not hit_rays:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    return torch.cat(hit_rays), torch.cat(hit_indices)
