"""Completion figures (SSR-2D Table 2's geometry metrics and semantic scene completion mIoU).

Each held-out scene is fused from every frame: the complete scan. The incomplete scan is that map
with cube-shaped holes (SSR-2D §4.2: 1.0 / 0.5 / 0.2 m cubes, p = 0.2 each, seeded by the scene) as
the completion network reads it. Per map chunk, in the same run:

- raw:       the incomplete scan as it is;
- completed: what the map outputs: the observed voxels of the incomplete scan, and where nothing was
             observed the predicted voxels the map keeps (near the predicted surface) whose label
             probability is at least `completion.min_confidence`; other voxels are unknown;
- completed with every prediction (in the figures' detail): the threshold at 0.

Geometry: a voxel is surface when its TSDF changes sign towards a 6-neighbour and it is the nearer
of the two to zero (one voxel thick). Ground truth is the complete scan's surface; voxels the
complete scan never observed are not scored (nobody knows what is there). IoU, precision and
recall count voxels; the figures' detail also scores the completed surface inside the holes alone
(voxels the complete scan observed and the incomplete one did not). Semantics: the ground-truth
mesh's surface voxels seen by some frame of the recording, each scored against the map's label
(observed label where the incomplete scan has one, then the network's label for the completed map);
an unlabelled voxel counts as wrong.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from semantic_mapping.completion.data import IncompleteScanConfig, masked_input
from semantic_mapping.completion.infer import complete_chunk
from semantic_mapping.completion.live import stored_voxels


def surface_voxels(tsdf: np.ndarray, known: np.ndarray) -> np.ndarray:  # [X, Y, Z] bool
    """Voxels of a dense TSDF [X, Y, Z] (known [X, Y, Z] bool) that the zero level passes: the sign
    changes towards a known 6-neighbour and this voxel's |tsdf| is the smaller (ties: both)."""
    surface = known & (tsdf == 0)
    for axis in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(0, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        crossing = known[a] & known[b] & ((tsdf[a] > 0) != (tsdf[b] > 0))
        surface[a] |= crossing & (np.abs(tsdf[a]) <= np.abs(tsdf[b]))
        surface[b] |= crossing & (np.abs(tsdf[b]) <= np.abs(tsdf[a]))
    return surface


def _counts(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:  # [3] int64: TP, FP, FN
    return np.array([np.sum(pred & gt), np.sum(pred & ~gt), np.sum(~pred & gt)], np.int64)


def chunk_geometry_counts(
    complete_tsdf: np.ndarray,  # [X, Y, Z] the complete scan
    complete_known: np.ndarray,  # [X, Y, Z] bool
    raw_tsdf: np.ndarray,  # [X, Y, Z] the incomplete scan
    observed: np.ndarray,  # [X, Y, Z] bool: known in the incomplete scan
    predicted_tsdf: np.ndarray,  # [X, Y, Z] the network's TSDF
    predicted_stored: np.ndarray,  # [X, Y, Z] bool: unobserved voxels whose prediction the map stores
    predicted_kept: np.ndarray,  # [X, Y, Z] bool: those of them it outputs (confident enough)
) -> dict:  # name -> [3] int64 TP, FP, FN
    """Surface counts of one chunk against the complete scan's surface, where it is known: the raw
    scan, the completed one (observed voxels and the kept predictions; the rest unknown), the
    completed one inside the holes alone, and the completed one with every stored prediction."""
    truth = surface_voxels(complete_tsdf, complete_known)
    tsdf = np.where(observed, raw_tsdf, predicted_tsdf)
    completed = surface_voxels(tsdf, observed | predicted_kept) & complete_known
    every = surface_voxels(tsdf, observed | predicted_stored) & complete_known
    return {"raw": _counts(surface_voxels(raw_tsdf, observed) & complete_known, truth),
            "completed": _counts(completed, truth),
            "completed_in_holes": _counts(completed & ~observed, truth & ~observed),
            "completed_every_prediction": _counts(every, truth)}


def geometry_scores(counts: np.ndarray) -> dict:
    """IoU, precision and recall of summed [TP, FP, FN] counts."""
    tp, fp, fn = (float(v) for v in counts)
    return {"iou": tp / max(tp + fp + fn, 1.0), "precision": tp / max(tp + fp, 1.0), "recall": tp / max(tp + fn, 1.0)}


def completion_scene(seed: int, num_frames: int, voxel_size_m: float, net, scan: IncompleteScanConfig,
                     min_confidence: float, context_voxels: int = 8, progress: bool = True) -> dict:
    """Fuse scene `seed`, cut the holes, complete every chunk; geometry counts, semantic confusions,
    timings. Predictions with a label probability under `min_confidence` are left out as the map does."""
    from tqdm import tqdm

    from semantic_mapping.completion.data import fuse_frames
    from semantic_mapping.config import FusionConfig
    from semantic_mapping.eval.mapping_eval import SurfaceVisibility
    from semantic_mapping.eval.metrics import confusion_matrix
    from semantic_mapping.sim.ground_truth import voxelize_surface
    from semantic_mapping.sim.sequence import simulate

    recording = simulate(seed, num_frames=num_frames)
    visibility = SurfaceVisibility(voxelize_surface(recording.mesh, voxel_size_m), FusionConfig().depth_max_m)
    mapper = fuse_frames(recording, range(len(recording)), voxel_size_m, progress, on_frame=visibility.add)
    voxel_map = mapper.map
    gt_voxels = visibility.gt.indices[visibility.seen]  # [G, 3]
    gt_classes = visibility.gt.classes[visibility.seen]  # [G]

    def read_incomplete(origin_index, shape):
        return masked_input(voxel_map.read_region(origin_index, shape), origin_index, voxel_size_m, scan, seed)

    chunk_shape = voxel_map.chunk_shape_voxels
    blocks = voxel_map.active_block_coords().cpu().numpy().astype(np.int64)
    chunks = np.unique(np.floor_divide(blocks * voxel_map.block_resolution, chunk_shape), axis=0)
    gt_chunk = np.floor_divide(gt_voxels, chunk_shape)
    C, ignore_id = mapper.label_space.num_classes, mapper.label_space.ignore_id
    counts = {name: np.zeros(3, np.int64)
              for name in ("raw", "completed", "completed_in_holes", "completed_every_prediction")}
    confusion = {name: np.zeros((C, C + 1), np.int64) for name in ("raw", "completed", "completed_every_prediction")}
    chunk_s, masked_share = [], []
    for chunk in tqdm(chunks, desc=f"complete scene {seed}", unit="chunk", file=sys.stderr, disable=not progress):
        gt = voxel_map.read_chunk(chunk)
        origin = gt["origin_index"]
        raw = masked_input(gt, origin, voxel_size_m, scan, seed)  # the chunk as the network reads it
        t0 = time.perf_counter()
        prediction = complete_chunk(net, voxel_map, chunk, context_voxels, read=read_incomplete)
        chunk_s.append(time.perf_counter() - t0)
        gt_known = gt["weight"] > 0
        observed = raw["weight"] > 0
        masked_share.append(float(np.sum(gt_known & ~observed)) / max(int(gt_known.sum()), 1))
        stored = stored_voxels(prediction)
        kept = stored & (prediction["label_probability"] >= min_confidence)
        for name, value in chunk_geometry_counts(gt["tsdf"], gt_known, raw["tsdf"], observed, prediction["tsdf"],
                                                 stored, kept).items():
            counts[name] += value

        here = np.all(gt_chunk == chunk, axis=1)
        local = tuple((gt_voxels[here] - origin).T)
        labelled = observed[local] & (gt["semantic_count"][local] > 0)
        observed_label = np.where(labelled, gt["log_probs"][local].argmax(-1), -1)
        confusion["raw"] += confusion_matrix(observed_label, gt_classes[here], C, ignore_id)
        predicted_label = prediction["labels"][local]
        confusion["completed"] += confusion_matrix(
            np.where(labelled, observed_label, np.where(kept[local], predicted_label, -1)), gt_classes[here], C, ignore_id)
        confusion["completed_every_prediction"] += confusion_matrix(
            np.where(labelled, observed_label, np.where(stored[local], predicted_label, -1)), gt_classes[here], C, ignore_id)
    return {"seed": seed, "chunks": len(chunks), "counts": counts, "confusion": confusion,
            "chunk_s": chunk_s, "masked_share": float(np.mean(masked_share))}


def completion_figures(seeds: list, num_frames: int, voxel_size_m: float, progress: bool = True,
                       weights=None) -> list:
    """completion.geo_iou_gain, geo_recall_gain, ssc_miou_gain, precision_drop (points) and ms_per_chunk."""
    import torch

    from semantic_mapping.completion.live import SHIPPED_WEIGHTS, load_live_network
    from semantic_mapping.config import CompletionConfig, FusionConfig
    from semantic_mapping.eval.bench import Figure
    from semantic_mapping.eval.metrics import SegmentationScores
    from semantic_mapping.semantics.label_space import default_label_space

    path = Path(weights) if weights else SHIPPED_WEIGHTS
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = load_live_network(CompletionConfig(weights=str(path), device=device), default_label_space().num_classes,
                            voxel_size_m)
    scan = IncompleteScanConfig(keep_view_fraction=1.0, cube_probability=0.2)
    min_confidence = CompletionConfig().min_confidence
    scenes = [completion_scene(seed, num_frames, voxel_size_m, net, scan, min_confidence, progress=progress)
              for seed in seeds]
    geo = {name: geometry_scores(sum(s["counts"][name] for s in scenes)) for name in scenes[0]["counts"]}
    ssc = {name: SegmentationScores.from_confusion(sum(s["confusion"][name] for s in scenes)).miou
           for name in scenes[0]["confusion"]}
    chunk_ms = 1000 * np.array([t for s in scenes for t in s["chunk_s"]])
    detail = {**geo, "min_confidence": min_confidence, "ssc_miou_raw": ssc["raw"], "ssc_miou_completed": ssc["completed"],
              "ssc_miou_completed_every_prediction": ssc["completed_every_prediction"],
              "masked_share_of_known_voxels": float(np.mean([s["masked_share"] for s in scenes])),
              "chunks": int(sum(s["chunks"] for s in scenes)), "weights": path.name,
              "holes": "cubes 1.0/0.5/0.2 m, p = 0.2 each"}
    points = lambda name: 100 * (geo["completed"][name] - geo["raw"][name])  # noqa: E731
    return [
        Figure("completion.geo_iou_gain", points("iou"), "points", seeds, detail),
        Figure("completion.geo_recall_gain", points("recall"), "points", seeds, detail),
        Figure("completion.ssc_miou_gain", 100 * (ssc["completed"] - ssc["raw"]), "points", seeds, detail),
        Figure("completion.precision_drop", -points("precision"), "points", seeds, detail),
        Figure("completion.ms_per_chunk", float(np.median(chunk_ms)), "ms", seeds,
               {"device": device, "threads": torch.get_num_threads(), "p90_ms": float(np.percentile(chunk_ms, 90)),
                "chunk_voxels": list(FusionConfig().chunk_shape_voxels)}),
    ]
