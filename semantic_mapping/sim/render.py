"""Raycast rendering of a SceneMesh into RGB-D frames with per-pixel ground truth.

One `RaycastingScene.cast_rays` call per frame gives depth, the hit triangle and its normal;
colour is the face albedo times a procedural world-space texture, lit by fixed directional
lights plus ambient (view-independent, so a surface point has one colour in every view);
the depth sensor model adds range-dependent noise and drops returns at grazing angles,
object edges and out of range.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np
import open3d as o3d

from semantic_mapping.config import CameraConfig, DepthNoiseConfig
from semantic_mapping.semantics.label_space import LabelSpace, default_label_space
from semantic_mapping.sim.ground_truth import SceneMesh
from semantic_mapping.sim.primitives import TextureSpec
from semantic_mapping.types import CameraIntrinsics, Frame, FrameGroundTruth

_AMBIENT = 0.3
_LIGHT_DIRS = np.array([[0.3, 0.2, 0.93], [-0.7, 0.5, 0.5], [0.4, -0.8, -0.45]])  # [3, 3] towards the lights, world
_LIGHT_DIRS /= np.linalg.norm(_LIGHT_DIRS, axis=1, keepdims=True)
_LIGHT_WEIGHTS = np.array([0.5, 0.3, 0.2])
_GAMMA = 1.0 / 2.2


def camera_intrinsics(camera: CameraConfig) -> CameraIntrinsics:
    return CameraIntrinsics(camera.fx, camera.fy, camera.cx, camera.cy, camera.width_px, camera.height_px)


_NOISE_CELLS = 32  # value-noise lattice period (cells per axis); the table fits in cache
_NOISE_TABLE = np.random.default_rng(20240611).random(_NOISE_CELLS**3, dtype=np.float32)  # [32^3] in [0, 1)


def value_noise(q: np.ndarray) -> np.ndarray:
    """[N] smooth noise in [-1, 1] at points q [3, N] in lattice units (periodic every 32 units)."""
    base = np.floor(q)
    f = q - base
    f = f * f * (3.0 - 2.0 * f)  # smoothstep weights [3, N]
    i = base.astype(np.int32)
    m = _NOISE_CELLS - 1
    x0, x1 = i[0] & m, (i[0] + 1) & m
    y0, y1 = (i[1] & m) * _NOISE_CELLS, ((i[1] + 1) & m) * _NOISE_CELLS
    z0, z1 = (i[2] & m) * _NOISE_CELLS**2, ((i[2] + 1) & m) * _NOISE_CELLS**2
    t = _NOISE_TABLE

    def lerp(a, b, w):
        return a + w * (b - a)

    fx, fy, fz = f
    y0z0, y1z0, y0z1, y1z1 = y0 + z0, y1 + z0, y0 + z1, y1 + z1
    c00 = lerp(t[x0 + y0z0], t[x1 + y0z0], fx)
    c10 = lerp(t[x0 + y1z0], t[x1 + y1z0], fx)
    c01 = lerp(t[x0 + y0z1], t[x1 + y0z1], fx)
    c11 = lerp(t[x0 + y1z1], t[x1 + y1z1], fx)
    return 2.0 * lerp(lerp(c00, c10, fy), lerp(c01, c11, fy), fz) - 1.0


class TextureTable:
    """Per-instance texture parameters arranged for vectorised evaluation at world points."""

    def __init__(self, textures: dict):
        """textures: instance id -> TextureSpec."""
        n = max([0, *textures]) + 1
        self.kind = np.zeros(n, np.int8)  # index into TextureSpec.KINDS
        self.contrast = np.zeros(n, np.float32)
        self.stripe_dir = np.zeros((3, n), np.float32)  # stripe phase (periods) = stripe_dir . p + stripe_phase
        self.stripe_phase = np.zeros(n, np.float32)
        self.inv_period = np.ones(n, np.float32)  # lattice coordinates q = p * inv_period + lattice_offset
        self.lattice_offset = np.zeros((3, n), np.float32)
        for i, t in textures.items():
            axis = np.asarray(t.axis, np.float32)
            offset = np.asarray(t.offset_m, np.float32)
            self.kind[i] = TextureSpec.KINDS.index(t.kind)
            self.contrast[i] = t.contrast
            self.stripe_dir[:, i] = axis / t.period_m
            self.stripe_phase[i] = axis @ offset / t.period_m
            self.inv_period[i] = 1.0 / t.period_m
            shift = np.array([t.seed % 31, (t.seed // 31) % 31, (t.seed // 961) % 31], np.float32)
            self.lattice_offset[:, i] = offset / t.period_m + shift

    def pattern(self, points_m: np.ndarray, instances: np.ndarray) -> np.ndarray:
        """[N] pattern in [-1, 1] at world points [3, N] of the given instances [N]."""
        out = np.zeros(points_m.shape[1], np.float32)
        kind = self.kind[instances]
        m = np.flatnonzero(kind == TextureSpec.KINDS.index("stripes"))
        if len(m):
            inst = instances[m]
            phase = np.einsum("in,in->n", points_m[:, m], self.stripe_dir[:, inst]) + self.stripe_phase[inst]
            out[m] = np.sin(2.0 * np.pi * phase)
        for name in ("checker", "noise"):
            m = np.flatnonzero(kind == TextureSpec.KINDS.index(name))
            if not len(m):
                continue
            inst = instances[m]
            q = points_m[:, m] * self.inv_period[inst] + self.lattice_offset[:, inst]
            out[m] = 1.0 - 2.0 * (np.floor(q).astype(np.int32).sum(0) & 1) if name == "checker" else value_noise(q)
        return out


def apply_depth_noise(
    depth_m: np.ndarray, cos_incidence: np.ndarray, config: DepthNoiseConfig, rng: np.random.Generator
) -> np.ndarray:
    """Sensor depth from clean depth: Kinect-like noise and missing returns (0).

    depth_m: [H, W] float32 clean z-depth, 0 where nothing is hit.
    cos_incidence: [H, W] cosine of the angle between the viewing ray and the surface normal.
    Returns [H, W] float32 metres, 0 = no return.
    """
    valid = (depth_m >= config.min_range_m) & (depth_m <= config.max_range_m)
    # grazing incidence: drop with a probability rising from the start to the end angle
    angle_deg = np.degrees(np.arccos(np.clip(cos_incidence, 0.0, 1.0)))
    span = max(config.grazing_end_deg - config.grazing_start_deg, 1e-6)
    p_miss = np.clip((angle_deg - config.grazing_start_deg) / span, 0.0, 1.0)
    draw = rng.random(depth_m.shape, dtype=np.float32)
    valid &= draw >= p_miss
    # depth discontinuities: both sides of a jump, widened to a band
    edges = np.zeros(depth_m.shape, bool)
    for a, b in (
        (depth_m[:, 1:], depth_m[:, :-1]),
        (depth_m[1:, :], depth_m[:-1, :]),
    ):
        jump = np.abs(a - b) > config.edge_jump_ratio * np.minimum(a, b)
        jump |= (a > 0) != (b > 0)
        if a.shape[1] < depth_m.shape[1]:
            edges[:, 1:] |= jump
            edges[:, :-1] |= jump
        else:
            edges[1:, :] |= jump
            edges[:-1, :] |= jump
    if config.edge_width_px > 1:
        k = 2 * config.edge_width_px - 1
        edges = cv2.dilate(edges.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    draw = rng.random(depth_m.shape, dtype=np.float32)
    valid &= ~(edges & (draw < config.edge_dropout_prob))
    valid &= rng.random(depth_m.shape, dtype=np.float32) >= config.random_dropout_prob
    sigma = config.sigma_base_m + config.sigma_quadratic_per_m * (depth_m - config.sigma_offset_m) ** 2
    noisy = depth_m + sigma * rng.standard_normal(depth_m.shape, dtype=np.float32)
    if config.quantize_mm:
        noisy = np.round(noisy * 1000.0) / 1000.0
    return np.where(valid & (noisy > 0), noisy, 0.0).astype(np.float32)


class SceneRenderer:
    """Renders frames of one scene mesh from camera poses.

    Arrays inside are planar ([3, N] rather than [N, 3]), which numpy handles several times faster.
    """

    def __init__(
        self,
        mesh: SceneMesh,
        camera: CameraConfig = CameraConfig(),
        depth_noise: DepthNoiseConfig = DepthNoiseConfig(),
        label_space: Optional[LabelSpace] = None,
        nthreads: int = 0,
    ):
        self.mesh = mesh
        self.camera = camera
        self.depth_noise = depth_noise
        self.labels = label_space or default_label_space()
        self.intrinsics = camera_intrinsics(camera)
        self.nthreads = nthreads
        self._scene = o3d.t.geometry.RaycastingScene(nthreads=nthreads)
        self._scene.add_triangles(
            o3d.core.Tensor(np.ascontiguousarray(mesh.vertices, np.float32)),
            o3d.core.Tensor(np.ascontiguousarray(mesh.triangles, np.uint32)),
        )
        # per-face tables with one extra entry (index T) for "nothing hit"
        self._face_class = np.append(mesh.face_class, self.labels.ignore_id).astype(np.int32)
        self._face_instance = np.append(mesh.face_instance, 0).astype(np.int32)
        self._face_albedo = np.ascontiguousarray(
            np.vstack([mesh.face_albedo, np.zeros((1, 3), np.float32)]).T, np.float32
        )  # [3, T + 1]
        self._textures = TextureTable({i: info.texture for i, info in mesh.instances.items()})
        K = self.intrinsics
        v, u = np.mgrid[0 : K.height_px, 0 : K.width_px].astype(np.float32)
        self._rays_cam_planar = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)]).reshape(
            3, -1
        )  # [3, N], z = 1
        self._ray_length = np.linalg.norm(self._rays_cam_planar, axis=0)  # [N] length of the z = 1 rays
        self._lights = (_LIGHT_DIRS * _LIGHT_WEIGHTS[:, None]).astype(np.float32)  # [3 lights, 3]
        self._gamma_lut = (255.0 * np.linspace(0.0, 1.0, 4096) ** _GAMMA).astype(np.float32)  # linear -> 8-bit levels
        # a fixed bank of standard normals: each frame's RGB noise is a random window of it (drawing
        # 3 x H x W fresh normals costs more than the rest of the shading)
        self._noise_bank = np.random.default_rng(0).standard_normal(4 * K.height_px * K.width_px, dtype=np.float32)

    def render(self, T_world_cam: np.ndarray, stamp_ns: int = 0, rng: Optional[np.random.Generator] = None) -> Frame:
        """Frame seen from T_world_cam [4, 4]; rng drives the sensor noise (None: noise-free depth and colour)."""
        K = self.intrinsics
        H, W = K.height_px, K.width_px
        R = np.asarray(T_world_cam[:3, :3], np.float32)
        origin = np.asarray(T_world_cam[:3, 3], np.float32)
        dirs_world = R @ self._rays_cam_planar  # [3, N], unit z in the camera frame
        rays = np.empty((H * W, 6), np.float32)
        rays[:, :3] = origin
        rays[:, 3:] = dirs_world.T
        hits = self._scene.cast_rays(o3d.core.Tensor(rays), nthreads=self.nthreads)
        t_hit = hits["t_hit"].numpy()  # [N] z-depth because the rays have unit z in the camera
        hit = np.isfinite(t_hit)
        face = np.where(hit, hits["primitive_ids"].numpy(), len(self.mesh.triangles)).astype(np.int64)
        depth = np.where(hit, t_hit, 0.0).astype(np.float32)  # [N] metres
        normals_world = np.ascontiguousarray(hits["primitive_normals"].numpy().T)  # [3, N]
        n_dot_ray = np.sum(normals_world * dirs_world, axis=0)  # [N]
        normals_world *= np.where(hit, np.where(n_dot_ray > 0, -1.0, 1.0), 0.0).astype(np.float32)  # face the camera

        instances = self._face_instance[face]
        rgb = self._shade(origin[:, None] + dirs_world * depth, normals_world, face, instances, hit)  # [3, N]
        normals_cam = np.ascontiguousarray((R.T @ normals_world).T).reshape(H, W, 3)
        depth = depth.reshape(H, W)
        if rng is not None:
            cos_incidence = (np.abs(n_dot_ray) / self._ray_length).reshape(H, W)
            sensor_depth = apply_depth_noise(depth, cos_incidence, self.depth_noise, rng)
            if self.camera.rgb_noise_std_levels > 0:
                start = int(rng.integers(0, len(self._noise_bank) - rgb.size))
                rgb += self.camera.rgb_noise_std_levels * self._noise_bank[start : start + rgb.size].reshape(rgb.shape)
        else:
            sensor_depth = depth.copy()
        rgb8 = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
        return Frame(
            rgb=np.ascontiguousarray(rgb8.T).reshape(H, W, 3),
            depth_m=sensor_depth,
            intrinsics=K,
            T_world_cam=np.asarray(T_world_cam, np.float64).copy(),
            stamp_ns=int(stamp_ns),
            ground_truth=FrameGroundTruth(
                labels=self._face_class[face].reshape(H, W),
                instances=instances.reshape(H, W),
                depth_m=depth,
                normals_cam=normals_cam,
            ),
        )

    def _shade(self, points_world, normals_world, face, instances, hit) -> np.ndarray:
        """[3, N] float32 colour in 8-bit levels (gamma-encoded), black where nothing is hit."""
        albedo = self._face_albedo[:, face]  # [3, N]
        textured = np.flatnonzero(hit & (self._textures.contrast[instances] > 0))
        if len(textured):
            inst = instances[textured]
            factor = np.ones(len(face), np.float32)
            factor[textured] += self._textures.contrast[inst] * self._textures.pattern(points_world[:, textured], inst)
            albedo *= factor
        light = _AMBIENT + np.clip(self._lights @ normals_world, 0.0, None).sum(0)  # [N]
        level = np.clip(albedo * light, 0.0, 1.0) * (len(self._gamma_lut) - 1)
        return self._gamma_lut[(level + 0.5).astype(np.int32)]
