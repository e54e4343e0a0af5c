"""Bounded keyframe buffer and multi-view sampling for learned soft voting (GNeSF §3.1-3.2.2).

The buffer keeps a few downsampled keyframes (RGB, class probabilities, optional encoder
features, depth). `sample_views` projects 3D points into the N nearest keyframes that see them
and samples each keyframe's probabilities and features bilinearly, with the point's displacement
from the camera centre, its pixel and its depth in that view: the inputs of GNeSF's voting MLP.

Pixel convention (as `geometry.project_points`): integer (u, v) is the centre of pixel (u, v), so
an image of w x h pixels spans u in [-0.5, w - 0.5] and v in [-0.5, h - 0.5]. `grid_sample` uses
`align_corners=False`, whose normalised coordinate -1 / +1 is the outer edge of the border pixels:
g = (2 u + 1) / w - 1. Between the outer edge and the border pixel centres the border value is
held (`padding_mode="border"`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from semantic_mapping.config import ConfigError, KeyframeConfig, SemanticFusionConfig
from semantic_mapping.geometry import backproject_depth, invert_pose, project_points, transform_points
from semantic_mapping.semantics.bayesian import PixelSemantics
from semantic_mapping.types import CameraIntrinsics, Frame

Encoder = Callable[[torch.Tensor], torch.Tensor]
"""Image encoder: rgb [B, 3, h, w] float in [0, 1] -> features [B, d, h, w]."""


@dataclass
class Keyframe:
    """One stored view, at the reduced resolution h x w of `intrinsics`."""

    stamp_ns: int
    T_world_cam: np.ndarray  # [4, 4] float64
    intrinsics: CameraIntrinsics  # scaled to the stored resolution
    rgb_small: torch.Tensor  # [3, h, w] float32 in [0, 1]
    probs: torch.Tensor  # [C, h, w] float32 class probabilities; all zero where the pixel has no semantics
    features: Optional[torch.Tensor]  # [d, h, w] float32 encoder features, None without an encoder
    depth_small: torch.Tensor  # [h, w] float32 metres, nearest valid reading of each block, 0 = none


@dataclass
class ViewSamples:
    """Per point, the N nearest keyframes that see it (nearest first) and what they saw there.

    Slots past the views that see a point have view_index -1, valid False and zeros elsewhere.
    """

    view_index: torch.Tensor  # [P, N] int64 index into buffer.keyframes, -1 = no view
    valid: torch.Tensor  # [P, N] bool
    probs: torch.Tensor  # [P, N, C] float32 bilinear class probabilities
    features: Optional[torch.Tensor]  # [P, N, d] float32 bilinear features (d = 0 while empty), None without an encoder
    displacement_m: torch.Tensor  # [P, N, 3] float32 point minus camera centre, world frame
    pixel_uv: torch.Tensor  # [P, N, 2] float32 stored-resolution pixels, integer = pixel centre
    depth_in_view_m: torch.Tensor  # [P, N] float32 point's z in the camera frame


@dataclass
class _Stack:
    """The keyframes' data stacked for batched sampling (K keyframes, oldest first)."""

    maps: torch.Tensor  # [K, C + d, h, w] float32 probabilities then features
    T_cam_world: torch.Tensor  # [K, 4, 4] float32
    K: torch.Tensor  # [K, 3, 3] float32 stored-resolution intrinsics
    centres_m: torch.Tensor  # [K, 3] float32 camera centres, world frame


class KeyframeBuffer:
    """At most `config.max_keyframes` keyframes, oldest first.

    Selection: the first frame is a keyframe; a later frame is one when, relative to the newest
    keyframe, its camera moved >= min_translation_m, or turned >= min_rotation_deg, or its view
    overlap (`view_overlap`) is < max_overlap.

    Eviction (when a new keyframe overfills the buffer): every keyframe but the new one is scored
    by the pose distance to its nearest other keyframe, d = |t_i - t_j| / min_translation_m +
    angle(R_i, R_j) / min_rotation_deg; the one with the smallest score (most redundant) goes,
    the oldest among equal scores. Spread-out views of places seen long ago survive; the new
    keyframe always stays, as the reference for selection.

    Semantics come from `frame.class_probs`, or from labels + confidence as `PixelSemantics`
    builds them (with `semantics.label_confidence`); pixels without semantics store zero
    probabilities. A selected frame without semantics raises ValueError.
    """

    def __init__(
        self,
        config: KeyframeConfig,
        num_classes: int,
        encoder: Optional[Encoder] = None,
        *,
        semantics: Optional[SemanticFusionConfig] = None,
        device: str = "cpu",
    ):
        if config.max_keyframes < 1 or config.downsample < 1 or config.views_per_voxel < 1:
            raise ConfigError("keyframes: max_keyframes, downsample and views_per_voxel must be >= 1")
        if config.min_translation_m <= 0 or config.min_rotation_deg <= 0:
            raise ConfigError("keyframes: min_translation_m and min_rotation_deg must be > 0")
        self.config = config
        self.num_classes = num_classes
        self.encoder = encoder
        self.semantics = semantics or SemanticFusionConfig()
        self.device = torch.device(device)
        self._keyframes: list[Keyframe] = []
        self._stack: Optional[_Stack] = None  # cache, rebuilt after the keyframes change

    def __len__(self) -> int:
        return len(self._keyframes)

    @property
    def keyframes(self) -> list[Keyframe]:
        """The keyframes, oldest first (a copy of the list; `ViewSamples.view_index` indexes it)."""
        return list(self._keyframes)

    def consider(self, frame: Frame) -> bool:
        """Add `frame` as a keyframe if selection says so (evicting one when full); True if added."""
        if self._keyframes and not self._is_new_keyframe(frame):
            return False
        self._keyframes.append(self._make_keyframe(frame))
        if len(self._keyframes) > self.config.max_keyframes:
            del self._keyframes[self._most_redundant()]
        self._stack = None
        return True

    def _is_new_keyframe(self, frame: Frame) -> bool:
        last = self._keyframes[-1]
        T_last_cam = invert_pose(last.T_world_cam) @ frame.T_world_cam  # [4, 4]
        if np.linalg.norm(T_last_cam[:3, 3]) >= self.config.min_translation_m:
            return True
        if _rotation_deg(last.T_world_cam[:3, :3], frame.T_world_cam[:3, :3]) >= self.config.min_rotation_deg:
            return True
        return view_overlap(frame, last, self.config) < self.config.max_overlap

    def _most_redundant(self) -> int:
        """Index of the keyframe to evict (the rule is in the class docstring)."""
        poses = np.stack([kf.T_world_cam for kf in self._keyframes])  # [K, 4, 4]
        t = poses[:, :3, 3]  # [K, 3]
        R = poses[:, :3, :3]  # [K, 3, 3]
        dist_m = np.linalg.norm(t[:, None] - t[None], axis=-1)  # [K, K]
        angle_deg = _rotation_deg(R[:, None], R[None])  # [K, K], exactly symmetric
        score = dist_m / self.config.min_translation_m + angle_deg / self.config.min_rotation_deg  # [K, K]
        np.fill_diagonal(score, np.inf)
        nearest = score.min(axis=1)[:-1]  # [K - 1], the newest is never evicted
        return int(np.argmin(nearest))  # first minimum = oldest among ties

    def _make_keyframe(self, frame: Frame) -> Keyframe:
        ds = self.config.downsample
        H, W = frame.height_px, frame.width_px
        if (frame.intrinsics.width_px, frame.intrinsics.height_px) != (W, H):
            raise ValueError(f"frame is {W}x{H} px but its intrinsics are for "
                             f"{frame.intrinsics.width_px}x{frame.intrinsics.height_px}")
        h, w = H // ds, W // ds
        if self._keyframes and self._keyframes[0].depth_small.shape != (h, w):
            raise ValueError(f"stored size {w}x{h} differs from the buffer's keyframes")
        # Whole ds x ds blocks only: cropping the right/bottom remainder leaves fx, fy, cx, cy as they are.
        cropped = dataclasses.replace(frame.intrinsics, width_px=w * ds, height_px=h * ds)

        pixel_semantics = PixelSemantics(frame, np.arange(H * W), self.num_classes, self.semantics)
        probs_full = pixel_semantics.probs * pixel_semantics.known[:, None]  # [H*W, C] float32
        probs_small = _block_reduce(probs_full.reshape(H, W, -1), ds, np.mean)  # [h, w, C]
        rgb_small = _block_reduce(frame.rgb.astype(np.float32) / 255.0, ds, np.mean)  # [h, w, 3]
        depth_inf = np.where(frame.depth_m > 0, frame.depth_m, np.inf).astype(np.float32)  # [H, W]
        depth_small = _block_reduce(depth_inf[..., None], ds, np.min)[..., 0]  # [h, w] nearest valid reading
        depth_small[np.isinf(depth_small)] = 0.0

        rgb_small = torch.from_numpy(rgb_small).permute(2, 0, 1).contiguous().to(self.device)  # [3, h, w]
        features = None
        if self.encoder is not None:
            with torch.no_grad():
                features = self.encoder(rgb_small[None])  # [1, d, h, w]
            if features.dim() != 4 or features.shape[0] != 1 or features.shape[2:] != (h, w):
                raise ValueError(f"encoder returned {tuple(features.shape)}, expected [1, d, {h}, {w}]")
            features = features[0].float()  # [d, h, w]
        return Keyframe(
            stamp_ns=frame.stamp_ns,
            T_world_cam=np.asarray(frame.T_world_cam, dtype=np.float64).copy(),
            intrinsics=cropped.scaled(w, h),
            rgb_small=rgb_small,
            probs=torch.from_numpy(probs_small).permute(2, 0, 1).contiguous().to(self.device),  # [C, h, w]
            features=features,
            depth_small=torch.from_numpy(depth_small).to(self.device),
        )

    def _stacked(self) -> _Stack:
        if self._stack is None:
            kfs = self._keyframes
            maps = [torch.cat([kf.probs, kf.features]) if kf.features is not None else kf.probs for kf in kfs]
            T_cam_world = np.stack([invert_pose(kf.T_world_cam) for kf in kfs])  # [K, 4, 4]
            centres = np.stack([kf.T_world_cam[:3, 3] for kf in kfs])  # [K, 3]
            self._stack = _Stack(
                maps=torch.stack(maps),
                T_cam_world=torch.as_tensor(T_cam_world, dtype=torch.float32, device=self.device),
                K=torch.as_tensor(np.stack([kf.intrinsics.K for kf in kfs]), dtype=torch.float32, device=self.device),
                centres_m=torch.as_tensor(centres, dtype=torch.float32, device=self.device),
            )
        return self._stack

    @property
    def probs(self) -> torch.Tensor:  # [K, C, h, w]
        """Class probabilities of all keyframes, stacked (K >= 1)."""
        return self._stacked().maps[:, : self.num_classes]

    @property
    def features(self) -> Optional[torch.Tensor]:  # [K, d, h, w]
        """Encoder features of all keyframes, stacked; None without an encoder (K >= 1)."""
        return self._stacked().maps[:, self.num_classes:] if self.encoder is not None else None

    @property
    def T_cam_world(self) -> torch.Tensor:  # [K, 4, 4]
        """World-to-camera transforms of all keyframes, stacked (K >= 1)."""
        return self._stacked().T_cam_world

    @property
    def camera_centres_m(self) -> torch.Tensor:  # [K, 3]
        """Camera centres of all keyframes in the world frame, stacked (K >= 1)."""
        return self._stacked().centres_m


def view_overlap(frame: Frame, keyframe: Keyframe, config: KeyframeConfig) -> float:
    """Fraction of the frame's valid depth on a coarse pixel grid that the keyframe sees.

    A grid point counts when it reprojects inside the keyframe's image, in front of its camera,
    and not more than `overlap_depth_tolerance_m` behind the keyframe's depth there (unknown
    keyframe depth does not occlude). A frame without valid depth on the grid returns 1.0:
    overlap is then unknown and only motion selects keyframes.
    """
    s = config.overlap_grid_stride_px
    off = float(s // 2)
    depth_grid = frame.depth_m[s // 2:: s, s // 2:: s]  # [Hg, Wg], grid pixel (i, j) = full pixel s*(i, j) + off
    intr = frame.intrinsics
    K_grid = np.array([[intr.fx / s, 0.0, (intr.cx - off) / s], [0.0, intr.fy / s, (intr.cy - off) / s], [0, 0, 1]])
    points_cam = backproject_depth(depth_grid, K_grid)[depth_grid > 0]  # [G, 3] frame camera
    if len(points_cam) == 0:
        return 1.0
    T_kf_cam = invert_pose(keyframe.T_world_cam) @ frame.T_world_cam  # [4, 4]
    uv, z = project_points(transform_points(T_kf_cam, points_cam.astype(np.float64)), keyframe.intrinsics.K)
    h, w = keyframe.depth_small.shape
    inside = (z > 0) & (uv[:, 0] >= -0.5) & (uv[:, 0] <= w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= h - 0.5)
    col = np.clip(np.rint(uv[:, 0]), 0, w - 1).astype(np.int64)  # [G]
    row = np.clip(np.rint(uv[:, 1]), 0, h - 1).astype(np.int64)  # [G]
    kf_depth = keyframe.depth_small.cpu().numpy()[row, col]  # [G]
    visible = (kf_depth == 0) | (z <= kf_depth + config.overlap_depth_tolerance_m)
    return float(np.mean(inside & visible))


def sample_views(
    buffer: KeyframeBuffer,
    points_m: torch.Tensor,  # [P, 3] world frame
    num_views: Optional[int] = None,
    *,
    chunk_points: int = 8192,
) -> ViewSamples:
    """Project each point into the `num_views` (default config.views_per_voxel) nearest keyframes
    (by camera-centre distance) where it lands inside the image in front of the camera, and sample
    them bilinearly (pixel centres at integer coordinates; see the module docstring).

    Works on `chunk_points` points at a time: memory is O(chunk_points x K x (C + d)).
    """
    N = num_views or buffer.config.views_per_voxel
    C = buffer.num_classes
    points_m = points_m.to(buffer.device, torch.float32)
    P = points_m.shape[0]
    K = len(buffer)
    d = buffer.features.shape[1] if K and buffer.encoder is not None else 0
    out = ViewSamples(
        view_index=torch.full((P, N), -1, dtype=torch.long, device=buffer.device),
        valid=torch.zeros((P, N), dtype=torch.bool, device=buffer.device),
        probs=points_m.new_zeros((P, N, C)),
        features=points_m.new_zeros((P, N, d)) if buffer.encoder is not None else None,
        displacement_m=points_m.new_zeros((P, N, 3)),
        pixel_uv=points_m.new_zeros((P, N, 2)),
        depth_in_view_m=points_m.new_zeros((P, N)),
    )
    if K == 0:
        return out
    stack = buffer._stacked()
    n = min(N, K)
    for start in range(0, P, chunk_points):
        rows = slice(start, min(start + chunk_points, P))
        _sample_chunk(stack, points_m[rows], n, C, out, rows)
    return out


def _sample_chunk(stack: _Stack, x: torch.Tensor, n: int, C: int, out: ViewSamples, rows: slice) -> None:
    """Fill `out[rows, :n]` for the points x [Pc, 3]."""
    h, w = stack.maps.shape[-2:]
    R, t = stack.T_cam_world[:, :3, :3], stack.T_cam_world[:, :3, 3]  # [K, 3, 3], [K, 3]
    p_cam = torch.einsum("kij,pj->pki", R, x) + t  # [Pc, K, 3]
    uv, z = project_points(p_cam, stack.K.permute(1, 2, 0))  # [Pc, K, 2], [Pc, K]; K as [3, 3, K] broadcasts
    inside = (
        (z > 0) & (uv[..., 0] >= -0.5) & (uv[..., 0] <= w - 0.5) & (uv[..., 1] >= -0.5) & (uv[..., 1] <= h - 0.5)
    )  # [Pc, K]
    dist_m = (x[:, None] - stack.centres_m).norm(dim=-1).masked_fill(~inside, torch.inf)  # [Pc, K]
    near_m, view = torch.topk(dist_m, n, dim=1, largest=False, sorted=True)  # [Pc, n], [Pc, n]
    valid = torch.isfinite(near_m)  # [Pc, n]

    out.view_index[rows, :n] = torch.where(valid, view, -1)
    out.valid[rows, :n] = valid
    pair_p, pair_s = valid.nonzero(as_tuple=True)  # [M] point and slot of each (point, view) pair
    if len(pair_p) == 0:
        return
    pair_k = view[pair_p, pair_s]  # [M] keyframe
    pair_uv = uv[pair_p, pair_k]  # [M, 2]
    values = sample_pairs(stack.maps, pair_k, pair_uv)  # [M, C + d]

    r0 = rows.start
    out.probs[r0 + pair_p, pair_s] = values[:, :C]
    if out.features is not None:
        out.features[r0 + pair_p, pair_s] = values[:, C:]
    out.displacement_m[r0 + pair_p, pair_s] = x[pair_p] - stack.centres_m[pair_k]
    out.pixel_uv[r0 + pair_p, pair_s] = pair_uv
    out.depth_in_view_m[r0 + pair_p, pair_s] = z[pair_p, pair_k]


def sample_pairs(
    maps: torch.Tensor,  # [K, ch, h, w]
    view: torch.Tensor,  # [M] int64 index into K
    pixel_uv: torch.Tensor,  # [M, 2] pixels, integer = pixel centre
) -> torch.Tensor:  # [M, ch]
    """Bilinear samples of per-view maps at (view, pixel) pairs (see the module docstring).

    One `grid_sample` over a grid per view that holds only that view's pairs (rank = position
    among them). Differentiable with respect to `maps`.
    """
    K, _, h, w = maps.shape
    counts = torch.bincount(view, minlength=K)  # [K]
    order = torch.argsort(view, stable=True)  # [M]
    first = torch.cumsum(counts, 0) - counts  # [K] first sorted position of each view
    rank = torch.empty_like(view)
    rank[order] = torch.arange(len(order), device=view.device) - first[view[order]]  # [M]
    grid = pixel_uv.new_zeros((K, int(counts.max()) if len(view) else 0, 1, 2))  # [K, Mmax, 1, 2]
    size = torch.tensor([w, h], dtype=pixel_uv.dtype, device=pixel_uv.device)
    grid[view, rank, 0] = (2.0 * pixel_uv + 1.0) / size - 1.0  # align_corners=False normalisation
    sampled = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled[..., 0].permute(0, 2, 1)[view, rank]  # [M, ch]


def _block_reduce(image: np.ndarray, ds: int, reduce) -> np.ndarray:
    """[H, W, ch] -> [H // ds, W // ds, ch]: `reduce` (np.mean, np.min) over each ds x ds block."""
    h, w = image.shape[0] // ds, image.shape[1] // ds
    return reduce(image[: h * ds, : w * ds].reshape(h, ds, w, ds, -1), axis=(1, 3))


def _rotation_deg(R_a: np.ndarray, R_b: np.ndarray) -> np.ndarray:
    """Angle [...] in degrees of the rotation between R_a [..., 3, 3] and R_b [..., 3, 3].

    trace(R_a^T R_b) is summed elementwise, so swapping a and b gives bit-identical angles.
    """
    cos = (np.sum(R_a * R_b, axis=(-2, -1)) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
