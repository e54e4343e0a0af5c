"""Learned soft voting (GNeSF §3.2.2, Eq. 3-4) over the keyframes that see a point.

For a point x seen by N keyframes, each view i gives sampled image features F_i(x) [d] and class
probabilities S_i(x) [C]. F'_i = f_view([F_i, mean_j F_j, var_j F_j]); the voting weight is
v_i = f_vote([F'_i, f_geo(M(x)), Δd_i, cues_i]) with M(x) the local TSDF geometry, Δd_i = x - o_i
and cues_i what the view makes of the point (distance, viewing angle, distance to the image
border, the entropy and peak of S_i and its agreement with the other views). The point's
semantics are s(x) = Σ_i softmax(v)_i S_i(x) (Eq. 4, over probabilities), or, for the ablation of
GNeSF Table 4, the softmax of the weighted log-probabilities ("logits").

Our addition to GNeSF: a geometry prior π(c | n(x), h(x)), the class distribution of a surface
given its unit normal (turned towards the observing camera) in the gravity-aligned world frame and
its height above the floor (floors face up at 0 m, table tops up at desk height, walls sideways,
ceilings down at room height), learned from the same 2D supervision. Eq. 4 can only reweigh views,
so it cannot fix a voxel that most views mislabel (a floor strip that every view near the wall
calls wall); the prior can.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from semantic_mapping.semantics.bayesian import LOGIT_EPS
from semantic_mapping.semantics.keyframes import sample_pairs

GEOMETRY_DIM = 11
"""M(x): TSDF at x and at x ± one voxel along each axis (7, truncation units), log weight, normal (3)."""
CUE_DIM = 9
"""Per-view cues: distance (m), Δd / distance (3), cos of the viewing angle, border distance,
entropy / log C and peak of S_i, agreement of S_i with the views' mean."""
VOTE_SPACES = ("probabilities", "logits")
_LOG_EPS = 1e-6


def _mlp(sizes: list) -> nn.Sequential:
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(4, cout), nn.ReLU(inplace=True))


class ImageEncoder(nn.Module):
    """A two-level U-Net for CPU: rgb [B, 3, h, w] in [0, 1] -> features [B, d, h, w]."""

    def __init__(self, feature_dim: int = 16, width: int = 16):
        super().__init__()
        self.down1 = nn.Sequential(_conv(3, width), _conv(width, width))
        self.down2 = nn.Sequential(_conv(width, 2 * width, stride=2), _conv(2 * width, 2 * width))
        self.up = nn.Sequential(_conv(3 * width, width), nn.Conv2d(width, feature_dim, 1))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        skip = self.down1(rgb)  # [B, w, h, w]
        deep = self.down2(skip)  # [B, 2w, h/2, w/2]
        deep = F.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.up(torch.cat([skip, deep], dim=1))  # [B, d, h, w]


def sample_maps(maps: torch.Tensor, view_index: torch.Tensor, pixel_uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of per-view maps [K, ch, h, w] at (view, pixel) pairs: [P, N, ch].

    view_index [P, N] (-1 = none: zeros), pixel_uv [P, N, 2] as `keyframes.sample_views` gives
    them. Differentiable with respect to `maps`.
    """
    p, n = (view_index >= 0).nonzero(as_tuple=True)
    out = maps.new_zeros((*view_index.shape, maps.shape[1]))  # [P, N, ch]
    out[p, n] = sample_pairs(maps, view_index[p, n], pixel_uv[p, n])
    return out


def view_cues(
    probs: torch.Tensor,  # [P, N, C]
    valid: torch.Tensor,  # [P, N] bool
    displacement_m: torch.Tensor,  # [P, N, 3] x - o_i, world frame
    pixel_uv: torch.Tensor,  # [P, N, 2]
    normal: torch.Tensor,  # [P, 3] unit surface normal (towards free space), world frame
    image_wh: tuple,
) -> torch.Tensor:  # [P, N, CUE_DIM]
    """What each view makes of the point (see CUE_DIM)."""
    C = probs.shape[-1]
    w, h = image_wh
    dist = displacement_m.norm(dim=-1, keepdim=True).clamp(min=1e-6)  # [P, N, 1]
    direction = displacement_m / dist
    cos_view = -(direction * normal[:, None]).sum(-1, keepdim=True)  # [P, N, 1] 1 = head-on
    u, v = pixel_uv[..., :1], pixel_uv[..., 1:]
    border = torch.minimum(torch.minimum(u + 0.5, w - 0.5 - u), torch.minimum(v + 0.5, h - 0.5 - v))
    border = (border / (0.5 * min(w, h))).clamp(0, 1)  # [P, N, 1]
    entropy = -(probs * torch.log(probs + _LOG_EPS)).sum(-1, keepdim=True) / math.log(C)
    peak = probs.max(-1, keepdim=True).values
    mask = valid.unsqueeze(-1).float()
    mean = (probs * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)  # [P, 1, C]
    agreement = (probs * mean).sum(-1, keepdim=True)
    return torch.cat([dist, direction, cos_view, border, entropy, peak, agreement], dim=-1) * mask


class VotingNet(nn.Module):
    """Voting weights from features, geometry, displacement and cues; s(x) by Eq. 4."""

    def __init__(self, num_classes: int, feature_dim: int = 16, hidden_dim: int = 32, vote_space: str = "probabilities"):
        super().__init__()
        if vote_space not in VOTE_SPACES:
            raise ValueError(f"vote_space must be one of {VOTE_SPACES}, got {vote_space!r}")
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.vote_space = vote_space
        self.encoder = ImageEncoder(feature_dim)
        self.view_mlp = _mlp([3 * feature_dim, hidden_dim, hidden_dim])
        self.geometry_mlp = _mlp([GEOMETRY_DIM, hidden_dim, hidden_dim])
        self.vote_mlp = _mlp([2 * hidden_dim + 3 + CUE_DIM, hidden_dim, hidden_dim, 1])
        self.prior_mlp = _mlp([4, hidden_dim, hidden_dim, num_classes])

    def prior_logits(self, normal: torch.Tensor, height_m: torch.Tensor) -> torch.Tensor:  # [P, C]
        """Unnormalised log π(c | n, h) of unit surface normals [P, 3] (world frame, z up, turned towards
        the observing camera) at heights above the floor [P] (metres)."""
        return self.prior_mlp(torch.cat([normal, height_m.unsqueeze(-1)], dim=-1))

    def observation_log_prior(self, normal: torch.Tensor, height_m: torch.Tensor, floor: float) -> torch.Tensor:  # [P, C]
        """log π(c | n, h) with π raised to at least `floor` and renormalised, as observations are
        floored, so that no surface can rule a class out."""
        prior = torch.softmax(self.prior_logits(normal, height_m), dim=-1).clamp(min=floor)
        return torch.log(prior / prior.sum(-1, keepdim=True))

    def vote_logits(
        self,
        features: torch.Tensor,  # [P, N, d]
        valid: torch.Tensor,  # [P, N] bool
        displacement_m: torch.Tensor,  # [P, N, 3]
        cues: torch.Tensor,  # [P, N, CUE_DIM]
        geometry: torch.Tensor,  # [P, GEOMETRY_DIM]
    ) -> torch.Tensor:  # [P, N], -inf where not valid
        mask = valid.unsqueeze(-1).float()
        count = mask.sum(1, keepdim=True).clamp(min=1)
        mean = (features * mask).sum(1, keepdim=True) / count  # [P, 1, d]
        var = (((features - mean) ** 2) * mask).sum(1, keepdim=True) / count
        N = features.shape[1]
        view = self.view_mlp(torch.cat([features, mean.expand(-1, N, -1), var.expand(-1, N, -1)], -1))  # [P, N, h]
        geo = self.geometry_mlp(geometry).unsqueeze(1).expand(-1, N, -1)  # [P, N, h]
        v = self.vote_mlp(torch.cat([view, geo, displacement_m, cues], -1)).squeeze(-1)  # [P, N]
        return v.masked_fill(~valid, -torch.inf)

    def vote(self, views, features: Optional[torch.Tensor], image_wh: tuple, uniform: bool = False) -> torch.Tensor:
        """s(x) [P, C] for the points of `views` (a `voting_data.PointViews`), with the keyframe
        features sampled at their views [P, N, d]; `uniform` gives every valid view the same weight
        (the non-learned soft vote; features are not used)."""
        if uniform:
            logits = torch.zeros(views.valid.shape).masked_fill(~views.valid, -torch.inf)
        else:
            cues = view_cues(views.probs, views.valid, views.displacement_m, views.pixel_uv, views.geometry[:, -3:],
                             image_wh)
            logits = self.vote_logits(features, views.valid, views.displacement_m, cues, views.geometry)
        return self.combine(views.probs, logits)

    def combine(self, probs: torch.Tensor, vote_logits: torch.Tensor) -> torch.Tensor:
        """s(x) [P, C] from per-view probabilities [P, N, C] and vote logits [P, N] (rows without a
        valid view give zeros)."""
        any_view = torch.isfinite(vote_logits).any(-1, keepdim=True)  # [P, 1]
        weights = torch.softmax(vote_logits.masked_fill(~any_view, 0.0), dim=-1) * any_view  # [P, N]
        if self.vote_space == "probabilities":
            return (weights.unsqueeze(-1) * probs).sum(1)
        logits = (weights.unsqueeze(-1) * torch.log(probs + LOGIT_EPS)).sum(1)  # [P, C]
        return torch.softmax(logits, dim=-1) * any_view


# ----------------------------------------------------------------------------- checkpoints
CHECKPOINT_FORMAT = "semantic_mapping.voting"
CHECKPOINT_VERSION = 3
"""2: the network has the geometry prior (prior_mlp over normal and height); 3: the prior's normals
face the observing camera."""


class CheckpointError(ValueError):
    """A voting checkpoint that cannot be used (missing, corrupt, or for another label space)."""


def save_checkpoint(path, net: VotingNet, meta: dict) -> None:
    """Write the network and `meta` (the config that produced it, figures; plain types only) atomically."""
    import io

    from semantic_mapping.atomic_files import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "num_classes": net.num_classes,
                "feature_dim": net.feature_dim, "vote_space": net.vote_space,
                "state_dict": net.state_dict(), "meta": meta}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path, checkpoint_format: str, what: str, error=CheckpointError) -> dict:
    """The checkpoint dict at `path` (weights_only=True) if it is of `checkpoint_format`; else `error`
    saying why (missing, unreadable, another format), naming the `what` weights."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise error(f"no {what} weights at {path}") from exc
    except Exception as exc:  # unpickling errors, truncated files
        raise error(f"{what} weights at {path} are unreadable: {type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != checkpoint_format:
        raise error(f"{path} is not a {what} checkpoint")
    return data


def load_checkpoint(path, num_classes: int) -> tuple[VotingNet, dict]:
    """(network in eval mode, meta) from `path`, loaded with weights_only=True; CheckpointError says why not."""
    data = read_checkpoint(path, CHECKPOINT_FORMAT, "voting")
    if data.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {data.get('version')}, this network needs version "
                              f"{CHECKPOINT_VERSION}: retrain it with `semantic-mapping train-voting`")
    if data["num_classes"] != num_classes:
        raise CheckpointError(f"{path} was trained for {data['num_classes']} classes, the label space has {num_classes}")
    net = VotingNet(num_classes, feature_dim=data["feature_dim"], vote_space=data["vote_space"])
    try:
        net.load_state_dict(data["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path} does not match the voting network: {exc}") from exc
    return net.eval(), data.get("meta", {})
