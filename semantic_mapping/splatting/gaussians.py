"""The map as 3D Gaussians (RT-GS2 Eq. 1, 3): one flattened Gaussian per observed surface voxel.

Each Gaussian sits at the zero crossing of the TSDF inside its voxel, is flattened along the surface
normal (the TSDF gradient), has a scale from the voxel size, an opacity from how often the voxel was
observed, the voxel's colour, and the voxel's fused class distribution as feature channels. Renders
of it are view-consistent by construction: every view reads the same fused 3D semantics.

The scene follows the map incrementally: `update` rebuilds only the Gaussians of blocks the map
changed since the last update (`VoxelMap.changed_blocks`), and when the labels' surface context was
recomputed (`semantics.context`: a change can reach voxels far from it) re-reads every Gaussian's
class distribution.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from semantic_mapping.config import SplattingConfig
from semantic_mapping.fusion.voxel_map import VoxelMap, pack_indices
from semantic_mapping.types import CameraIntrinsics

_AXIS_STEPS = np.eye(3, dtype=np.int64)
_MIN_GRADIENT = 0.2  # |grad sdf| (metres per metre) below which a voxel has no usable normal


def gaussians_from_voxels(voxel_map: VoxelMap, voxel_indices: np.ndarray, config: SplattingConfig) -> dict:
    """Gaussians of the observed surface voxels among integer voxel indices [N, 3].

    Returns numpy arrays: means_m [G, 3], normals [G, 3] (unit), opacities [G], colors [G, 3] in [0, 1],
    class_probs [G, C] (zeros where never labelled), voxel_indices [G, 3].
    """
    vs = voxel_map.voxel_size_m
    threshold = voxel_map.config.surface_weight_threshold
    sdf0 = voxel_map.observed_sdf(voxel_indices)
    near_surface = np.abs(np.nan_to_num(sdf0, nan=np.inf)) < vs  # a surface within one voxel of the centre
    idx = np.asarray(voxel_indices, np.int64)[near_surface]
    sdf0 = sdf0[near_surface]
    # Central differences of the SDF, one-sided where a neighbour was never observed.
    plus = np.stack([voxel_map.observed_sdf(idx + step) for step in _AXIS_STEPS], 1)  # [M, 3]
    minus = np.stack([voxel_map.observed_sdf(idx - step) for step in _AXIS_STEPS], 1)
    both = ~np.isnan(plus) & ~np.isnan(minus)
    grad = np.where(both, (plus - minus) / 2.0, np.where(~np.isnan(plus), plus - sdf0[:, None], sdf0[:, None] - minus))
    grad = np.nan_to_num(grad, nan=0.0) / vs  # [M, 3] metres of SDF per metre
    norm = np.linalg.norm(grad, axis=1)
    has_normal = norm > _MIN_GRADIENT
    normals = grad[has_normal] / norm[has_normal, None]
    centres = idx[has_normal] * vs
    means = centres - normals * (sdf0[has_normal] / norm[has_normal])[:, None]
    inside = np.all(np.abs(means - centres) <= 0.5 * vs, axis=1)  # the zero crossing lies in this voxel
    keep = np.flatnonzero(has_normal)[inside]
    values = voxel_map.voxel_values(idx[keep], with_probs=True)
    observed = values["weight"] >= threshold
    opacity = config.max_opacity * (1.0 - np.exp(-values["weight"] / config.opacity_weight))
    return {
        "means_m": means[inside][observed].astype(np.float32),
        "normals": normals[inside][observed].astype(np.float32),
        "opacities": opacity[observed].astype(np.float32),
        "colors": (values["colors"][observed] / 255.0).astype(np.float32),
        "class_probs": values["class_probs"][observed],
        "voxel_indices": idx[keep][observed],
    }


def quaternions_from_normals(normals: torch.Tensor) -> torch.Tensor:  # [N, 4] wxyz
    """Rotations taking the local z axis (the flat axis of a Gaussian) to unit normals [N, 3]."""
    nx, ny, nz = normals.unbind(1)
    q = torch.stack([1.0 + nz, -ny, nx, torch.zeros_like(nz)], 1)  # half-way rotation z -> n
    flipped = nz < -1.0 + 1e-6  # n = -z: any half turn about an axis in the xy plane
    q[flipped] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=q.dtype)
    return q / q.norm(dim=1, keepdim=True)


class GaussianScene:
    """The Gaussians of a map, kept up to date block by block; tensors live on `device`.

    means_m [N, 3] world frame, normals [N, 3], scales_m [N, 3] (tangent, tangent, normal),
    opacities [N], colors [N, 3] in [0, 1], class_probs [N, C].
    """

    FIELDS = ("means_m", "normals", "opacities", "colors", "class_probs")

    def __init__(self, num_classes: int, voxel_size_m: float, config: Optional[SplattingConfig] = None,
                 device: str = "cpu"):
        self.config = config or SplattingConfig()
        self.num_classes = int(num_classes)
        self.voxel_size_m = float(voxel_size_m)
        self.device = torch.device(device)
        self._generation = -1
        self._version = -1
        self._context_refreshes = -1  # the map's label-context refresh count the class distributions were read at
        self._clear()

    def _clear(self) -> None:
        self.means_m = torch.zeros((0, 3), device=self.device)
        self.normals = torch.zeros((0, 3), device=self.device)
        self.opacities = torch.zeros((0,), device=self.device)
        self.colors = torch.zeros((0, 3), device=self.device)
        self.class_probs = torch.zeros((0, self.num_classes), device=self.device)
        self.voxel_indices = np.zeros((0, 3), np.int64)  # [N, 3] each Gaussian's integer voxel index
        self.block_keys = np.zeros(0, np.int64)  # [N] packed block coordinate of each Gaussian's voxel

    @classmethod
    def from_map(cls, voxel_map: VoxelMap, config: Optional[SplattingConfig] = None) -> "GaussianScene":
        scene = cls(voxel_map.num_classes, voxel_map.voxel_size_m, config, device=voxel_map.device)
        scene.update(voxel_map)
        return scene

    def __len__(self) -> int:
        return int(self.means_m.shape[0])

    @property
    def scales_m(self) -> torch.Tensor:  # [N, 3]
        vs = self.voxel_size_m
        t, n = self.config.tangent_scale_voxels * vs, self.config.normal_scale_voxels * vs
        return torch.tensor([t, t, n], device=self.device).expand(len(self), 3)

    @property
    def quats_wxyz(self) -> torch.Tensor:  # [N, 4]
        return quaternions_from_normals(self.normals)

    def covariances(self) -> torch.Tensor:  # [N, 3, 3] world frame, m^2
        """sigma_t^2 I + (sigma_n^2 - sigma_t^2) n n^T: the same as R diag(s)^2 R^T for these Gaussians."""
        vs = self.voxel_size_m
        t2, n2 = (self.config.tangent_scale_voxels * vs) ** 2, (self.config.normal_scale_voxels * vs) ** 2
        n = self.normals
        return t2 * torch.eye(3, device=self.device) + (n2 - t2) * n[:, :, None] * n[:, None, :]

    def update(self, voxel_map: VoxelMap) -> int:
        """Rebuild the Gaussians of blocks the map changed since the last update, and re-read every class
        distribution when the labels' context was recomputed; returns how many blocks changed."""
        if voxel_map.generation != self._generation:
            self._clear()
            self._generation, self._version = voxel_map.generation, -1
        changed = voxel_map.changed_blocks(self._version)
        self._version = voxel_map.version
        fresh, stale = None, np.zeros(len(self), bool)
        if len(changed):
            # A voxel's normal reads its face neighbours, which may lie in a face-adjacent block.
            blocks = np.unique(np.concatenate([changed, *(changed + s for s in _AXIS_STEPS),
                                               *(changed - s for s in _AXIS_STEPS)]), axis=0)
            stale = np.isin(self.block_keys, pack_indices(blocks))
            fresh = gaussians_from_voxels(voxel_map, voxel_map.block_voxel_indices(blocks), self.config)
        context = voxel_map.context  # its refreshes counted after the fresh blocks' reads (which may refresh it)
        refreshes = context.refreshes if context is not None else -1
        reread = refreshes != self._context_refreshes and bool((~stale).any())
        self._context_refreshes = refreshes
        if fresh is None and not reread:
            return 0
        keep = torch.from_numpy(~stale).to(self.device)
        kept = {name: getattr(self, name)[keep] for name in self.FIELDS}
        kept_indices = self.voxel_indices[~stale]
        if reread:
            kept["class_probs"] = torch.from_numpy(
                voxel_map.voxel_values(kept_indices, with_probs=True)["class_probs"]).to(self.device)
        for name in self.FIELDS:  # new tensors: snapshots keep rendering the old ones
            parts = [kept[name]] + ([torch.from_numpy(fresh[name]).to(self.device)] if fresh is not None else [])
            setattr(self, name, torch.cat(parts))
        self.voxel_indices = np.concatenate([kept_indices] + ([fresh["voxel_indices"]] if fresh is not None else []))
        self.block_keys = pack_indices(np.floor_divide(self.voxel_indices, voxel_map.block_resolution))
        return len(changed)

    def snapshot(self) -> "GaussianScene":
        """A copy sharing the current tensors: it renders safely while this scene goes on updating."""
        copy = GaussianScene(self.num_classes, self.voxel_size_m, self.config, device=str(self.device))
        for name in self.FIELDS:
            setattr(copy, name, getattr(self, name))
        copy.voxel_indices, copy.block_keys = self.voxel_indices, self.block_keys
        return copy

    def render(self, intrinsics: CameraIntrinsics, T_world_cam: np.ndarray, backend: Optional[str] = None,
               ignore_id: int = 255):
        """Render rgb, class probabilities and labels, depth and opacity at a camera (`SplatRender`)."""
        from semantic_mapping.splatting.render import render_scene

        return render_scene(self, intrinsics, T_world_cam, backend, ignore_id)
