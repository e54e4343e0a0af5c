"""Object-slot field (DiscoNeRF §3) over the voxel map.

Each surface voxel a view has seen holds a learnable feature h (§3.2); a small MLP decodes it to N
competing object slots with a softmax, o(x). A view's slot images O_n are the slot probabilities of
the voxels its pixels hit (the map raycast at the view). Per view, the affinity of every mask M_m
with every slot image is the soft IoU Σ min / Σ max (Eq. 4); the Hungarian matching γ over it
(computed without gradients) gives the matching loss (Eq. 5) and the false-positive loss (Eq. 6);
total variation over neighbouring voxel features (Eq. 7) regularises the field.
N = max(min_slots, 2 x the most masks seen in one view) and grows when a view brings more masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from semantic_mapping.config import ObjectsConfig
from semantic_mapping.fusion.voxel_map import pack_indices, sorted_positions, unpack_indices

_FACE_STEPS = np.eye(3, dtype=np.int64)  # +x, +y, +z neighbours for the TV pairs
_INIT_FEATURE_STD = 0.5  # spread of the features of voxels with no known neighbour
_MATCH_MIN_AFFINITY = 0.3  # a slot counts as seen in a view when its matched mask has this affinity
_FIELD_PRIOR_VIEWS = 1.0  # extraction with mask votes counts the field's slot probabilities as this many views
_TV_PAIRS_PER_STEP = 32768  # neighbour pairs per level in one step's L_TV (an unbiased sample of the mean)


@dataclass
class ObjectView:
    """One view's masks, gathered per voxel: the pixels that hit the same voxel share its slot
    probabilities, so the losses only need each voxel's pixel count and per-mask pixel counts."""

    rows: torch.Tensor  # [U] int64 distinct field rows the view's pixels hit
    pixel_counts: torch.Tensor  # [U] float32 pixels per row
    mask_counts: torch.Tensor  # [K, U] float32 pixels of mask m on row u
    stamp_ns: int


def soft_iou_affinity(mask_counts: torch.Tensor, slot_probs: torch.Tensor,
                      pixel_counts: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Eq. 4: α[m, n] = Σ_p min(O_n, M_m) / Σ_p max(O_n, M_m) for binary masks and slot images [U, N]
    whose rows each stand for `pixel_counts` [U] pixels (default 1); mask_counts [K, U] holds the
    pixels of mask m among them."""
    counts = torch.ones(slot_probs.shape[0], device=slot_probs.device) if pixel_counts is None else pixel_counts
    inter = mask_counts @ slot_probs  # [K, N] Σ M·O = Σ min for binary M
    union = mask_counts.sum(1, keepdim=True) + (counts @ slot_probs)[None, :] - inter  # Σ max = M + O - M·O
    return inter / union.clamp_min(1e-9)


def match_masks(affinity: np.ndarray, method: str = "hungarian") -> np.ndarray:
    """Slot of each mask [K] int64 from the affinity [K, N]: the Hungarian matching (one slot per mask)
    or, for the ablation, each mask's best slot independently ('argmax')."""
    if method == "hungarian":
        masks_idx, slots = linear_sum_assignment(affinity, maximize=True)
        out = np.empty(affinity.shape[0], np.int64)
        out[masks_idx] = slots
        return out
    if method == "argmax":
        return affinity.argmax(axis=1)
    raise ValueError(f"objects.matching must be 'hungarian' or 'argmax', got {method!r}")


def slot_losses(mask_counts: torch.Tensor, slot_probs: torch.Tensor, slot_of_mask: torch.Tensor,
                pixel_counts: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5 and 6, averaged over masks and pixels: (L_γ, L_FP) for masks [K, U] (pixel counts as in
    `soft_iou_affinity`), slot images [U, N] and the matching [K]."""
    counts = torch.ones(slot_probs.shape[0], device=slot_probs.device) if pixel_counts is None else pixel_counts
    matched = slot_probs.index_select(1, slot_of_mask).T  # [K, U] O_γ(m)
    # Σ_p (M - O)^2 = Σ_u (A - 2 A O + c O^2) for binary M, A pixels of the mask and c pixels of the row
    loss_match = (mask_counts - 2.0 * mask_counts * matched + counts[None, :] * matched**2).sum(1)
    # Σ_p Σ_{n≠γ(m)} (M O_n)^2 = Σ_u A (Σ_n O_n^2 - O_γ^2)
    others = (slot_probs**2).sum(dim=1)[None, :] - matched**2  # [K, U]
    loss_fp = (mask_counts * others).sum(1)
    pixels = counts.sum()
    return loss_match.mean() / pixels, loss_fp.mean() / pixels


class _FeatureTable:
    """Learnable features of the cells of one resolution level, keyed by packed cell indices."""

    def __init__(self, dim: int, device: torch.device):
        self.keys = np.zeros(0, np.int64)  # [V] packed cell indices, row order
        self.sorted = np.zeros(0, np.int64)  # [V] rows ordered by key, for lookups
        self.features = torch.zeros(0, dim, device=device, requires_grad=True)  # [V, F]
        self.tv_pairs = torch.zeros(0, 2, dtype=torch.int64, device=device)  # [E, 2] rows of face neighbours

    def find(self, keys: np.ndarray) -> np.ndarray:  # [N] int64 rows, -1 = none
        if len(self.keys) == 0:
            return np.full(len(keys), -1, np.int64)
        pos = sorted_positions(self.keys[self.sorted], keys)
        return np.where(pos >= 0, self.sorted[np.maximum(pos, 0)], -1)

    def add(self, cells: np.ndarray, std: float, gen: torch.Generator) -> Optional[tuple]:
        """Add the cells [N, 3] not yet in the table. A new cell starts from the mean feature of its face
        neighbours already in the table (so known objects extend), else at random with `std`.
        Returns (old parameter, new parameter) when the table grew, else None."""
        keys = pack_indices(cells)
        new_keys, first = np.unique(keys[self.find(keys) < 0], return_index=True)
        if len(new_keys) == 0:
            return None
        new_cells = cells[self.find(keys) < 0][first]
        F = self.features.shape[1]
        init = torch.randn(len(new_keys), F, generator=gen) * std
        known_sum, known_count = torch.zeros(len(new_keys), F), torch.zeros(len(new_keys), 1)
        with torch.no_grad():
            for step in np.concatenate([_FACE_STEPS, -_FACE_STEPS]):
                nb = self.find(pack_indices(new_cells + step))
                hit = nb >= 0
                known_sum[hit] += self.features[torch.from_numpy(nb[hit])].cpu()
                known_count[hit] += 1
        init = torch.where(known_count > 0, known_sum / known_count.clamp_min(1), init)
        old = self.features
        self.features = torch.cat([old.detach(), init.to(old.device)]).requires_grad_(True)
        self.keys = np.concatenate([self.keys, new_keys])
        self.sorted = np.argsort(self.keys, kind="stable")
        all_cells = unpack_indices(self.keys)
        pairs = []
        for step in _FACE_STEPS:
            nb = self.find(pack_indices(all_cells + step))
            pairs.append(np.stack([np.flatnonzero(nb >= 0), nb[nb >= 0]], 1))
        self.tv_pairs = torch.from_numpy(np.concatenate(pairs)).to(old.device)
        return old, self.features

    def tv(self, gen: torch.Generator) -> torch.Tensor:
        """Eq. 7 over this level, averaged over neighbour pairs (a random subset of them when many)."""
        if len(self.tv_pairs) == 0:
            return torch.zeros((), device=self.features.device)
        pairs = self.tv_pairs
        if len(pairs) > _TV_PAIRS_PER_STEP:
            pairs = pairs[torch.randint(len(pairs), (_TV_PAIRS_PER_STEP,), generator=gen).to(pairs.device)]
        a, b = (self.features.index_select(0, pairs[:, k].contiguous()) for k in (0, 1))  # [E, F] each
        return ((a - b) ** 2).sum(dim=1).mean()


class SlotField:
    """Multi-resolution voxel features + slot decoder, fitted to the masks of the views it is given.

    A voxel's feature is the sum of the features of the cells holding it at `feature_levels`
    resolutions (1, 2, 4, ... voxels per cell edge): coarse cells share a feature among neighbouring
    voxels, as the hash grid of DiscoNeRF §3.2 does, fine cells add detail."""

    def __init__(self, config: ObjectsConfig, device: torch.device | str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self._rng = np.random.default_rng(config.seed)
        self._gen = torch.Generator().manual_seed(config.seed)
        F, Hd = config.feature_dim, config.hidden_dim
        self.levels = [_FeatureTable(F, self.device) for _ in range(max(1, config.feature_levels))]
        self.keys = np.zeros(0, np.int64)  # [V] packed voxel indices of the field's voxels, row order
        self._level_rows = np.zeros((0, len(self.levels)), np.int64)  # [V, L] row of each voxel's cell per level
        self.hidden = torch.nn.Linear(F, Hd).to(self.device)
        self.head = torch.nn.Linear(Hd, config.min_slots).to(self.device)
        with torch.no_grad():
            for layer in (self.hidden, self.head):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=self._gen) * (1.0 / np.sqrt(layer.in_features)))
                layer.bias.zero_()
        self._optimizer = torch.optim.Adam(
            [t.features for t in self.levels] + [*self.hidden.parameters(), *self.head.parameters()],
            lr=config.learning_rate)
        self.views: list[ObjectView] = []
        self.slot_first_seen_ns = np.full(config.min_slots, -1, np.int64)  # [N] stamps, -1 = never matched
        self.slot_last_seen_ns = np.full(config.min_slots, -1, np.int64)
        self.steps = 0
        self.last_losses: dict = {}

    @property
    def num_slots(self) -> int:
        return self.head.out_features

    @property
    def num_voxels(self) -> int:
        return len(self.keys)

    # ------------------------------------------------------------------ rows
    def rows_of(self, voxel_indices: np.ndarray) -> np.ndarray:  # [N] int64, -1 = none
        """Field rows of integer voxel indices [N, 3]."""
        return self.levels[0].find(pack_indices(np.asarray(voxel_indices, np.int64).reshape(-1, 3)))

    def add_voxels(self, voxel_indices: np.ndarray) -> np.ndarray:  # [N] int64 rows
        """Rows of voxels [N, 3], adding those not yet in the field."""
        idx = np.asarray(voxel_indices, np.int64).reshape(-1, 3)
        std = _INIT_FEATURE_STD / np.sqrt(len(self.levels))
        for level, table in enumerate(self.levels):
            grown = table.add(idx >> level, std, self._gen)
            if grown is not None:
                self._swap_parameter(*grown)
        # Rows are only ever appended, so only the new voxels need their cells looked up.
        new_keys = self.levels[0].keys[len(self.keys):]
        new_cells = unpack_indices(new_keys)
        new_rows = np.stack([t.find(pack_indices(new_cells >> level)) for level, t in enumerate(self.levels)], 1)
        self.keys = self.levels[0].keys
        self._level_rows = np.concatenate([self._level_rows, new_rows])
        return self.rows_of(idx)

    def voxel_features(self, rows: torch.Tensor) -> torch.Tensor:  # [P, F]
        """Feature of field rows [P]: the sum over levels of their cells' features. Gathered with
        index_select: its backward sums repeated rows in a fixed order, where indexing's backward
        (index_put_ with accumulate) on several CPU threads gives run-to-run different sums."""
        level_rows = torch.from_numpy(self._level_rows).to(self.device)[rows]  # [P, L]
        return sum(t.features.index_select(0, level_rows[:, level].contiguous()) for level, t in enumerate(self.levels))

    def _grow_slots(self, num_slots: int) -> None:
        """More output slots; existing slots keep their probabilities' ranking, new ones start unlikely."""
        old_w, old_b = self.head.weight, self.head.bias
        extra = num_slots - self.num_slots
        head = torch.nn.Linear(self.head.in_features, num_slots).to(self.device)
        with torch.no_grad():
            head.weight.copy_(torch.cat([old_w, torch.randn(extra, old_w.shape[1], generator=self._gen).to(self.device)
                                         * (1.0 / np.sqrt(old_w.shape[1]))]))
            head.bias.copy_(torch.cat([old_b, torch.full((extra,), float(old_b.mean()), device=self.device)]))
        self._swap_parameter(old_w, head.weight)
        self._swap_parameter(old_b, head.bias)
        self.head = head
        pad = np.full(extra, -1, np.int64)
        self.slot_first_seen_ns = np.concatenate([self.slot_first_seen_ns, pad])
        self.slot_last_seen_ns = np.concatenate([self.slot_last_seen_ns, pad])

    def _swap_parameter(self, old: torch.Tensor, new: torch.Tensor) -> None:
        """Put `new` in the optimiser in place of `old`, keeping Adam's moments (zero for the new rows)."""
        group = self._optimizer.param_groups[0]
        position = next(i for i, p in enumerate(group["params"]) if p is old)
        group["params"][position] = new
        state = self._optimizer.state.pop(old, None)
        if state:
            grown = {}
            for name, value in state.items():
                if torch.is_tensor(value) and value.shape == old.shape:
                    value = torch.cat([value, torch.zeros((new.shape[0] - old.shape[0], *old.shape[1:]),
                                                          dtype=value.dtype, device=value.device)])
                grown[name] = value
            self._optimizer.state[new] = grown

    # ------------------------------------------------------------------ views
    def add_view(self, voxel_indices: np.ndarray, mask_ids: np.ndarray, stamp_ns: int) -> bool:
        """A view: the voxels [P, 3] its surface pixels hit and their mask ids [P] (0 = no mask).
        Returns False (and keeps nothing) when no mask covers a pixel."""
        ids = np.asarray(mask_ids).reshape(-1)
        present = np.unique(ids[ids > 0])
        if len(present) == 0:
            return False
        if 2 * len(present) > self.num_slots:
            self._grow_slots(2 * len(present))
        rows = self.add_voxels(voxel_indices)
        unique_rows, inverse = np.unique(rows, return_inverse=True)
        mask_index = np.searchsorted(present, ids)  # [P] position of each pixel's mask (meaningless where 0)
        mask_counts = np.zeros((len(present), len(unique_rows)), np.float32)
        np.add.at(mask_counts, (mask_index[ids > 0], inverse[ids > 0]), 1.0)
        self.views.append(ObjectView(
            rows=torch.from_numpy(unique_rows).to(self.device),
            pixel_counts=torch.from_numpy(np.bincount(inverse).astype(np.float32)).to(self.device),
            mask_counts=torch.from_numpy(mask_counts).to(self.device), stamp_ns=int(stamp_ns)))
        if len(self.views) > self.config.max_views:
            self.views.pop(0)
        return True

    # ------------------------------------------------------------------ fitting
    def slot_probabilities(self, rows: torch.Tensor) -> torch.Tensor:  # [P, N]
        """o(x) of field rows [P]: softmax over slots of the decoded features."""
        return torch.softmax(self.head(torch.relu(self.hidden(self.voxel_features(rows)))), dim=1)

    def optimise(self, steps: int) -> None:
        """`steps` Adam steps, each over the newest view and `batch_views - 1` random older ones."""
        cfg = self.config
        if not self.views:
            return
        for _ in range(steps):
            n = len(self.views)
            others = self._rng.permutation(n - 1)[: cfg.batch_views - 1] if n > 1 else np.zeros(0, np.int64)
            batch = [self.views[-1]] + [self.views[i] for i in others]
            loss_match = loss_fp = torch.zeros((), device=self.device)
            for view in batch:
                probs = self.slot_probabilities(view.rows)  # [U, N]
                with torch.no_grad():
                    affinity = soft_iou_affinity(view.mask_counts, probs, view.pixel_counts).cpu().numpy()  # [K, N]
                slot_of_mask = match_masks(affinity, cfg.matching)
                self._record_seen(slot_of_mask, affinity, view.stamp_ns)
                lm, lf = slot_losses(view.mask_counts, probs, torch.from_numpy(slot_of_mask).to(self.device),
                                     view.pixel_counts)
                loss_match = loss_match + lm / len(batch)
                loss_fp = loss_fp + lf / len(batch)
            loss = loss_match + cfg.lambda_fp * loss_fp
            loss_tv = torch.zeros((), device=self.device)
            if cfg.lambda_tv > 0:
                loss_tv = sum(t.tv(self._gen) for t in self.levels)
                loss = loss + cfg.lambda_tv * loss_tv
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._optimizer.step()
            self.steps += 1
            self.last_losses = {"match": loss_match.item(), "fp": loss_fp.item(), "tv": loss_tv.item()}

    def _record_seen(self, slot_of_mask: np.ndarray, affinity: np.ndarray, stamp_ns: int) -> None:
        good = slot_of_mask[affinity[np.arange(len(slot_of_mask)), slot_of_mask] >= _MATCH_MIN_AFFINITY]
        first = self.slot_first_seen_ns[good]
        self.slot_first_seen_ns[good] = np.where(first < 0, stamp_ns, np.minimum(first, stamp_ns))
        self.slot_last_seen_ns[good] = np.maximum(self.slot_last_seen_ns[good], stamp_ns)

    @torch.no_grad()
    def mask_votes(self) -> tuple[torch.Tensor, torch.Tensor]:  # [V, N], [V] float32
        """(votes, views): per voxel and slot, the views whose masks put the voxel in that slot, and per
        voxel, the kept views that see it. Every kept view is matched again (Eq. 4 affinity, Hungarian)
        to the fitted field, so all views vote in the same slot numbering; a view's vote is the share of
        the voxel's pixels in each matched mask."""
        votes = torch.zeros(self.num_voxels, self.num_slots, device=self.device)
        views = torch.zeros(self.num_voxels, device=self.device)
        for view in self.views:
            probs = self.slot_probabilities(view.rows)  # [U, N]
            affinity = soft_iou_affinity(view.mask_counts, probs, view.pixel_counts).cpu().numpy()  # [K, N]
            slot_of_mask = torch.from_numpy(match_masks(affinity, self.config.matching)).to(self.device)  # [K]
            view_votes = torch.zeros(len(view.rows), self.num_slots, device=self.device)  # [U, N]
            view_votes.index_add_(1, slot_of_mask, view.mask_counts.T / view.pixel_counts[:, None])
            votes.index_add_(0, view.rows, view_votes)
            views[view.rows] += 1
        return votes, views

    @torch.no_grad()
    def voxel_slots(self, rows: Optional[np.ndarray] = None, votes: Optional[torch.Tensor] = None) -> tuple[np.ndarray, np.ndarray]:
        """(slot [R] int64, max slot probability [R] float32) of field rows (default: all). The slot is
        the field's most likely one; given the rows' `votes` [R, N] (from `mask_votes`), it is the slot
        most views' masks put the voxel in, with the field's probabilities counted as one more view
        (they settle ties and voxels few masks cover)."""
        rows_t = torch.arange(self.num_voxels, device=self.device) if rows is None else torch.from_numpy(np.asarray(rows, np.int64)).to(self.device)
        if len(rows_t) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        probs = torch.cat([self.slot_probabilities(chunk) for chunk in rows_t.split(65536)])  # [R, N]
        conf, slot = probs.max(dim=1)
        if votes is not None:
            slot = (votes.to(self.device) + _FIELD_PRIOR_VIEWS * probs).argmax(dim=1)
        return slot.cpu().numpy(), conf.cpu().numpy()
