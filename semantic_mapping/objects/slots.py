"""Object slots of the map: views from frames with masks, the slot field fitted to them, and objects
extracted from it with stable ids.

Work is split so that the mapping thread only offers frames (`offer`, no computation): `prepare` turns
the offered frames into views (masks preprocessed at the view size as DiscoNeRF §7.1, the map raycast
at the view), `optimise` fits the field (no map access), `extract` reads objects out of it.
"""

from __future__ import annotations

import collections
import itertools
import logging
from typing import NamedTuple, Optional

import cv2
import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from semantic_mapping.config import ObjectsConfig
from semantic_mapping.fusion.voxel_map import VoxelMap, neighbour_pairs, pack_indices, sorted_positions, unpack_indices
from semantic_mapping.geometry.pose import transform_points
from semantic_mapping.geometry.projection import backproject_depth
from semantic_mapping.objects.slot_field import SlotField
from semantic_mapping.semantics.label_space import LabelSpace
from semantic_mapping.sim.masks import preprocess_masks
from semantic_mapping.types import CameraIntrinsics, Frame, MapObject

log = logging.getLogger(__name__)

MASK_SOURCES = ("auto", "frame", "geometric")
_MAX_PENDING_FRAMES = 4
_MAX_VIEWS_BEHIND = 4  # optimisation steps due are capped at this many views' worth
_NEIGHBOUR_STEPS = np.array(
    sorted(
        [(x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1) if (x, y, z) != (0, 0, 0)],
        key=lambda s: (abs(s[0]) + abs(s[1]) + abs(s[2]), s),
    ),
    np.int64,
)  # [26, 3] face neighbours first, then edges, then corners (nearest first from a voxel centre)
_SURFACE_TRUNCATION_SHARE = 0.75  # field voxels with |sdf| under this share of the truncation are surface
_MIN_ID_OVERLAP = 0.3  # share of a new part that must lie in an old object for it to keep that object's id
_JOIN_COVER_SHARE = 0.5  # a mask covers a part in a view when it holds this share of the part's pixels there
_JOIN_MIN_PIXELS = 20  # a part counts as seen by a view with this many pixels (at the view width)
_SEAM_MIN_PIXELS = 5  # a part's voxels along a seam count as seen by a view with this many pixels


def view_size(intrinsics: CameraIntrinsics, view_width_px: int) -> tuple[int, int]:
    """(width, height) pixels of an object view of a camera: `view_width_px` wide, same aspect."""
    width = min(int(view_width_px), intrinsics.width_px)
    return width, max(1, int(round(intrinsics.height_px * width / intrinsics.width_px)))


def resize_ids(ids: np.ndarray, width_px: int, height_px: int) -> np.ndarray:  # [h, w] int32
    """Nearest-neighbour resize of an id image [H, W]."""
    return cv2.resize(np.asarray(ids, np.int32), (width_px, height_px), interpolation=cv2.INTER_NEAREST)


def dilate_ids(ids: np.ndarray, pixels: int) -> np.ndarray:
    """Grow every mask of an id image [H, W] by `pixels` into pixels no mask covers."""
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(int(pixels)):
        grown = cv2.dilate(ids.astype(np.float32), kernel).astype(np.int32)
        ids = np.where(ids == 0, grown, ids)
    return ids


def close_gaps(ids: np.ndarray, gap_px: int) -> np.ndarray:
    """Id image [H, W] whose pixels of id 0 in gaps between masks up to `gap_px` wide (rounded down to
    even) take the nearest mask's id (a morphological closing of the masked pixels); wider empty
    regions stay 0."""
    size = 2 * (int(gap_px) // 2) + 1  # a centred square closes gaps up to size - 1 pixels wide
    if size < 3:
        return ids
    enclosed = cv2.morphologyEx((ids > 0).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((size, size), np.uint8)) > 0
    return np.where(enclosed & (ids == 0), dilate_ids(ids, gap_px), ids)


def surface_points(voxel_map: VoxelMap, intrinsics: CameraIntrinsics, T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hit [H, W] bool, world points [P, 3] metres of the hit pixels, row-major) of the map raycast."""
    depth = voxel_map.raycast(intrinsics, T_world_cam, with_labels=False).depth_m  # [H, W] metres
    hit = depth > 0
    return hit, transform_points(T_world_cam, backproject_depth(depth, intrinsics.K)[hit])


class FieldSurface(NamedTuple):
    """The map as object extraction reads it (`ObjectSlots.read_map`)."""

    rows: np.ndarray  # [R] int64 field rows of the voxels on the surface
    values: dict  # `VoxelMap.voxel_values` of those voxels, [R, ...] each
    voxel_size_m: float


class ObjectSlots:
    """The object-slot stage of the mapper."""

    def __init__(self, config: ObjectsConfig, label_space: LabelSpace, device="cpu"):
        if config.mask_source not in MASK_SOURCES:
            raise ValueError(f"objects.mask_source must be one of {MASK_SOURCES}, got {config.mask_source!r}")
        if config.matching not in ("hungarian", "argmax"):
            raise ValueError(f"objects.matching must be 'hungarian' or 'argmax', got {config.matching!r}")
        self.config = config
        self.label_space = label_space
        self._object_class = np.array([role == "object" for role in label_space.roles])  # [C] bool
        self.device = device
        self._geometric = None  # built on first use
        self.reset()

    def reset(self) -> None:
        """Forget the field, the views and the objects."""
        self.field = SlotField(self.config, self.device)
        self._frames_since_view = self.config.view_interval_frames  # the first frame is a view
        self._pending: collections.deque = collections.deque()
        self._steps_due = 0
        self.counters = collections.Counter()  # views, views_without_masks, frames_dropped, steps_skipped
        self._object_keys = np.zeros(0, np.int64)  # [M] sorted packed voxel indices of the last extraction
        self._object_ids = np.zeros(0, np.int64)  # [M] their object ids
        self._next_id = 1
        self.objects: list[MapObject] = []

    # ------------------------------------------------------------------ views
    def offer(self, frame: Frame) -> None:
        """Called for each integrated frame: the first frame that can give masks once
        `view_interval_frames` frames have passed since the last view is queued as a view."""
        self._frames_since_view += 1
        if self._frames_since_view < self.config.view_interval_frames or not self._has_mask_source(frame):
            return
        self._frames_since_view = 0
        if len(self._pending) >= _MAX_PENDING_FRAMES:
            self._pending.popleft()
            self.counters["frames_dropped"] += 1
        self._pending.append(frame)

    def _has_mask_source(self, frame: Frame) -> bool:
        source = self.config.mask_source
        return source in ("auto", "geometric") or frame.instance_masks is not None

    @property
    def pending_frames(self) -> int:
        return len(self._pending)

    def prepare(self, voxel_map: VoxelMap) -> int:
        """Turn the queued frames into views of the field (needs the map); returns views added."""
        added = 0
        while self._pending:
            frame = self._pending.popleft()
            view = self.make_view(voxel_map, frame)
            if view is not None and self.field.add_view(*view):
                added += 1
                due = self._steps_due + self.config.steps_per_view
                cap = _MAX_VIEWS_BEHIND * self.config.steps_per_view  # a slow caller skips steps, never piles them up
                self.counters["steps_skipped"] += max(due - cap, 0)
                self._steps_due = min(due, cap)
            else:
                self.counters["views_without_masks"] += 1
        self.counters["views"] += added
        return added

    def make_view(self, voxel_map: VoxelMap, frame: Frame) -> Optional[tuple]:
        """(voxel indices [P, 3], mask ids [P], stamp_ns) of a frame at the view size, or None without masks."""
        W, H = view_size(frame.intrinsics, self.config.view_width_px)
        ids = self.masks(frame, W, H)
        if ids is None:
            return None
        intrinsics = frame.intrinsics.scaled(W, H)
        hit, points_world = surface_points(voxel_map, intrinsics, frame.T_world_cam)
        return voxel_map.voxel_indices(points_world), ids[hit], frame.stamp_ns

    def masks(self, frame: Frame, width_px: int, height_px: int) -> Optional[np.ndarray]:
        """The frame's masks at width x height after §7.1 preprocessing: [h, w] int32 ids, or None."""
        cfg = self.config
        if frame.instance_masks is not None and cfg.mask_source in ("auto", "frame"):
            ids = resize_ids(frame.instance_masks, width_px, height_px)
        elif cfg.mask_source in ("auto", "geometric"):
            ids = self._geometric_generator().generate(_downsampled(frame, width_px, height_px))
        else:
            return None
        ids = preprocess_masks(ids, cfg.min_mask_area_fraction, cfg.contained_fraction)
        return dilate_ids(ids, cfg.mask_dilation_px) if cfg.mask_dilation_px > 0 else ids

    def _geometric_generator(self):
        if self._geometric is None:
            from semantic_mapping.objects.geometric_masks import GeometricMaskGenerator

            cfg = self.config
            self._geometric = GeometricMaskGenerator(cfg.geometric, cfg.min_mask_area_fraction, cfg.contained_fraction,
                                                     self.label_space)
        return self._geometric

    # ------------------------------------------------------------------ fitting
    @property
    def steps_due(self) -> int:
        return self._steps_due

    def optimise(self, max_steps: Optional[int] = None) -> int:
        """Run the optimisation steps the new views asked for (at most `max_steps`); returns steps run."""
        steps = self._steps_due if max_steps is None else min(self._steps_due, int(max_steps))
        self.field.optimise(steps)
        self._steps_due -= steps
        return steps

    # ------------------------------------------------------------------ objects
    def extract(self, voxel_map: VoxelMap) -> list[MapObject]:
        """Objects of the map now: `extract_from(read_map(voxel_map))`."""
        return self.extract_from(self.read_map(voxel_map))

    def read_map(self, voxel_map: VoxelMap) -> FieldSurface:
        """What extraction needs from the map (the only part to run under its lock): the field first
        takes the map's whole surface (the views hit only part of it), then the field voxels still on
        the surface and their map values are read."""
        field = self.field
        if field.views:
            field.add_voxels(voxel_map.surface_voxel_indices())
        values = voxel_map.voxel_values(unpack_indices(field.keys), with_probs=True)
        # The TSDF is projective (distances along camera rays), so oblique surfaces read farther than a
        # voxel; a field voxel leaves the objects only once the map has it well inside free space or matter.
        near = np.abs(np.nan_to_num(values["sdf_m"], nan=np.inf)) < _SURFACE_TRUNCATION_SHARE * voxel_map.sdf_trunc_m
        rows = np.flatnonzero(near & (values["weight"] > 0))
        return FieldSurface(rows, {k: v[rows] for k, v in values.items()}, voxel_map.voxel_size_m)

    def extract_from(self, surface: FieldSurface) -> list[MapObject]:
        """Objects: connected parts of each slot's voxels on the surface with at least `min_object_voxels`
        voxels. Ids follow the parts of the previous extraction they overlap."""
        field = self.field
        rows, values = surface.rows, surface.values
        if len(rows) == 0:
            self.objects, self._object_keys, self._object_ids = [], np.zeros(0, np.int64), np.zeros(0, np.int64)
            return self.objects
        indices = unpack_indices(field.keys[rows])  # [R, 3]
        votes, views = field.mask_votes()  # [V, N], [V]
        rows_t = torch.from_numpy(rows).to(votes.device)
        votes, views = votes[rows_t], views[rows_t]  # [R, N], [R]
        slot, slot_conf = field.voxel_slots(rows, votes=votes if self.config.mask_votes else None)
        group = slot  # [R] what connected parts split by
        if self.config.unmasked_class_share > 0:
            mask_share = (votes.sum(dim=1) / views.clamp_min(1)).cpu().numpy()  # [R]
            group = _unmasked_by_class(slot, mask_share, self.config.unmasked_class_share, field.num_slots,
                                       values["class_probs"], values["semantic_count"] > 0, self._object_class)
        part = _connected_parts(indices, group)  # [R] part index per voxel
        part = _absorb_small_parts(indices, part, self.config.min_object_voxels)
        keep = np.flatnonzero(part >= 0)  # [K] positions in rows
        if self.config.join_share > 0 and len(keep):
            kind = class_totals = None  # join_across_roles: the masks decide alone
            if not self.config.join_across_roles:
                labelled = values["semantic_count"][keep] > 0
                kind = _part_kinds(part[keep], values["class_probs"][keep], labelled, self._object_class)
                class_totals = _part_class_totals(part[keep], values["class_probs"][keep], labelled)
            part[keep] = _join_parts(part[keep], rows[keep], field, self.config.join_share, kind, class_totals,
                                     self.config.join_class_overlap, self.config.join_seams)
        keys = field.keys[rows[keep]]
        ids = self._stable_ids(keys, part[keep])  # [K] object id per voxel
        objects = []
        for object_id in np.unique(ids):
            at = keep[ids == object_id]
            objects.append(self._describe(int(object_id), indices[at], int(np.bincount(slot[at]).argmax()),
                                          slot_conf[at], {k: v[at] for k, v in values.items()}, surface.voxel_size_m))
        order = np.argsort(keys)
        self._object_keys, self._object_ids = keys[order], ids[order]
        self.objects = objects
        return objects

    def _stable_ids(self, keys: np.ndarray, part: np.ndarray) -> np.ndarray:  # [R] int64 ids
        """Give each part the id of the previous object it overlaps most (one part per id), else a new id."""
        _, part = np.unique(part, return_inverse=True)
        previous = self.object_ids_of_keys(keys)  # [R] 0 = none
        pairs = previous > 0
        overlap = coo_matrix((np.ones(pairs.sum()), (part[pairs], previous[pairs])),
                             shape=(part.max() + 1, max(int(previous.max(initial=0)) + 1, 1))).tocsr()
        overlap.sum_duplicates()
        sizes = np.bincount(part)
        part_id = np.zeros(len(sizes), np.int64)
        coo = overlap.tocoo()
        used = set()
        for k in np.argsort(-coo.data, kind="stable"):
            p, old = int(coo.row[k]), int(coo.col[k])
            if part_id[p] or old in used or coo.data[k] < _MIN_ID_OVERLAP * sizes[p]:
                continue
            part_id[p] = old
            used.add(old)
        for p in np.flatnonzero(part_id == 0):
            part_id[p] = self._next_id
            self._next_id += 1
        return part_id[part]

    def _describe(self, object_id: int, indices: np.ndarray, slot: int, slot_conf: np.ndarray, values: dict,
                  voxel_size_m: float) -> MapObject:
        """One object from its voxels [n, 3] and their map values."""
        points = indices * voxel_size_m  # [n, 3] voxel centres, metres
        labelled = values["semantic_count"] > 0
        class_id, class_conf, class_name = -1, 0.0, ""
        if labelled.any():
            mean_probs = values["class_probs"][labelled].mean(axis=0)
            class_id = int(mean_probs.argmax())
            class_conf = float(mean_probs[class_id])
            class_name = self.label_space.names[class_id]
        centre, quat, size = gravity_aligned_box(points, voxel_size_m)
        field = self.field
        return MapObject(
            id=object_id, slot=slot, class_id=class_id, class_name=class_name, class_confidence=class_conf,
            slot_confidence=float(slot_conf.mean()), centroid_m=points.mean(axis=0), box_center_m=centre,
            box_quat_xyzw=quat, box_size_m=size, voxel_count=len(indices),
            first_seen_ns=int(field.slot_first_seen_ns[slot]), last_seen_ns=int(field.slot_last_seen_ns[slot]),
            observed_fraction=1.0, voxel_indices=indices,
        )

    def state(self) -> tuple[dict, dict]:
        """(meta, arrays) of the last extraction, to save with the map (the field itself is not saved)."""
        meta = {"next_id": self._next_id, "objects": [o.summary() for o in self.objects]}
        return meta, {"objects_keys": self._object_keys, "objects_ids": self._object_ids}

    def load_state(self, meta: dict, arrays: dict) -> None:
        """Objects saved by `state`; the field starts empty and is refitted from new views."""
        self.reset()
        keys = np.asarray(arrays["objects_keys"], np.int64)
        ids = np.asarray(arrays["objects_ids"], np.int64)
        if len(keys) != len(ids) or np.any(np.diff(keys) <= 0):
            raise ValueError("saved objects: keys must be sorted, unique and one per id")
        self._object_keys, self._object_ids = keys, ids
        self._next_id = int(meta.get("next_id", int(ids.max(initial=0)) + 1))
        self.objects = [MapObject.from_summary(o, unpack_indices(keys[ids == o["id"]])) for o in meta.get("objects", [])]

    def object_ids_of_keys(self, keys: np.ndarray) -> np.ndarray:  # [N] int64, 0 = none
        """Object id of packed voxel indices [N] in the last extraction."""
        if len(self._object_keys) == 0:
            return np.zeros(len(keys), np.int64)
        pos = sorted_positions(self._object_keys, keys)
        return np.where(pos >= 0, self._object_ids[np.maximum(pos, 0)], 0)

    def object_ids(self, voxel_coords: np.ndarray) -> np.ndarray:  # [N] int64, 0 = none
        """Object id at positions [N, 3] in voxel units (world metres / voxel size; integer voxel indices
        are voxel centres): the id of the voxel holding the position, else that of the nearest of its
        26 neighbours that is in an object."""
        coords = np.asarray(voxel_coords, np.float64).reshape(-1, 3)
        idx = np.floor(coords + 0.5).astype(np.int64)  # [N, 3] voxel holding each position
        ids = self.object_ids_of_keys(pack_indices(idx))
        missing = np.flatnonzero(ids == 0)
        for chunk in np.array_split(missing, max(1, len(missing) // 65536)):
            candidates = idx[chunk, None, :] + _NEIGHBOUR_STEPS[None]  # [M, 26, 3]
            candidate_ids = self.object_ids_of_keys(pack_indices(candidates.reshape(-1, 3))).reshape(candidates.shape[:2])
            distance = np.where(candidate_ids > 0, ((candidates - coords[chunk, None, :]) ** 2).sum(axis=2), np.inf)
            ids[chunk] = candidate_ids[np.arange(len(chunk)), distance.argmin(axis=1)]  # 0 where no neighbour has one
        return ids

    def render_ids(self, voxel_map: VoxelMap, intrinsics: CameraIntrinsics, T_world_cam: np.ndarray) -> np.ndarray:
        """Object id image [H, W] int32 (0 = none) of the map seen from a camera, from the last extraction:
        each pixel takes the object at its raycast surface point, and gaps between objects up to
        `render_gap_fraction` of the width wide are closed (`close_gaps`)."""
        hit, points_world = surface_points(voxel_map, intrinsics, T_world_cam)
        out = np.zeros(hit.shape, np.int32)
        out[hit] = self.object_ids(points_world / voxel_map.voxel_size_m)
        return close_gaps(out, int(round(self.config.render_gap_fraction * intrinsics.width_px)))


def _connected_parts(indices: np.ndarray, slot: np.ndarray) -> np.ndarray:  # [N] int64
    """Connected components of voxels [N, 3] where 26-neighbours with the same slot [N] are linked."""
    i, j = neighbour_pairs(indices)
    linked = slot[i] == slot[j]
    graph = coo_matrix((np.ones(linked.sum(), np.int8), (i[linked], j[linked])), shape=(len(indices), len(indices)))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _unmasked_by_class(slot: np.ndarray, mask_share: np.ndarray, max_share: float, num_slots: int,
                       class_probs: np.ndarray, labelled: np.ndarray, object_class: np.ndarray) -> np.ndarray:  # [R]
    """Slots [R] with the voxels that masks covered in under `max_share` of the views that see them
    (`mask_share` [R], 0 where no view saw them) and that the semantic map labels (`labelled` [R],
    `class_probs` [R, C]) with an object class (`object_class` [C] bool) moved to a group per class,
    numbered from `num_slots`. An object that no view shows large enough for a mask, or that no view
    saw, is then told from its surroundings by its class."""
    class_id = class_probs.argmax(axis=1)  # [R]
    regroup = (mask_share < max_share) & labelled & object_class[class_id]
    return np.where(regroup, num_slots + class_id, slot)


def _part_kinds(part: np.ndarray, class_probs: np.ndarray, labelled: np.ndarray, object_class: np.ndarray) -> np.ndarray:
    """Kind of each part of voxels `part` [N] (>= 0), [max(part) + 1] int64: 1 where at least half of
    its labelled voxels (`labelled` [N] bool, `class_probs` [N, C]) take an object class
    (`object_class` [C] bool), 0 where fewer do (floor and structure), -1 without labelled voxels."""
    n = int(part.max()) + 1
    is_object = object_class[class_probs.argmax(axis=1)] & labelled  # [N]
    objects = np.bincount(part, weights=is_object, minlength=n)  # [n]
    labelled_count = np.bincount(part, weights=labelled, minlength=n)  # [n]
    return np.where(labelled_count > 0, (objects >= 0.5 * labelled_count).astype(np.int64), -1)


def _part_class_totals(part: np.ndarray, class_probs: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Summed class distributions [max(part) + 1, C] of the labelled voxels (`labelled` [N] bool,
    `class_probs` [N, C]) of each part of `part` [N] (>= 0): a row sums to the part's labelled voxels,
    and divided by that it is their mean distribution; zeros for a part without labels."""
    n = int(part.max()) + 1
    owner = part[labelled]  # [L]
    to_part = coo_matrix((np.ones(len(owner)), (owner, np.arange(len(owner)))), shape=(n, len(owner))).tocsr()
    return to_part @ class_probs[labelled].astype(np.float64)  # [n, C]


def _view_coverage(units, field: SlotField, min_pixels: float):
    """Per kept view of the field, (seen [S] bool, covered [K, S] bool) of S voxel sets (`units`
    [S, V] sparse 0/1 over field rows): a set is seen with `min_pixels` of the view's pixels on it,
    and covered by mask k when that mask holds `_JOIN_COVER_SHARE` of them."""
    for view in field.views:
        on_view = units[:, view.rows.cpu().numpy()]  # [S, U]
        visible = on_view @ view.pixel_counts.cpu().numpy()  # [S] pixels per set
        mask_on_set = (on_view @ view.mask_counts.cpu().numpy().T).T  # [K, S] pixels of mask k on the set
        seen = visible >= min_pixels
        yield seen, seen[None] & (mask_on_set >= _JOIN_COVER_SHARE * np.maximum(visible, 1)[None])


def _join_parts(part: np.ndarray, rows: np.ndarray, field: SlotField, min_share: float,
                kind: Optional[np.ndarray] = None, class_totals: Optional[np.ndarray] = None,
                min_class_overlap: float = 0.0, seams: bool = False) -> np.ndarray:
    """Parts [N] (>= 0) of field rows `rows` [N] joined where one mask covers both parts of a pair in at
    least `min_share` of the field's kept views that see both and mask either: the masks treat them as
    one object, so a seam between two slots that no view confirms goes, and so does a gap between
    pieces of one object that occlusion or an unseen edge left apart. A view that masks neither part
    says nothing about the pair (its masks were dropped as too small, or it missed the object). With
    `seams`, two touching parts are also joined when the same holds for their voxels along the seam
    (each part's voxels next to the other): a floor that views cut apart with the furniture on it is
    one mask across the seam even where no mask covers half of either part. With `kind` [n]
    (`_part_kinds`), an object part never ends in one object with a floor or structure part; with
    `class_totals` [n, C] (`_part_class_totals`) too, two groups of labelled parts join only when
    their mean class distributions overlap (sum of the minimum) by at least `min_class_overlap`. Joins
    are made best backed first (`_merge_parts`)."""
    n = int(part.max()) + 1
    whole = coo_matrix((np.ones(len(part)), (part, rows)), shape=(n, field.num_voxels)).tocsr()  # [n, V]
    seen, masked, codes = [], [], []  # per view: [n] parts seen, [n] parts masked, codes a * n + b of pairs one mask covers
    for seen_here, covered in _view_coverage(whole, field, _JOIN_MIN_PIXELS):
        seen.append(seen_here)
        masked.append(covered.any(axis=0))
        codes.append(np.unique(np.asarray([a * n + b for mask in covered
                                           for a, b in itertools.combinations(np.flatnonzero(mask), 2)], np.int64)))
    pairs, together = np.unique(np.concatenate(codes or [np.zeros(0, np.int64)]), return_counts=True)  # [T], [T] views
    a, b = pairs // n, pairs % n
    seen, masked = np.asarray(seen, bool).reshape(-1, n), np.asarray(masked, bool).reshape(-1, n)  # [views, n]
    asked = (seen[:, a] & seen[:, b] & (masked[:, a] | masked[:, b])).sum(axis=0)  # [T] views that see both and mask either
    if seams:
        seam_a, seam_b, units = _seam_units(unpack_indices(field.keys[rows]), part, rows, field.num_voxels)
        side_a, side_b = 2 * np.arange(len(seam_a)), 2 * np.arange(len(seam_a)) + 1  # units of each seam's two sides
        seam_together, seam_asked = np.zeros(len(seam_a), np.int64), np.zeros(len(seam_a), np.int64)
        for seen_here, covered in _view_coverage(units, field, _SEAM_MIN_PIXELS):
            masked_here = covered.any(axis=0)
            seam_together += (covered[:, side_a] & covered[:, side_b]).any(axis=0)
            seam_asked += seen_here[side_a] & seen_here[side_b] & (masked_here[side_a] | masked_here[side_b])
        a, b = np.concatenate([a, seam_a]), np.concatenate([b, seam_b])
        together, asked = np.concatenate([together, seam_together]), np.concatenate([asked, seam_asked])
    join = (asked > 0) & (together >= min_share * asked)
    score = together / np.maximum(asked, 1)  # [T] share of the asking views that back the join
    return _merge_parts(n, a[join], b[join], score[join], kind, class_totals, min_class_overlap)[part]


def _merge_parts(n: int, a: np.ndarray, b: np.ndarray, score: np.ndarray, kind: Optional[np.ndarray],
                 class_totals: Optional[np.ndarray], min_class_overlap: float) -> np.ndarray:  # [n] int64 group
    """Groups of n parts from the joins (`a` [T], `b` [T]), the best backed (`score` [T]) first. With
    `kind` [n], a join that would put an object part and a floor or structure part in one group is
    skipped, whatever parts of unknown kind lie between them; with `class_totals` [n, C] too, two
    labelled groups join only when their mean class distributions overlap by `min_class_overlap`
    (a chair and its table, or a wall and the floor, stay apart)."""
    parent = np.arange(n)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    group_kind = None if kind is None else kind.copy()  # [n] kind of the group each root stands for
    totals = None if class_totals is None else class_totals.astype(np.float64)  # [n, C] per root
    for t in np.argsort(-score, kind="stable"):
        ra, rb = root(int(a[t])), root(int(b[t]))
        if ra == rb:
            continue
        if group_kind is not None:
            ka, kb = group_kind[ra], group_kind[rb]
            if ka >= 0 and kb >= 0 and ka != kb:
                continue
            if totals is not None and ka >= 0 and kb >= 0:
                mean_a = totals[ra] / max(totals[ra].sum(), 1e-9)
                mean_b = totals[rb] / max(totals[rb].sum(), 1e-9)
                if np.minimum(mean_a, mean_b).sum() < min_class_overlap:
                    continue
            group_kind[ra] = max(ka, kb)  # the known kind when one is unknown (-1)
            if totals is not None:
                totals[ra] += totals[rb]
        parent[rb] = ra
    return np.array([root(x) for x in range(n)], np.int64)


def _seam_units(indices: np.ndarray, part: np.ndarray, rows: np.ndarray, num_rows: int) -> tuple:
    """Seams between the parts `part` [N] of voxels `indices` [N, 3] (field rows `rows` [N]):
    (a [T], b [T]) pairs of 26-neighbouring parts, a < b, and units [2T, num_rows] sparse 0/1 whose row
    2t holds the voxels of a next to b and row 2t + 1 those of b next to a."""
    i, j = neighbour_pairs(indices)
    cross = part[i] != part[j]
    i, j = i[cross], j[cross]
    low = np.where(part[i] < part[j], i, j)  # [E] the voxel of the lower part of each pair
    high = np.where(part[i] < part[j], j, i)
    n = int(part.max()) + 1
    codes, pair = np.unique(part[low] * n + part[high], return_inverse=True)  # [T], [E]
    units = coo_matrix((np.ones(2 * len(pair)), (np.concatenate([2 * pair, 2 * pair + 1]), rows[np.concatenate([low, high])])),
                       shape=(2 * len(codes), num_rows)).tocsr()
    units.data[:] = 1.0  # a voxel next to several voxels of the other part counts once
    return codes // n, codes % n, units


def _absorb_small_parts(indices: np.ndarray, part: np.ndarray, min_voxels: int, sweeps: int = 3) -> np.ndarray:
    """Parts [N] with fewer than `min_voxels` voxels hand their voxels to the most common large part
    among each voxel's 26 neighbours (a few sweeps, so speckles and seams fill in); voxels that no
    large part reaches get -1."""
    part = np.where(np.bincount(part)[part] >= min_voxels, part, -1)
    keys = pack_indices(indices)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    for _ in range(sweeps):
        todo = np.flatnonzero(part < 0)
        if len(todo) == 0:
            break
        votes = np.full((len(todo), len(_NEIGHBOUR_STEPS)), -1, np.int64)  # [T, 26] neighbours' parts
        for k, step in enumerate(_NEIGHBOUR_STEPS):
            pos = sorted_positions(sorted_keys, pack_indices(indices[todo] + step))
            votes[:, k] = np.where(pos >= 0, part[order[np.maximum(pos, 0)]], -1)
        row, cand = np.nonzero(votes >= 0)
        if len(row) == 0:
            break
        pairs, counts = np.unique(np.stack([row, votes[row, cand]], 1), axis=0, return_counts=True)
        best = np.lexsort((-counts, pairs[:, 0]))  # per row, the most voted part first
        first = best[np.r_[True, pairs[best[1:], 0] != pairs[best[:-1], 0]]]
        part[todo[pairs[first, 0]]] = pairs[first, 1]
    return part


def gravity_aligned_box(points_m: np.ndarray, voxel_size_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Oriented box of points [n, 3] with z up: (centre [3] m, quaternion x y z w [4], full size [3] m).

    The box's x axis is the principal direction of the points in the floor plane; voxel extents are
    included (each point is a voxel centre)."""
    xy = points_m[:, :2] - points_m[:, :2].mean(axis=0)
    if len(points_m) >= 2:
        _, vectors = np.linalg.eigh(xy.T @ xy)
        axis = vectors[:, -1] * (1.0 if vectors[0, -1] >= 0 else -1.0)  # yaw in [-90, 90] degrees
    else:
        axis = np.array([1.0, 0.0])
    yaw = float(np.arctan2(axis[1], axis[0]))
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # box axes in the world
    local = points_m @ R  # [n, 3] coordinates along the box axes
    lo, hi = local.min(axis=0), local.max(axis=0)
    centre = R @ ((lo + hi) / 2.0)
    quat = np.array([0.0, 0.0, np.sin(yaw / 2.0), np.cos(yaw / 2.0)])
    return centre, quat, (hi - lo) + voxel_size_m


def _downsampled(frame: Frame, width_px: int, height_px: int) -> Frame:
    """The frame's image and depth at width x height (depth nearest), with its semantics as they are
    (the mask generator brings labels or probabilities to the depth's size itself)."""
    if (width_px, height_px) == (frame.width_px, frame.height_px):
        return frame
    size = (width_px, height_px)
    return Frame(
        rgb=cv2.resize(frame.rgb, size, interpolation=cv2.INTER_AREA),
        depth_m=cv2.resize(frame.depth_m, size, interpolation=cv2.INTER_NEAREST),
        intrinsics=frame.intrinsics.scaled(width_px, height_px),
        T_world_cam=frame.T_world_cam,
        stamp_ns=frame.stamp_ns,
        labels=frame.labels,
        class_probs=frame.class_probs,
    )
