"""Frame votes: every view that observes a voxel votes its class probabilities with a learned weight.

GNeSF Eq. 4 over all views, online: a voxel's distribution is s(x) = Σ_i w_i S_i(x) / Σ_i w_i over
every integrated frame i that observed it, w_i = exp(v_i) and v_i predicted per pixel from what the
view makes of the point (`CUE_NAMES`); a frame's pixels in one voxel vote once, with their mean
weight and weighted mean probabilities. The map keeps the running weighted mean and its total weight
(`VoxelMap` attribute "semantic_weight"), so nothing
is forgotten and no buffer is needed. The mean is over probabilities (Eq. 4), not a product of them:
a product lets every view's mistake count fully, a mean lets the views a network tends to get right
outvote the others, and leaves hedged distributions that the surface context (`semantics.context`)
can then settle. Weights trained for the ablation of GNeSF Table 4 (`vote_space` "logits") average
the views' log-probabilities instead: s(x) = softmax(Σ_i w_i log S_i(x) / Σ_i w_i).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from semantic_mapping.semantics.voting import VOTE_SPACES, CheckpointError, read_checkpoint

CUE_NAMES = ("depth_m", "cos_incidence", "border_frac", "entropy", "peak", "frame_mean_peak")
"""Per pixel: depth, |cos| of the angle between the ray and the depth image's surface normal, distance
to the nearest image border (fraction of the width), entropy and peak of its class probabilities,
and the mean peak over the frame (how sure the network is of this frame as a whole)."""
SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "frame_votes.pt"
CHECKPOINT_FORMAT = "semantic_mapping.frame_votes"
CHECKPOINT_VERSION = 1
_EPS = 1e-9


def pixel_points(depth_m: np.ndarray, K: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:  # [P, 3] float64
    """Camera-frame points (metres) of a depth image [H, W] at pixel columns u [P] and rows v [P]."""
    z = depth_m[v, u].astype(np.float64)
    return np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=1)


def pixel_normals(depth_m: np.ndarray, K: np.ndarray, pixel_index: np.ndarray) -> np.ndarray:  # [P, 3]
    """Unit surface normals (camera frame) of a depth image [H, W] at pixels (flat indices [P]), from
    central differences of the neighbouring pixels' points; zero where a neighbour has no depth or
    lies outside the image."""
    H, W = depth_m.shape
    v, u = np.divmod(pixel_index, W)

    def points(du: int, dv: int) -> tuple[np.ndarray, np.ndarray]:  # [P, 3] metres, [P] bool
        uu, vv = u + du, v + dv
        inside = (uu >= 0) & (uu < W) & (vv >= 0) & (vv < H)
        xyz = pixel_points(depth_m, K, np.clip(uu, 0, W - 1), np.clip(vv, 0, H - 1))
        return xyz, inside & (xyz[:, 2] > 0)

    (right, ok_r), (left, ok_l), (down, ok_d), (up, ok_u) = (points(1, 0), points(-1, 0), points(0, 1), points(0, -1))
    normal = np.cross(right - left, down - up) * (ok_r & ok_l & ok_d & ok_u)[:, None]
    return normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), _EPS)


def frame_cues(depth_m: np.ndarray, K: np.ndarray, pixel_index: np.ndarray, probs: np.ndarray,
               frame_mean_peak: float) -> np.ndarray:  # [P, len(CUE_NAMES)] float32
    """`CUE_NAMES` at the sampled pixels (flat indices [P]) of a frame, their class probabilities [P, C]."""
    H, W = depth_m.shape
    v, u = np.divmod(pixel_index, W)
    z = depth_m.reshape(-1)[pixel_index]
    ray = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(len(u))], axis=1)
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    cos = np.abs((pixel_normals(depth_m, K, pixel_index) * ray).sum(axis=1))
    border = np.minimum(np.minimum(u, W - 1 - u), np.minimum(v, H - 1 - v)) / W
    entropy = -(probs * np.log(probs + _EPS)).sum(axis=1)
    return np.stack([z, cos, border, entropy, probs.max(axis=1), np.full(len(z), frame_mean_peak)], 1).astype(np.float32)


class FrameVoteNet(nn.Module):
    """Log voting weight v of a view's pixel from its cues [P, len(CUE_NAMES)] (normalised inside), for
    votes averaged in `vote_space` ("probabilities" or "logits")."""

    def __init__(self, hidden_dim: int = 32, vote_space: str = "probabilities"):
        super().__init__()
        if vote_space not in VOTE_SPACES:
            raise ValueError(f"vote_space must be one of {VOTE_SPACES}, got {vote_space!r}")
        self.vote_space = vote_space
        n = len(CUE_NAMES)
        self.register_buffer("cue_mean", torch.zeros(n))
        self.register_buffer("cue_std", torch.ones(n))
        self.mlp = nn.Sequential(nn.Linear(n, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))

    def forward(self, cues: torch.Tensor) -> torch.Tensor:  # [P]
        return self.mlp((cues - self.cue_mean) / self.cue_std).squeeze(-1)

    def weights(self, cues: np.ndarray) -> np.ndarray:  # [P] float32
        """exp(v) of cues [P, len(CUE_NAMES)]."""
        with torch.no_grad():
            return torch.exp(self(torch.from_numpy(cues))).numpy()


class FrameVoteCheckpointError(CheckpointError):
    """Frame-vote weights that cannot be used (missing, corrupt, or of another format)."""


def save_checkpoint(path, net: FrameVoteNet, meta: dict) -> None:
    """Write the network and `meta` (plain types: the config that produced it, figures) atomically."""
    import io

    from semantic_mapping.atomic_files import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "cues": list(CUE_NAMES),
                "hidden_dim": net.mlp[0].out_features, "vote_space": net.vote_space, "state_dict": net.state_dict(),
                "meta": meta}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path) -> tuple[FrameVoteNet, dict]:
    """(network in eval mode, meta) from `path`, loaded with weights_only=True; FrameVoteCheckpointError says why not."""
    data = read_checkpoint(path, CHECKPOINT_FORMAT, "frame-vote", FrameVoteCheckpointError)
    if data.get("version") != CHECKPOINT_VERSION or tuple(data.get("cues", ())) != CUE_NAMES:
        raise FrameVoteCheckpointError(f"{path} was made for other cues or another version: retrain it with "
                                       "`semantic-mapping train-voting --frame-votes`")
    try:  # checkpoints from before the logits ablation vote over probabilities
        net = FrameVoteNet(hidden_dim=data["hidden_dim"], vote_space=data.get("vote_space", "probabilities"))
        net.load_state_dict(data["state_dict"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise FrameVoteCheckpointError(f"{path} does not match the frame-vote network: {exc}") from exc
    return net.eval(), data.get("meta", {})
