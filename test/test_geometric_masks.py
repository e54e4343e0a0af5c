"""The built-in geometric mask generator on analytic scenes (ray-plane and ray-box depth) and a simulated frame."""

from dataclasses import replace

import numpy as np
import pytest

from semantic_mapping.config import CameraConfig, GeometricMaskConfig, SimConfig
from semantic_mapping.objects.geometric_masks import GeometricMaskGenerator
from semantic_mapping.semantics.label_space import default_label_space
from semantic_mapping.semantics.plugins import MaskGenerator, known_mask_generators, make_mask_generator
from semantic_mapping.types import CameraIntrinsics, Frame

SIZES = [(320, 240, 300.0), (640, 480, 600.0)]  # (width, height, focal length) of the analytic camera


# ----------------------------------------------------------------------------- analytic scenes
def camera(W: int, H: int, f: float) -> CameraIntrinsics:
    return CameraIntrinsics(f, f, (W - 1) / 2.0, (H - 1) / 2.0, W, H)


def rays(K: CameraIntrinsics) -> np.ndarray:
    """[H, W, 3] camera-frame rays with z = 1, so a hit's ray parameter is its depth."""
    v, u = np.mgrid[0 : K.height_px, 0 : K.width_px].astype(np.float64)
    return np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], axis=-1)


def plane_depth(r: np.ndarray, normal, offset: float) -> np.ndarray:
    """[H, W] depth of the plane normal . p = offset along rays r (inf where missed or behind)."""
    along = r @ np.asarray(normal, np.float64)  # [H, W]
    with np.errstate(divide="ignore"):
        t = offset / along
    return np.where(np.isfinite(t) & (t > 0), t, np.inf)


def box_depth(r: np.ndarray, lo, hi) -> np.ndarray:
    """[H, W] depth where rays r enter the axis-aligned box [lo, hi] (slab method; inf where missed)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = (np.asarray(lo, np.float64) - 0.0) / r  # [H, W, 3], rays start at the origin
        t1 = (np.asarray(hi, np.float64) - 0.0) / r
    near = np.nanmax(np.minimum(t0, t1), axis=-1)
    far = np.nanmin(np.maximum(t0, t1), axis=-1)
    return np.where((near <= far) & (near > 0), near, np.inf)


def make_frame(depth: np.ndarray, K: CameraIntrinsics, noise_seed=None, **fields) -> Frame:
    """A frame of the given depth (inf -> no return), optionally with Kinect-like noise and mm steps."""
    depth = np.where(np.isfinite(depth), depth, 0.0)
    if noise_seed is not None:
        rng = np.random.default_rng(noise_seed)
        noisy = depth + (0.0012 + 0.0019 * (depth - 0.4) ** 2) * rng.standard_normal(depth.shape)
        depth = np.where(depth > 0, np.round(noisy * 1000.0) / 1000.0, 0.0)
    H, W = depth.shape
    return Frame(
        rgb=np.zeros((H, W, 3), np.uint8),
        depth_m=depth.astype(np.float32),
        intrinsics=K,
        T_world_cam=np.eye(4),
        **fields,
    )


def best_iou(ids: np.ndarray, region: np.ndarray) -> float:
    """Highest IoU of any mask of `ids` with the [H, W] bool `region`."""
    best = 0.0
    for k in np.unique(ids[region]):
        if k != 0:
            mask = ids == k
            best = max(best, np.count_nonzero(mask & region) / np.count_nonzero(mask | region))
    return best


def box_on_wall(W: int, H: int, f: float, lo=(0.1, -0.3, 1.4), hi=(0.7, 0.3, 1.9), noise_seed=0):
    """A wall at 2 m with a box in front of it (its front face and one side face visible).

    Returns (frame, box [H, W] bool, wall [H, W] bool).
    """
    K = camera(W, H, f)
    r = rays(K)
    wall = plane_depth(r, (0, 0, 1), 2.0)
    box = box_depth(r, lo, hi)
    depth = np.minimum(wall, box)
    return make_frame(depth, K, noise_seed), box < wall, wall <= box


# ----------------------------------------------------------------------------- tests
def test_registered_as_a_mask_generator_plugin():
    assert "geometric" in known_mask_generators()
    generator = make_mask_generator("geometric", min_area_fraction=0.02, config=GeometricMaskConfig(normal_edge_deg=40))
    assert isinstance(generator, GeometricMaskGenerator) and isinstance(generator, MaskGenerator)
    assert generator.min_area_fraction == 0.02 and generator.config.normal_edge_deg == 40


@pytest.mark.parametrize("W, H, f", SIZES)
def test_box_in_front_of_a_wall_is_its_own_mask(W, H, f):
    frame, box, wall = box_on_wall(W, H, f)
    assert box.mean() >= 0.1
    ids = GeometricMaskGenerator().generate(frame)
    assert ids.shape == (H, W) and ids.dtype == np.int32
    assert best_iou(ids, box) >= 0.85
    assert best_iou(ids, wall) >= 0.85
    for k in np.unique(ids[ids > 0]):  # no mask holds both the box and the wall
        mask = ids == k
        assert min(np.count_nonzero(mask & box), np.count_nonzero(mask & wall)) <= 0.01 * np.count_nonzero(mask)


@pytest.mark.parametrize("W, H, f", SIZES + [(643, 481, 600.0)])  # odd sizes: the crease reaches the last column
def test_crease_without_depth_jump_is_cut_by_normals(W, H, f):
    K = camera(W, H, f)
    r = rays(K)
    floor = plane_depth(r, (0, 1, 0), 0.5)  # 0.5 m below the camera (y points down)
    wall = plane_depth(r, (0, 0, 1), 2.5)
    depth = np.minimum(floor, wall)
    frame = make_frame(depth, K, noise_seed=1)
    on_floor, on_wall = floor < wall, wall <= floor
    assert on_floor.mean() > 0.2 and on_wall.mean() > 0.2
    ids = GeometricMaskGenerator(GeometricMaskConfig(split_by_labels=False)).generate(frame)
    assert best_iou(ids, on_floor) >= 0.8
    assert best_iou(ids, on_wall) >= 0.8
    assert len(np.unique(ids[ids > 0])) == 2


def test_labels_split_a_flat_wall_only_when_asked():
    K = camera(320, 240, 300.0)
    frame = make_frame(plane_depth(rays(K), (0, 0, 1), 2.0), K, noise_seed=2)
    labels = np.full((240, 320), 3, np.int32)
    labels[:, 160:] = 5  # [H, W] two halves of two classes
    frame.labels = labels
    split = GeometricMaskGenerator(GeometricMaskConfig(split_by_labels=True)).generate(frame)
    whole = GeometricMaskGenerator(GeometricMaskConfig(split_by_labels=False)).generate(frame)
    assert len(np.unique(split[split > 0])) == 2
    assert best_iou(split, labels == 3) >= 0.95 and best_iou(split, labels == 5) >= 0.95
    assert len(np.unique(whole[whole > 0])) == 1 and np.mean(whole > 0) > 0.95

    # class probabilities (argmax) split the same way; the ignore id never cuts
    C = default_label_space().num_classes
    frame.labels = None
    frame.class_probs = np.eye(C, dtype=np.float32)[labels]  # [H, W, C] one-hot
    split = GeometricMaskGenerator().generate(frame)
    assert len(np.unique(split[split > 0])) == 2
    frame.class_probs = None
    frame.labels = np.where(labels == 5, default_label_space().ignore_id, labels).astype(np.int32)
    ids = GeometricMaskGenerator().generate(frame)
    assert len(np.unique(ids[ids > 0])) == 1 and np.mean(ids > 0) > 0.95


def test_small_regions_are_dropped():
    # a box of ~1.5 % of the image in front of the wall
    frame, box, wall = box_on_wall(320, 240, 300.0, lo=(-0.1, -0.08, 1.5), hi=(0.1, 0.08, 1.7))
    assert 0.01 < box.mean() < 0.03
    ids = GeometricMaskGenerator(min_area_fraction=0.03).generate(frame)
    assert not ids[box].any()
    assert best_iou(ids, wall) >= 0.95
    ids = GeometricMaskGenerator(min_area_fraction=0.005).generate(frame)
    assert best_iou(ids, box) >= 0.8


def test_invalid_depth_gets_no_mask():
    frame, box, wall = box_on_wall(320, 240, 300.0)
    depth = frame.depth_m.copy()
    depth[20:80, 10:120] = 0.0  # a hole with no returns
    rng = np.random.default_rng(3)
    depth[rng.random(depth.shape) < 0.01] = 0.0  # and scattered dropouts
    frame.depth_m = depth
    ids = GeometricMaskGenerator().generate(frame)
    assert not ids[depth == 0].any()
    assert best_iou(ids, box & (depth > 0)) >= 0.85

    frame.depth_m = np.zeros_like(depth)
    ids = GeometricMaskGenerator().generate(frame)
    assert ids.shape == depth.shape and ids.dtype == np.int32 and not ids.any()


def test_simulated_frames():
    from semantic_mapping.sim.sequence import simulate

    cam = replace(CameraConfig(), width_px=320, height_px=240, fx=262.5, fy=262.5, cx=159.5, cy=119.5)
    recording = simulate(3, replace(SimConfig(), camera=cam), num_frames=60)
    generator = GeometricMaskGenerator()
    for index in (0, 30, 59):
        frame = recording.frame(index, semantics=True, masks=False)
        ids = generator.generate(frame)
        assert ids.shape == frame.depth_m.shape and ids.dtype == np.int32
        valid = frame.depth_m > 0
        coverage = np.mean(ids[valid] > 0)
        assert coverage > 0.5
        # how the masks compare with the ground-truth instances (print only)
        instances = frame.ground_truth.instances
        ious = [best_iou(ids, instances == i) for i in np.unique(instances[instances > 0])
                if np.mean(instances == i) >= 0.03]
        print(f"frame {index}: {ids.max()} masks, coverage {coverage:.2f} of valid depth, "
              f"best IoU with the {len(ious)} instances >= 3%: mean {np.mean(ious) if ious else float('nan'):.2f}")
