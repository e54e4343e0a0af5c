"""Noise models standing in for 2D networks (sim.segmenter, sim.masks) and the plugin registry."""

import numpy as np
import pytest

from semantic_mapping.config import (
    CameraConfig,
    ConfigError,
    DepthNoiseConfig,
    MaskSimConfig,
    SegmenterSimConfig,
    TrajectoryConfig,
)
from semantic_mapping.geometry import invert_pose, project_points, transform_points
from semantic_mapping.semantics.label_space import default_label_space
from semantic_mapping.semantics import plugins
from semantic_mapping.semantics.plugins import (
    MaskGenerator,
    Segmenter,
    known_segmenters,
    make_mask_generator,
    make_segmenter,
    register_mask_generator,
    register_segmenter,
)
from semantic_mapping.sim import SceneRenderer, generate_scene, make_trajectory
from semantic_mapping.sim.masks import SimulatedMaskGenerator, ground_truth_segments, preprocess_masks
from semantic_mapping.sim.segmenter import SimulatedSegmenter, labels_and_confidence, similarity_matrix
from semantic_mapping.types import CameraIntrinsics, Frame, FrameGroundTruth

LABELS = default_label_space()
C = LABELS.num_classes
SMALL = CameraConfig(width_px=160, height_px=120, fx=131.25, fy=131.25, cx=79.5, cy=59.5)
WALL, CHAIR, SOFA, TABLE, CABINET = (LABELS.id_of(n) for n in ("wall", "chair", "sofa", "table", "cabinet"))


# ----------------------------------------------------------------------------- helpers
def confusion(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """[C_pred, C_gt] pixel counts over pixels with a ground-truth class."""
    valid = gt < C
    return np.bincount(pred[valid] * C + gt[valid], minlength=C * C).reshape(C, C)


def miou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean IoU over the classes present in the ground truth."""
    m = confusion(pred, gt)
    tp, gt_count = np.diag(m), m.sum(0)
    union = gt_count + m.sum(1) - tp
    return float(np.mean(tp[gt_count > 0] / union[gt_count > 0]))


def hand_frame(labels, instances=None, depth_m=2.0, stamp_ns=0, T_world_cam=None) -> Frame:
    """A fronto-parallel frame built by hand: label image, optional instances, depth (scalar or image)."""
    H, W = labels.shape
    depth = np.broadcast_to(np.asarray(depth_m, np.float32), (H, W)).copy()
    depth[labels >= C] = 0.0
    normals = np.zeros((H, W, 3), np.float32)
    normals[..., 2] = -1.0
    gt = FrameGroundTruth(
        labels=labels.astype(np.int32),
        instances=None if instances is None else instances.astype(np.int32),
        depth_m=depth,
        normals_cam=normals,
    )
    return Frame(
        rgb=np.zeros((H, W, 3), np.uint8),
        depth_m=depth,
        intrinsics=CameraIntrinsics(0.8 * W, 0.8 * W, (W - 1) / 2, (H - 1) / 2, W, H),
        T_world_cam=np.eye(4) if T_world_cam is None else T_world_cam,
        stamp_ns=stamp_ns,
        ground_truth=gt,
    )


def object_layout(H: int, W: int):
    """Wall with object rectangles: (labels, instances) [H, W] int32."""
    labels = np.full((H, W), WALL, np.int32)
    instances = np.zeros((H, W), np.int32)
    boxes = [(0.10, 0.45, 0.08, 0.40, CHAIR), (0.55, 0.92, 0.10, 0.42, SOFA), (0.12, 0.50, 0.58, 0.90, TABLE)]
    boxes.append((0.58, 0.88, 0.55, 0.92, CABINET))
    for k, (y0, y1, x0, x1, cls) in enumerate(boxes, start=1):
        labels[int(y0 * H) : int(y1 * H), int(x0 * W) : int(x1 * W)] = cls
        instances[int(y0 * H) : int(y1 * H), int(x0 * W) : int(x1 * W)] = k
    return labels, instances


def corresponding_errors(fa: Frame, fb: Frame, err_a: np.ndarray, err_b: np.ndarray):
    """Error indicators of the two views at the surface points both see: ([P] bool, [P] bool)."""
    H, W = err_a.shape
    K = fa.intrinsics.K
    depth = fa.ground_truth.depth_m
    v, u = np.mgrid[0:H, 0:W]
    points_cam = np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], axis=-1)
    points_b = transform_points(invert_pose(fb.T_world_cam) @ fa.T_world_cam, points_cam)
    uv, z = project_points(points_b, K)
    ub, vb = np.round(uv[..., 0]).astype(int), np.round(uv[..., 1]).astype(int)
    seen = (depth > 0) & (fa.ground_truth.labels < C) & (z > 0.1) & (ub >= 0) & (ub < W) & (vb >= 0) & (vb < H)
    ub, vb = np.clip(ub, 0, W - 1), np.clip(vb, 0, H - 1)
    seen &= np.abs(fb.ground_truth.depth_m[vb, ub] - z) < 0.03 + 0.02 * z
    seen &= fb.ground_truth.labels[vb, ub] < C
    return err_a[seen], err_b[vb[seen], ub[seen]]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def scene_frames():
    """40 frames 0.2 s apart of a rendered scene at 160 x 120."""
    spec = generate_scene(5)
    trajectory = make_trajectory(spec, 5, TrajectoryConfig(num_frames=240), CameraConfig())
    renderer = SceneRenderer(spec.build_mesh(), SMALL, DepthNoiseConfig())
    return [renderer.render(T, stamp) for stamp, T in trajectory[::6]]


@pytest.fixture(scope="module")
def default_predictions(scene_frames):
    """(labels [H, W], confidence [H, W]) of the default simulated segmenter on every scene frame."""
    segmenter = SimulatedSegmenter(SegmenterSimConfig(), seed=0)
    return [labels_and_confidence(segmenter.predict(f)) for f in scene_frames]


# ----------------------------------------------------------------------------- plugins
def test_registry_makes_simulators_and_rejects_unknown_names():
    segmenter = make_segmenter("simulated", config=SegmenterSimConfig(target_miou=0.6), seed=3)
    assert isinstance(segmenter, SimulatedSegmenter) and isinstance(segmenter, Segmenter)
    assert segmenter.num_classes == C and segmenter.config.target_miou == 0.6
    generator = make_mask_generator("simulated", seed=1)
    assert isinstance(generator, SimulatedMaskGenerator) and isinstance(generator, MaskGenerator)
    with pytest.raises(ConfigError, match="unknown segmenter 'deeplab'.*simulated"):
        make_segmenter("deeplab")
    with pytest.raises(ConfigError, match="unknown mask generator 'sam'.*simulated"):
        make_mask_generator("sam")


def test_registry_accepts_new_plugins(monkeypatch):
    monkeypatch.setattr(plugins, "_SEGMENTERS", dict(plugins._SEGMENTERS))  # restored after the test
    monkeypatch.setattr(plugins, "_MASK_GENERATORS", dict(plugins._MASK_GENERATORS))

    class Constant:
        num_classes = C

        def __init__(self, class_id=0):
            self.class_id = class_id

        def predict(self, frame):
            probs = np.zeros((frame.height_px, frame.width_px, C), np.float32)
            probs[..., self.class_id] = 1.0
            return probs

    register_segmenter("constant", Constant)
    register_mask_generator("by-path", "semantic_mapping.sim.masks:SimulatedMaskGenerator")
    assert known_segmenters() == ["constant", "simulated"]
    plugin = make_segmenter("constant", class_id=4)
    assert isinstance(plugin, Segmenter) and plugin.class_id == 4
    assert isinstance(make_mask_generator("by-path", seed=2), SimulatedMaskGenerator)


def test_simulators_refuse_frames_without_ground_truth():
    labels, instances = object_layout(60, 80)
    frame = hand_frame(labels, instances)
    frame.ground_truth = None
    with pytest.raises(ValueError, match="no ground truth"):
        SimulatedSegmenter().predict(frame)
    with pytest.raises(ValueError, match="no ground truth"):
        SimulatedMaskGenerator().generate(frame)
    with pytest.raises(ValueError, match="instances"):
        SimulatedMaskGenerator().generate(hand_frame(labels))


# ----------------------------------------------------------------------------- segmenter
def test_probabilities_at_full_resolution_sum_to_one():
    labels, instances = object_layout(480, 640)
    probs = SimulatedSegmenter(seed=1).predict(hand_frame(labels, instances, stamp_ns=123))
    assert probs.shape == (480, 640, C) and probs.dtype == np.float32
    assert np.all(probs >= 0) and np.allclose(probs.sum(axis=2), 1.0, atol=1e-5)
    pred, confidence = labels_and_confidence(probs)
    assert pred.dtype == np.int32 and confidence.dtype == np.float32
    assert np.array_equal(pred, probs.argmax(axis=2)) and np.allclose(confidence, probs.max(axis=2))
    assert 0.4 < miou(pred, labels) < 0.85
    assert 0.05 < np.mean(confidence < 0.9) < 0.8  # not one-hot


def test_deterministic_given_seed_and_stamp(scene_frames):
    a, b = scene_frames[3], scene_frames[4]
    first = SimulatedSegmenter(seed=7)
    pa = first.predict(a)
    second = SimulatedSegmenter(seed=7)
    second.predict(b)  # history must not matter
    assert np.array_equal(second.predict(a), pa)
    assert not np.array_equal(SimulatedSegmenter(seed=8).predict(a), pa)
    moved = Frame(a.rgb, a.depth_m, a.intrinsics, a.T_world_cam, a.stamp_ns + 10**9, ground_truth=a.ground_truth)
    assert not np.array_equal(first.predict(moved), pa)


@pytest.mark.parametrize("target", [0.55, 0.70])
def test_segmenter_hits_configured_miou(scene_frames, target):
    segmenter = SimulatedSegmenter(SegmenterSimConfig(target_miou=target), seed=2)
    scores = [miou(labels_and_confidence(segmenter.predict(f))[0], f.ground_truth.labels) for f in scene_frames]
    assert abs(np.mean(scores) - target) < 0.04
    assert 0.01 < np.std(scores) < 0.15  # frames differ, as a network's do


def test_default_target_and_confidence(scene_frames, default_predictions):
    scores = [miou(p, f.ground_truth.labels) for (p, _), f in zip(default_predictions, scene_frames)]
    assert abs(np.mean(scores) - SegmenterSimConfig().target_miou) < 0.04
    right, wrong = [], []
    for (pred, confidence), f in zip(default_predictions, scene_frames):
        valid = f.ground_truth.labels < C
        ok = pred == f.ground_truth.labels
        right.append(confidence[valid & ok])
        wrong.append(confidence[valid & ~ok])
    right, wrong = np.concatenate(right), np.concatenate(wrong)
    assert right.mean() > 0.85 and wrong.mean() < 0.65  # confident where right, hedging where wrong
    accuracy = right.size / (right.size + wrong.size)
    mean_confidence = (right.sum() + wrong.sum()) / (right.size + wrong.size)
    assert abs(mean_confidence - accuracy) < 0.05  # calibrated on average


def test_confusions_follow_the_fixed_structure(scene_frames, default_predictions):
    alike = similarity_matrix(LABELS, 0.0) > 0
    gt = np.concatenate([f.ground_truth.labels.ravel() for f in scene_frames])
    pred = np.concatenate([p.ravel() for p, _ in default_predictions])
    wrong = (gt < C) & (pred != gt)
    share_alike = alike[gt[wrong], pred[wrong]].mean()
    chance = (alike.sum(1) - 1).mean() / (C - 1)
    assert share_alike > 2 * chance  # chance: a wrong class drawn uniformly


def test_errors_grow_with_distance():
    """Mirror-symmetric layout: left half 1.2 m away, right half 4.5 m; the right errs more."""
    H, W = 120, 160
    half, half_instances = object_layout(H, W // 2)
    labels = np.concatenate([half, half[:, ::-1]], axis=1)
    instances = np.concatenate([half_instances, half_instances[:, ::-1] + 10 * (half_instances[:, ::-1] > 0)], axis=1)
    depth = np.where(np.arange(W) < W // 2, 1.2, 4.5)[None, :].repeat(H, 0)
    err = np.zeros((H, W))
    for seed in range(12):
        pred, _ = labels_and_confidence(SimulatedSegmenter(seed=seed).predict(hand_frame(labels, instances, depth)))
        err += pred != labels
    near, far = err[:, : W // 2].mean(), err[:, W // 2 :].mean()
    assert far > 1.5 * near


def test_errors_grow_towards_the_image_border():
    H, W = 120, 160
    rows, cols = np.mgrid[0:H, 0:W]
    tile = (rows // 20) * 8 + cols // 20  # 6 x 8 tiles of 20 px, each an instance
    classes = np.array([CHAIR, SOFA, TABLE, CABINET, WALL])
    labels = classes[(tile * 7) % len(classes)].astype(np.int32)
    instances = tile + 1
    border_px = np.minimum(np.minimum(cols, W - 1 - cols), np.minimum(rows, H - 1 - rows))
    err = np.zeros((H, W))
    for seed in range(12):
        frame = hand_frame(labels, instances, 2.0, stamp_ns=seed * 10**8)
        err += labels_and_confidence(SimulatedSegmenter(seed=seed).predict(frame))[0] != labels
    assert err[border_px < 10].mean() > 1.5 * err[border_px >= 30].mean()


def test_errors_correlate_more_between_nearby_views(scene_frames, default_predictions):
    errors = [
        (pred != f.ground_truth.labels) & (f.ground_truth.labels < C)
        for (pred, _), f in zip(default_predictions, scene_frames)
    ]

    def mean_correlation(gap):
        values = []
        for i in range(len(scene_frames) - gap):
            ea, eb = corresponding_errors(scene_frames[i], scene_frames[i + gap], errors[i], errors[i + gap])
            if ea.size > 2000 and 0 < ea.mean() < 1 and 0 < eb.mean() < 1:
                values.append(np.corrcoef(ea, eb)[0, 1])
        assert len(values) >= 5
        return np.mean(values)

    nearby, distant = mean_correlation(1), mean_correlation(10)
    assert nearby > distant + 0.1
    assert distant > 0.1  # anchored in the world: not independent per view either


# ----------------------------------------------------------------------------- masks
def two_boxes(depth_right_m=2.0):
    """80 x 60 frame: two touching object boxes (instances 1, 2) on nothing; the right one at depth_right_m."""
    labels = np.full((60, 80), 255, np.int32)
    instances = np.zeros((60, 80), np.int32)
    labels[10:50, 10:40], instances[10:50, 10:40] = CHAIR, 1
    labels[10:50, 40:70], instances[10:50, 40:70] = TABLE, 2
    depth = np.where(np.arange(80) < 40, 2.0, depth_right_m)[None, :].repeat(60, 0)
    return labels, instances, depth


def mask_coverage(ids: np.ndarray, region: np.ndarray) -> list:
    """Ids of the masks covering at least 20 % of `region` [H, W] bool."""
    found = np.bincount(ids[region], minlength=ids.max() + 1)
    return [i for i in np.flatnonzero(found) if i > 0 and found[i] >= 0.2 * region.sum()]


def test_masks_on_rendered_scene(scene_frames):
    generator = SimulatedMaskGenerator(MaskSimConfig(), seed=4)
    counts = []
    for f in scene_frames:
        ids = generator.generate(f)
        assert ids.shape == f.depth_m.shape and ids.dtype == np.int32
        present = np.unique(ids[ids > 0])
        assert np.array_equal(present, np.arange(1, len(present) + 1))  # one id per pixel, ids 1..M
        assert np.all(np.bincount(ids.ravel())[1:] >= 0.03 * ids.size)
        counts.append(len(present))
    assert np.mean(counts) >= 3
    again = SimulatedMaskGenerator(MaskSimConfig(), seed=4).generate(scene_frames[5])
    assert np.array_equal(again, generator.generate(scene_frames[5]))


def test_ground_truth_segments_split_a_hidden_wall_only_in_the_image():
    labels = np.full((40, 60), WALL, np.int32)
    instances = np.zeros((40, 60), np.int32)
    labels[:, 25:35], instances[:, 25:35] = CHAIR, 1  # a chair cuts the wall in two in this view
    frame = hand_frame(labels, instances)
    for image_components, wall_segments in ((True, 2), (False, 1)):
        segments, is_object = ground_truth_segments(frame, LABELS, image_components=image_components)
        assert len(is_object) == 2 + wall_segments and is_object.tolist() == [False, True] + [False] * wall_segments
        assert np.all(segments[:, 25:35] == 1)
        assert len(np.unique(segments[:, :25])) == 1 and len(np.unique(segments[:, 35:])) == 1
        assert (segments[0, 0] == segments[0, -1]) == (wall_segments == 1)


def test_split_rate():
    labels, instances, depth = two_boxes()
    generator = SimulatedMaskGenerator(MaskSimConfig(split_prob=0.3, merge_prob=0.0, miss_prob=0.0), seed=0)
    splits = []
    for k in range(150):
        ids = generator.generate(hand_frame(labels, instances, depth, stamp_ns=k))
        splits += [len(mask_coverage(ids, instances == i)) == 2 for i in (1, 2)]
    assert abs(np.mean(splits) - 0.3) < 0.07


def test_merge_rate_only_for_touching_objects():
    generator = SimulatedMaskGenerator(MaskSimConfig(split_prob=0.0, merge_prob=0.4, miss_prob=0.0), seed=0)
    for depth_right_m, expected in ((2.0, 0.4), (3.0, 0.0)):
        labels, instances, depth = two_boxes(depth_right_m)
        merged = []
        for k in range(150):
            ids = generator.generate(hand_frame(labels, instances, depth, stamp_ns=k))
            merged.append(set(mask_coverage(ids, instances == 1)) == set(mask_coverage(ids, instances == 2)))
        assert abs(np.mean(merged) - expected) < 0.09


def test_small_objects_missed_or_dropped():
    labels = np.full((60, 80), WALL, np.int32)
    instances = np.zeros((60, 80), np.int32)
    boxes = [(2, 32, 40, 80), (40, 48, 2, 14), (40, 46, 30, 36)]  # 25 %, 2 %, 0.75 % of the image
    for k, (y0, y1, x0, x1) in enumerate(boxes, start=1):
        labels[y0:y1, x0:x1], instances[y0:y1, x0:x1] = CHAIR, k
    config = MaskSimConfig(
        split_prob=0.0, merge_prob=0.0, miss_prob=0.5, min_area_fraction=0.015, miss_area_fraction=0.03
    )
    generator = SimulatedMaskGenerator(config, seed=0)
    seen = np.zeros(3)
    for k in range(100):
        ids = generator.generate(hand_frame(labels, instances, stamp_ns=k))
        seen += [len(mask_coverage(ids, instances == i)) > 0 for i in (1, 2, 3)]
    p_miss = 0.5 * (0.03 - 0.02) / (0.03 - 0.015)  # the 2 % object on the miss ramp
    assert seen[0] == 100 and abs(seen[1] / 100 - (1 - p_miss)) < 0.15 and seen[2] == 0


def test_preprocess_masks_drops_small_and_contained_masks():
    H, W = 50, 100
    masks = np.zeros((5, H, W), bool)
    masks[0, :, :40] = True  # 40 %
    masks[1, 10:30, 5:30] = True  # 10 %, inside mask 0
    masks[2, 0:5, 90:94] = True  # 0.4 %: too small
    masks[3, :20, 30:70] = True  # 16 %, a quarter inside mask 0
    masks[4, 30:50, 60:100] = True  # 16 %, scored below 0.7
    scores = np.array([[0.9, 0.95], [0.9, 0.9], [0.9, 0.9], [0.8, 0.75], [0.6, 0.9]])
    ids = preprocess_masks(masks, min_area_fraction=0.03, scores=scores)
    assert ids.dtype == np.int32 and set(np.unique(ids)) == {0, 1, 2}
    assert np.all(ids[:, :30] == 1) and np.all(ids[:20, 30:70] == 2)  # the smaller mask wins the overlap
    assert np.all(ids[20:, 40:] == 0)
    image = np.zeros((H, W), np.int32)
    image[:, :50], image[:2, 60:62], image[10:40, 70:90] = 7, 3, 9
    out = preprocess_masks(image, min_area_fraction=0.03)
    assert set(np.unique(out)) == {0, 1, 2} and np.all(out[:2, 60:62] == 0)
    assert not preprocess_masks(np.zeros((0, H, W), bool)).any()
