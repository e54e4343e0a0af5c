"""Rendering a `GaussianScene`: gsplat's `rasterization` on CUDA, our own rasteriser in torch on the CPU.

Both composite the same thing, front to back by camera depth (RT-GS2 Eq. 3, 3DGS):

    F(p) = sum_i f_i alpha_i T_i,   T_i = prod_{j<i} (1 - alpha_j),
    alpha_i = min(0.999, o_i exp(-1/2 d^T Sigma'_i^-1 d)),   d = p - mu'_i,

with Sigma'_i = J W Sigma_i W^T J^T + 0.3 I (EWA projection plus gsplat's low-pass), fragments with
alpha < 1/255 skipped and compositing stopped before T falls to 1e-4. The features f are the colour
(3 channels) and the class distribution (C channels); depth is composited the same way.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from semantic_mapping.types import CameraIntrinsics

EPS_2D_PX2 = 0.3  # low-pass added to every 2D covariance (gsplat's eps2d)
MIN_ALPHA = 1.0 / 255.0
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4
_FOV_MARGIN = 0.3  # Jacobians of off-screen means are taken at most 0.3 half-fields beyond the image (as gsplat)


@dataclass
class SplatRender:
    """One rendered view; pixels whose accumulated opacity is under `SplattingConfig.min_alpha` are empty."""

    rgb: np.ndarray  # [H, W, 3] uint8, composited over black
    class_probs: np.ndarray  # [H, W, C] float32, normalised (zeros where empty or unlabelled)
    labels: np.ndarray  # [H, W] int32, ignore id where empty or unlabelled
    depth_m: np.ndarray  # [H, W] float32 expected depth, 0 where empty
    alpha: np.ndarray  # [H, W] float32 accumulated opacity


def rasterize_cpu(
    means_m: torch.Tensor,  # [N, 3] world frame
    covariances: torch.Tensor,  # [N, 3, 3] world frame, m^2
    opacities: torch.Tensor,  # [N]
    features: torch.Tensor,  # [N, D]
    T_cam_world: torch.Tensor,  # [4, 4]
    intrinsics: CameraIntrinsics,
    near_plane_m: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # features [H, W, D], depth [H, W], alpha [H, W]
    """Composite Gaussians into an image: sum_i w_i f_i, sum_i w_i z_i and sum_i w_i (w_i = alpha_i T_i).

    Project; enumerate, row by row, the pixels where each Gaussian's alpha reaches 1/255 (an
    ellipse); sort these fragments by pixel, keeping depth order; composite with segmented
    cumulative sums of log(1 - alpha); sum the weighted features as one sparse [pixels x Gaussians]
    matrix product. Pixel centres are at integer coordinates (OpenCV).
    """
    W, H = intrinsics.width_px, intrinsics.height_px
    D = features.shape[1]
    R, t = T_cam_world[:3, :3].float(), T_cam_world[:3, 3].float()
    cam = means_m.float() @ R.T + t  # [N, 3]
    visible = torch.nonzero(cam[:, 2] > near_plane_m)[:, 0]
    visible = visible[torch.argsort(cam[visible, 2])]  # front to back; the stable pixel sort keeps this order
    cam = cam[visible]
    z = cam[:, 2]
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    # EWA: Jacobian of the projection at the mean, with off-screen means clamped as gsplat does.
    margin_x, margin_y = _FOV_MARGIN * 0.5 * W / fx, _FOV_MARGIN * 0.5 * H / fy
    tx = (cam[:, 0] / z).clamp(-cx / fx - margin_x, (W - cx) / fx + margin_x) * z
    ty = (cam[:, 1] / z).clamp(-cy / fy - margin_y, (H - cy) / fy + margin_y) * z
    J = torch.zeros(len(z), 2, 3)
    J[:, 0, 0], J[:, 0, 2] = fx / z, -fx * tx / z**2
    J[:, 1, 1], J[:, 1, 2] = fy / z, -fy * ty / z**2
    JR = J @ R  # [V, 2, 3]
    cov2 = JR @ covariances[visible].float() @ JR.transpose(1, 2)  # [V, 2, 2] pixels^2
    a = cov2[:, 0, 0] + EPS_2D_PX2
    b = cov2[:, 0, 1]
    c = cov2[:, 1, 1] + EPS_2D_PX2
    det = a * c - b * b
    u_mean = fx * cam[:, 0] / z + cx
    v_mean = fy * cam[:, 1] / z + cy
    opacity = opacities[visible].float()
    # alpha >= 1/255 where the Mahalanobis distance^2 is at most 2 ln(255 o): an ellipse of pixels.
    reach2 = 2.0 * torch.log((opacity / MIN_ALPHA).clamp_min(1.0))
    v0 = torch.ceil(v_mean - torch.sqrt(reach2 * c)).clamp(0, H).long()
    v1 = torch.floor(v_mean + torch.sqrt(reach2 * c)).clamp(-1, H - 1).long()
    rows_per = torch.where((det > 0) & (reach2 > 0), (v1 - v0 + 1).clamp_min(0), torch.zeros_like(v0))
    # One entry per (Gaussian, image row): the span of columns inside the ellipse.
    rg = torch.repeat_interleave(torch.arange(len(z)), rows_per)  # [R] Gaussian (depth rank)
    row = v0[rg] + torch.arange(len(rg)) - (torch.cumsum(rows_per, 0) - rows_per)[rg]  # [R]
    dv = row.float() - v_mean[rg]
    a_r, b_r, c_r, det_r = a[rg], b[rg], c[rg], det[rg]
    # (c du^2 - 2 b du dv + a dv^2) / det <= reach2, solved for du
    half = torch.sqrt((det_r * (reach2[rg] * c_r - dv * dv) / c_r**2).clamp_min(0.0))
    centre = u_mean[rg] + b_r / c_r * dv
    u_first = torch.ceil(centre - half).clamp(0, W).long()
    u_last = torch.floor(centre + half).clamp(-1, W - 1).long()
    span = (u_last - u_first + 1).clamp_min(0)
    total = int(span.sum())
    if total == 0:
        empty = torch.zeros(H, W)
        return torch.zeros(H, W, D), empty, empty.clone()
    # -log alpha at column u_first + k of a row is a quadratic in k: p0 + k (p1 + p2 k), where
    # power(du) = (c du^2 / 2 - b du dv + a dv^2 / 2) / det at du = u_first - u_mean, minus log(opacity).
    du0 = u_first.float() - u_mean[rg]
    p0 = (0.5 * (c_r * du0 * du0 + a_r * dv * dv) - b_r * du0 * dv) / det_r - torch.log(opacity[rg])
    p1 = (c_r * du0 - b_r * dv) / det_r
    p2 = 0.5 * c_r / det_r
    # Fragments: one (Gaussian, pixel) pair per pixel of each span.
    fr = torch.repeat_interleave(torch.arange(len(rg)), span)  # [F] row entry
    span_start = torch.cumsum(span, 0) - span  # [R] first fragment of each row entry
    # (index_select: several times faster than x[index] on CPU for the ~10^6 fragments)
    k = (torch.arange(total) - span_start.index_select(0, fr)).float()  # [F] column offset in the span
    pixel = (row * W + u_first).int().index_select(0, fr) + k.int()  # [F] flat pixel index
    p = torch.stack([p0, p1, p2]).index_select(1, fr)  # [3, F]
    alpha = torch.exp(-(p[0] + k * (p[1] + p[2] * k))).clamp_max(MAX_ALPHA)
    alpha = torch.where(alpha >= MIN_ALPHA, alpha, 0.0)  # rounding at the ellipse's rim: skipped, as gsplat does
    g = rg.index_select(0, fr)
    # Front to back per pixel: a stable sort by pixel keeps the depth order within each pixel.
    pixel, order = torch.sort(pixel, stable=True)
    g, alpha = g.index_select(0, order), alpha.index_select(0, order)
    log_keep = torch.log1p(-alpha.double())  # [F] log(1 - alpha)
    before = torch.cumsum(log_keep, 0) - log_keep  # [F] log T before each fragment, not restarted per pixel
    first = torch.ones_like(pixel, dtype=torch.bool)
    first[1:] = pixel[1:] != pixel[:-1]
    # `before` never rises, so its running minimum over pixel starts is the value at this pixel's start
    log_before = before - torch.cummin(torch.where(first, before, math.inf), 0).values
    composited = log_before + log_keep > math.log(MIN_TRANSMITTANCE)  # stop before T drops to 1e-4 (gsplat)
    weight = torch.where(composited, alpha * torch.exp(log_before.float()), 0.0)  # alpha_i T_i
    # sum_i w_i [f_i, z_i, 1] per pixel as a sparse [H*W, V] x dense [V, D + 2] product
    crow = torch.zeros(H * W + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(pixel, minlength=H * W), 0)
    values = torch.cat([features[visible].float(), z[:, None], torch.ones_like(z[:, None])], 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse")  # CSR support is "beta" in torch
        composite = torch.sparse_csr_tensor(crow, g, weight, size=(H * W, len(z))) @ values
    out = composite.reshape(H, W, D + 2)
    return out[..., :D], out[..., D], out[..., D + 1]


def rasterize_gsplat(scene, features: torch.Tensor, T_cam_world: torch.Tensor, intrinsics: CameraIntrinsics,
                     near_plane_m: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same composite with gsplat on CUDA: features [H, W, D], depth [H, W], alpha [H, W]."""
    from gsplat import rasterization

    device = scene.means_m.device
    K = torch.tensor(intrinsics.K, dtype=torch.float32, device=device)
    K[0, 2] += 0.5  # gsplat puts pixel centres at +0.5; ours are at integer coordinates
    K[1, 2] += 0.5
    colors, alphas, _ = rasterization(
        means=scene.means_m, quats=scene.quats_wxyz, scales=scene.scales_m.contiguous(),
        opacities=scene.opacities, colors=features,
        viewmats=T_cam_world.to(device=device, dtype=torch.float32)[None], Ks=K[None],
        width=intrinsics.width_px, height=intrinsics.height_px, near_plane=near_plane_m,
        eps2d=EPS_2D_PX2, sh_degree=None, packed=False, render_mode="RGB+D", rasterize_mode="classic",
    )
    return colors[0, ..., :-1], colors[0, ..., -1], alphas[0, ..., 0]


def gsplat_available() -> bool:
    """True when gsplat imports and CUDA is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(requested: str, device: torch.device) -> str:
    """'gsplat' or 'cpu' for a scene on `device`; an explicit 'gsplat' without CUDA and gsplat is an error."""
    if requested == "cpu":
        return "cpu"
    if requested == "gsplat":
        if device.type != "cuda" or not gsplat_available():
            raise RuntimeError("splatting.backend 'gsplat' needs CUDA and the gsplat package "
                               "(pip install gsplat); use 'auto' or 'cpu' on this machine")
        return "gsplat"
    if requested != "auto":
        raise ValueError(f"splatting.backend must be 'auto', 'gsplat' or 'cpu', got {requested!r}")
    return "gsplat" if device.type == "cuda" and gsplat_available() else "cpu"


def render_scene(scene, intrinsics: CameraIntrinsics, T_world_cam: np.ndarray, backend: Optional[str] = None,
                 ignore_id: int = 255) -> SplatRender:
    """Render rgb, class probabilities, labels, depth and opacity of a `GaussianScene` in one pass."""
    config = scene.config
    backend = resolve_backend(backend or config.backend, scene.device)
    T_cam_world = torch.from_numpy(np.linalg.inv(np.asarray(T_world_cam, np.float64))).float()
    features = torch.cat([scene.colors, scene.class_probs], 1)  # [N, 3 + C]
    with torch.no_grad():
        if backend == "gsplat":
            image, depth_sum, alpha = rasterize_gsplat(scene, features, T_cam_world, intrinsics, config.near_plane_m)
        else:
            image, depth_sum, alpha = rasterize_cpu(scene.means_m.cpu(), scene.covariances().cpu(),
                                                    scene.opacities.cpu(), features.cpu(), T_cam_world,
                                                    intrinsics, config.near_plane_m)
    image, depth_sum, alpha = image.cpu(), depth_sum.cpu(), alpha.cpu()
    return _finish(image, depth_sum, alpha, config.min_alpha, ignore_id)


def _finish(image: torch.Tensor, depth_sum: torch.Tensor, alpha: torch.Tensor, min_alpha: float,
            ignore_id: int) -> SplatRender:
    """Composited sums -> rgb, normalised class probabilities, labels and expected depth."""
    rgb = (image[..., :3] * 255.0).round().clamp(0, 255).to(torch.uint8)
    sums = image[..., 3:]  # [H, W, C]
    mass = sums.sum(-1)
    solid = alpha >= min_alpha
    labelled = solid & (mass >= 0.5 * alpha)  # most of the pixel's opacity comes from labelled voxels
    probs = torch.where(labelled[..., None], sums / mass.clamp_min(1e-12)[..., None], torch.zeros_like(sums))
    labels = torch.where(labelled, probs.argmax(-1), torch.full_like(mass, ignore_id, dtype=torch.long))
    depth = torch.where(solid, depth_sum / alpha.clamp_min(1e-12), torch.zeros_like(depth_sum))
    return SplatRender(rgb=rgb.numpy(), class_probs=probs.float().numpy(), labels=labels.int().numpy(),
                       depth_m=depth.float().numpy(), alpha=alpha.float().numpy())
