"""objects.* figures: object slots (DiscoNeRF) against the single-view masks on held-out views.

Every tenth frame (index 5, 15, ...) is held out of the map. The other frames are fused, and every
`objects.view_interval_frames`-th of them, with its simulated SAM-like masks, becomes a view of the
slot field. The full method and its ablations (no Hungarian matching, no L_TV) fit their own fields
to the very same views in the same run; the extraction ablations (objects from the field's argmax
without the views' mask votes, parts never joined, parts joined by whole-part masks only and not
along their seams, unmasked voxels not grouped by class, object parts
joined to walls and floors and so also whatever their classes, object parts joined whatever their
classes, renders without their narrow gaps closed) read the full method's field. At each
held-out pose, the map's objects rendered there and the simulated masks of that (never fused) view
are scored against the ground-truth segments with DiscoNeRF's IoU, BD and SBD. The ground truth is
one segment per object instance and per floor, wall or ceiling plane, the same 3D surfaces in every
view, as the 3D instance annotations DiscoNeRF scores against. The scores against segments that are
also split where the view cuts a surface apart (a floor a table hides the middle of, as two
segments: how the simulated masks segment it) are reported beside as `image_gt`. Ground-truth
segments under `MIN_GT_SEGMENT_FRACTION` of the image (slivers no annotator would outline) and
pixels of no segment are not scored. Both predictions go through the same §7.1 size filter
(segments under `objects.min_mask_area_fraction` of the image dropped): the masks went through it
when they were made, the rendered objects get it here; the
scores of the renders without it are reported beside. So are the scores over the pixels whose
ground-truth depth lies within `fusion.depth_max_m` (`in_range`): the map holds no surface beyond
it, while the masks cut the whole image.
Object-level recall counts ground-truth object instances matched by exactly one object at 3D IoU
>= 0.5 over the ground-truth surface voxels the fused frames saw.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

import cv2
import numpy as np

HOLD_OUT_EVERY = 10
HOLD_OUT_OFFSET = 5
EVAL_WIDTH_PX = 320
MIN_GT_SEGMENT_FRACTION = 0.01
MIN_INSTANCE_VOXELS = 50
"""Ground-truth object instances with fewer seen surface voxels (0.08 m^2 at 4 cm) are not scored."""
VARIANTS = {"full": {}, "no_matching": {"matching": "argmax"}, "no_tv": {"lambda_tv": 0.0}}
"""Ablations that fit their own field."""
EXTRACTION_VARIANTS = {"no_votes": {"mask_votes": False}, "no_join": {"join_share": 0.0}, "no_seams": {"join_seams": False},
                       "no_class_groups": {"unmasked_class_share": 0.0}, "join_across_roles": {"join_across_roles": True},
                       "join_any_classes": {"join_class_overlap": 0.0}, "no_gap_closing": {"render_gap_fraction": 0.0}}
"""Ablations of the extraction alone: objects read out of the full method's fitted field."""
FIT_THREADS = 1
"""Torch threads of the fits: they are reproducible on any thread count, but their float sums, and so
the figures, depend on it (the matching and the joins amplify a last-bit difference to a few tenths of
a point of IoU on a scene); one thread is also the fastest here."""
GROUND_TRUTHS = {"gt": False, "image_gt": True}
"""Scored ground truths: `ground_truth_segments(image_components=...)`; "gt" gives the figures."""


def _scores_key(name: str, kind: str) -> str:
    """Key of a prediction's scores against one ground truth: 'full', 'full_image_gt', ..."""
    return name if kind == "gt" else f"{name}_{kind}"


def scored_segments(gt_ids: np.ndarray, *predictions: np.ndarray, min_pred_fraction: float = 0.03) -> tuple:
    """The id images [H, W] as scored. Ground-truth segments under MIN_GT_SEGMENT_FRACTION of the
    image (slivers no annotator would outline) and pixels of no segment are not scored: predictions
    lose those pixels. Predicted segments under `min_pred_fraction` are dropped (set to 0, no mask):
    the §7.1 size filter the single-view masks already went through, applied to every prediction."""
    area = np.bincount(gt_ids.ravel())
    keep = np.flatnonzero(area >= MIN_GT_SEGMENT_FRACTION * gt_ids.size)
    gt = np.where(np.isin(gt_ids, keep[keep > 0]), gt_ids, 0)
    out = [gt]
    for ids in predictions:
        ids = np.where(gt > 0, ids, 0)
        area = np.bincount(ids.ravel())
        keep = np.flatnonzero(area >= min_pred_fraction * ids.size)
        out.append(np.where(np.isin(ids, keep[keep > 0]), ids, 0))
    return tuple(out)


def view_scores(pred_ids: np.ndarray, gt_ids: np.ndarray) -> np.ndarray:
    """[iou, bd, sbd] of one view (DiscoNeRF §4.1)."""
    from semantic_mapping.eval.metrics import best_dice, instance_iou, symmetric_best_dice

    return np.array([instance_iou(pred_ids, gt_ids), best_dice(pred_ids, gt_ids), symmetric_best_dice(pred_ids, gt_ids)])


def in_range_scores(pred_ids: np.ndarray, gt_ids: np.ndarray, in_range: np.ndarray) -> np.ndarray:
    """[iou, bd, sbd] of one view over its pixels in range [H, W] bool only, for id images as
    `scored_segments` gives them (predictions size-filtered over the whole image)."""
    return view_scores(np.where(in_range, pred_ids, 0), np.where(in_range, gt_ids, 0))


def objects_scene(seed: int, num_frames: int, voxel_size_m: float, base=None, variants: dict = VARIANTS,
                  progress: bool = True) -> dict:
    """Map scene `seed` without its held-out frames, fit every variant's slot field; raw figures."""
    from tqdm import tqdm

    from semantic_mapping.config import FusionConfig, MapperConfig, ObjectsConfig
    from semantic_mapping.eval.mapping_eval import SurfaceVisibility
    from semantic_mapping.eval.metrics import instance_recall
    from semantic_mapping.objects.slots import ObjectSlots, resize_ids
    from semantic_mapping.pipeline import Mapper
    from semantic_mapping.sim.ground_truth import voxelize_surface
    from semantic_mapping.sim.masks import ground_truth_segments
    from semantic_mapping.sim.sequence import simulate

    base = base or ObjectsConfig()
    recording = simulate(seed, num_frames=num_frames)
    mapper = Mapper(MapperConfig(fusion=FusionConfig(voxel_size_m=voxel_size_m, device="cpu"),
                                 objects=ObjectsConfig(enabled=False)))
    slots = {name: ObjectSlots(replace(base, mask_source="frame", **change), mapper.label_space)
             for name, change in variants.items()}
    gt_voxels = voxelize_surface(recording.mesh, voxel_size_m)
    visibility = SurfaceVisibility(gt_voxels, mapper.config.fusion.depth_max_m)
    held = []  # (T_world_cam, {gt kind: (scored gt segments, scored masks)}, in range [H, W] bool)
    W = EVAL_WIDTH_PX
    H = int(round(recording.intrinsics.height_px * W / recording.intrinsics.width_px))
    eval_intrinsics = recording.intrinsics.scaled(W, H)
    fit_s, view_s, views, integrated = 0.0, 0.0, 0, 0
    for i in tqdm(range(len(recording)), desc=f"objects scene {seed}", unit="frame", file=sys.stderr,
                  disable=not progress):
        is_view = i % HOLD_OUT_EVERY != HOLD_OUT_OFFSET and integrated % base.view_interval_frames == 0
        if i % HOLD_OUT_EVERY == HOLD_OUT_OFFSET:
            frame = recording.frame(i, semantics=False, masks=True)
            masks = resize_ids(frame.instance_masks, W, H)
            scored = {}
            for kind, image_components in GROUND_TRUTHS.items():
                gt_ids, _ = ground_truth_segments(frame, mapper.label_space, image_components=image_components)
                scored[kind] = scored_segments(resize_ids(gt_ids, W, H), masks, min_pred_fraction=base.min_mask_area_fraction)
            gt_depth_m = cv2.resize(frame.ground_truth.depth_m, (W, H), interpolation=cv2.INTER_NEAREST)  # [H, W]
            in_range = (gt_depth_m > 0) & (gt_depth_m <= mapper.config.fusion.depth_max_m)
            held.append((frame.T_world_cam, scored, in_range))
            continue
        frame = recording.frame(i, masks=is_view)
        visibility.add(frame)
        if not mapper.integrate(frame).accepted:
            raise RuntimeError(f"benchmark frame {i} of scene {seed} was rejected")
        integrated += 1
        if not is_view:
            continue
        t0 = time.perf_counter()
        view = slots["full"].make_view(mapper.map, frame)
        view_s += time.perf_counter() - t0
        if view is None:
            continue
        views += 1
        for s in slots.values():
            t0 = time.perf_counter()
            if s.field.add_view(*view):
                s.field.optimise(s.config.steps_per_view)
            fit_s += (time.perf_counter() - t0) / len(slots)
    steps = slots["full"].field.steps
    out = {"seed": seed, "views": views, "held_out_views": len(held), "ms_per_view": 1000 * view_s / max(views, 1),
           "ms_per_step": 1000 * fit_s / max(steps, 1), "slots": slots["full"].field.num_slots,
           "field_voxels": slots["full"].field.num_voxels, "scores": {}, "recall": {}}
    for kind in GROUND_TRUTHS:
        out["scores"][_scores_key("masks", kind)] = np.mean([view_scores(masks, gt) for _, scored, _ in held
                                                            for gt, masks in [scored[kind]] if gt.any()], axis=0)
    out["scores"]["masks_in_range"] = np.mean([in_range_scores(masks, gt, in_range) for _, scored, in_range in held
                                               for gt, masks in [scored["gt"]] if (gt * in_range).any()], axis=0)
    scored_px = sum(int((scored["gt"][0] > 0).sum()) for _, scored, _ in held)
    out["beyond_range_share"] = sum(int(((scored["gt"][0] > 0) & ~in_range).sum())
                                    for _, scored, in_range in held) / max(scored_px, 1)
    seen = visibility.seen
    object_class = np.array([r == "object" for r in mapper.label_space.roles])
    gt_instance = np.where(object_class[gt_voxels.classes[seen]], gt_voxels.instances[seen], 0)
    for name, change in EXTRACTION_VARIANTS.items():
        slots[name] = ObjectSlots(replace(slots["full"].config, **change), mapper.label_space)
        slots[name].field = slots["full"].field
    for name, s in slots.items():
        t0 = time.perf_counter()
        objects = s.extract(mapper.map)
        extract_s = time.perf_counter() - t0
        scores, unfiltered, scores_in_range = {kind: [] for kind in GROUND_TRUTHS}, [], []
        for T_world_cam, scored, in_range in held:
            rendered = s.render_ids(mapper.map, eval_intrinsics, T_world_cam)
            for kind, (gt, _) in scored.items():
                if gt.any():
                    pred = scored_segments(gt, rendered, min_pred_fraction=base.min_mask_area_fraction)[1]
                    scores[kind].append(view_scores(pred, gt))
                    if kind == "gt" and (gt * in_range).any():
                        scores_in_range.append(in_range_scores(pred, gt, in_range))
            gt = scored["gt"][0]
            if gt.any():
                unfiltered.append(view_scores(scored_segments(gt, rendered, min_pred_fraction=MIN_GT_SEGMENT_FRACTION)[1], gt))
        for kind, values in scores.items():
            out["scores"][_scores_key(name, kind)] = np.mean(values, axis=0)
        out["scores"][f"{name}_unfiltered"] = np.mean(unfiltered, axis=0)
        out["scores"][f"{name}_in_range"] = np.mean(scores_in_range, axis=0)
        pred = s.object_ids(gt_voxels.indices[seen].astype(np.int64))
        recall = instance_recall(gt_instance, pred, MIN_INSTANCE_VOXELS)
        recall.pop("per_instance")
        out["recall"][name] = {**recall, "objects": len(objects), "extract_s": extract_s}
    return out


def objects_figures(seeds: list, num_frames: int, voxel_size_m: float, progress: bool = True) -> list:
    """objects.iou, objects.bd, objects.sbd, objects.masks_iou (and masks_bd, masks_sbd),
    objects.instance_recall, with the ablations in the details."""
    from semantic_mapping.eval.bench import Figure

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(FIT_THREADS)
    try:
        scenes = [objects_scene(seed, num_frames, voxel_size_m, progress=progress) for seed in seeds]
    finally:
        torch.set_num_threads(threads)

    def score(name, k):
        return float(np.mean([s["scores"][name][k] for s in scenes]))

    def recall_sum(name, key):
        return int(sum(s["recall"][name][key] for s in scenes))

    names = ("masks", *VARIANTS, *EXTRACTION_VARIANTS)
    ablations = {name: {m: score(name, k) for k, m in enumerate(("iou", "bd", "sbd"))} for name in names}
    image_gt = {name: {m: score(_scores_key(name, "image_gt"), k) for k, m in enumerate(("iou", "bd", "sbd"))} for name in names}
    in_range = {name: {m: score(f"{name}_in_range", k) for k, m in enumerate(("iou", "bd", "sbd"))} for name in names}
    detail = {"held_out_views": sum(s["held_out_views"] for s in scenes), "torch_threads": FIT_THREADS, "views_per_scene": [s["views"] for s in scenes],
              "eval_width_px": EVAL_WIDTH_PX, "min_gt_segment_fraction": MIN_GT_SEGMENT_FRACTION,
              "ablations": ablations, "image_gt_ablations": image_gt, "in_range_ablations": in_range,
              "beyond_range_share": {s["seed"]: s["beyond_range_share"] for s in scenes}, "per_seed": {s["seed"]: {n: list(map(float, v)) for n, v in s["scores"].items()}
                                                  for s in scenes}}
    figures = []
    for k, metric in enumerate(("iou", "bd", "sbd")):
        figures.append(Figure(f"objects.{metric}", score("full", k), "fraction", seeds,
                              {**{name: score(name, k) for name in names if name != "full"},
                               "image_gt": score(_scores_key("full", "image_gt"), k),
                               "masks_image_gt": score(_scores_key("masks", "image_gt"), k),
                               "in_range": score("full_in_range", k), "masks_in_range": score("masks_in_range", k),
                               **(detail if k == 0 else {})}))
    for k, metric in enumerate(("iou", "bd", "sbd")):
        figures.append(Figure(f"objects.masks_{metric}", score("masks", k), "fraction", seeds,
                              {"what": "single-view simulated SAM-like masks at the same held-out views",
                               "image_gt": score(_scores_key("masks", "image_gt"), k)}))
    evaluated = recall_sum("full", "evaluated")
    recall_detail = {name: {key: recall_sum(name, key) for key in ("evaluated", "matched", "merged", "split", "objects")}
                     for name in (*VARIANTS, *EXTRACTION_VARIANTS)}
    figures.append(Figure("objects.instance_recall", recall_sum("full", "matched") / max(evaluated, 1), "fraction", seeds,
                          {"min_instance_voxels": MIN_INSTANCE_VOXELS, **recall_detail["full"],
                           "ablations": recall_detail}))
    figures.append(Figure("objects.ms_per_step", float(np.mean([s["ms_per_step"] for s in scenes])), "ms", seeds,
                          {"ms_per_view_prepare": float(np.mean([s["ms_per_view"] for s in scenes])),
                           "slots": [s["slots"] for s in scenes], "field_voxels": [s["field_voxels"] for s in scenes]}))
    return figures
