"""Training of the frame-vote weights (`semantic-mapping train-voting --frame-votes`), 2D supervision only.

Per development scene: every `held_out_every`-th frame (offset `held_out_offset`) is held out. The other
frames' sampled pixels give observations (the voxel their depth lands in, their class probabilities
and `frame_votes.frame_cues`); the held-out frames' pixels give each voxel they land in the 2D label
seen there (the majority over its pixels). The loss is the cross-entropy of each supervised voxel's
weighted mean s(x) = Σ w_i S_i / Σ w_i (or of log S_i, `vote_space`) against that label (a frame's
pixels in one voxel share one vote, as in the map): the voted semantics rendered into the held-out
views with each pixel's depth picking its surface voxel (GNeSF §3.3, with the depth in place of the
SDF-weighted samples of Eq. 8-9).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from semantic_mapping.atomic_files import atomic_write_bytes
from semantic_mapping.config import FusionConfig
from semantic_mapping.fusion.voxel_map import pack_indices
from semantic_mapping.geometry.pose import transform_points
from semantic_mapping.semantics.bayesian import LOGIT_EPS
from semantic_mapping.semantics.frame_votes import FrameVoteNet, frame_cues, pixel_points, save_checkpoint

log = logging.getLogger(__name__)


@dataclass
class FrameVoteTrainConfig:
    num_frames: int = 300
    voxel_size_m: float = 0.04
    pixel_stride: int = 8
    """Every pixel_stride-th pixel along each image axis is sampled."""
    frame_stride: int = 2
    """Every frame_stride-th frame (of those not held out) observes."""
    held_out_every: int = 10
    held_out_offset: int = 5
    steps: int = 150
    learning_rate: float = 0.01
    hidden_dim: int = 32
    seed: int = 0
    vote_space: str = "probabilities"
    """What the votes average (GNeSF Eq. 4): "probabilities", or "logits" for the ablation of its Table 4."""


@dataclass
class FrameVoteScene:
    """One scene's observations of its supervised voxels."""

    voxel: torch.Tensor  # [R] int64 supervised voxel of each observation (a sampled pixel)
    share: torch.Tensor  # [R] float32 1 / pixels of its frame in its voxel (a frame votes once per voxel)
    probs: torch.Tensor  # [R, C] float32 class probabilities
    cues: torch.Tensor  # [R, len(CUE_NAMES)] float32
    labels: torch.Tensor  # [V] int64 2D label of each supervised voxel


@dataclass
class FrameVoteHistory:
    step: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)


def _sampled_pixels(depth_m: np.ndarray, stride: int, depth_range: tuple) -> np.ndarray:  # [P] flat indices
    H, W = depth_m.shape
    grid = (np.arange(0, H, stride)[:, None] * W + np.arange(0, W, stride)[None, :]).ravel()
    d = depth_m.reshape(-1)[grid]
    return grid[(d > depth_range[0]) & (d < depth_range[1])]


def _pixel_voxel_keys(frame, pixel_index: np.ndarray, voxel_size_m: float) -> np.ndarray:  # [P] int64
    """Packed index of the voxel each pixel's depth point (flat pixel indices [P]) lies in."""
    from semantic_mapping.sim.ground_truth import voxel_indices

    v, u = np.divmod(pixel_index, frame.depth_m.shape[1])
    world = transform_points(frame.T_world_cam, pixel_points(frame.depth_m, frame.intrinsics.K, u, v))
    return pack_indices(voxel_indices(world, voxel_size_m))


def collect_scene(seed: int, config: FrameVoteTrainConfig, num_classes: int) -> FrameVoteScene:
    """Observations and 2D supervision of simulated development scene `seed`."""
    from semantic_mapping.sim.sequence import simulate

    fusion = FusionConfig()
    depth_range = (fusion.depth_min_m, fusion.depth_max_m)
    recording = simulate(seed, num_frames=config.num_frames)
    obs_keys, obs_share, obs_probs, obs_cues, sup_keys, sup_labels = [], [], [], [], [], []
    observed = 0
    for i in range(len(recording)):
        held_out = i % config.held_out_every == config.held_out_offset
        if not held_out:
            observed += 1
            if (observed - 1) % config.frame_stride:
                continue
        frame = recording.frame(i, masks=False)
        pixels = _sampled_pixels(frame.depth_m, config.pixel_stride, depth_range)
        keys = _pixel_voxel_keys(frame, pixels, config.voxel_size_m)
        if held_out:
            labels = frame.ground_truth.labels.reshape(-1)[pixels]
            known = (labels >= 0) & (labels < num_classes)
            sup_keys.append(keys[known])
            sup_labels.append(labels[known].astype(np.int64))
            continue
        probs = frame.class_probs.reshape(-1, num_classes)[pixels].astype(np.float32)
        obs_keys.append(keys)
        _, inverse, count = np.unique(keys, return_inverse=True, return_counts=True)
        obs_share.append((1.0 / count[inverse]).astype(np.float32))
        obs_probs.append(probs.astype(np.float16))
        obs_cues.append(frame_cues(frame.depth_m, frame.intrinsics.K, pixels, probs,
                                   float(frame.class_probs.max(axis=-1).mean())))
    # Each supervised voxel takes the label most of its held-out pixels show.
    keys, inverse = np.unique(np.concatenate(sup_keys), return_inverse=True)
    votes = np.zeros((len(keys), num_classes), np.int64)
    np.add.at(votes, (inverse, np.concatenate(sup_labels)), 1)
    obs_keys = np.concatenate(obs_keys)
    position = np.clip(np.searchsorted(keys, obs_keys), 0, len(keys) - 1)
    supervised = keys[position] == obs_keys
    return FrameVoteScene(voxel=torch.from_numpy(position[supervised]),
                          share=torch.from_numpy(np.concatenate(obs_share)[supervised]),
                          probs=torch.from_numpy(np.concatenate(obs_probs)[supervised].astype(np.float32)),
                          cues=torch.from_numpy(np.concatenate(obs_cues)[supervised]),
                          labels=torch.from_numpy(votes.argmax(axis=1)))


def voted(scene: FrameVoteScene, log_weights: torch.Tensor, vote_space: str) -> torch.Tensor:  # [V, C] log s(x)
    """log of each supervised voxel's weighted mean of its observations' probabilities, or in the
    "logits" space the log-softmax of its weighted mean of their log-probabilities."""
    V, C = len(scene.labels), scene.probs.shape[1]
    w = torch.exp(log_weights - log_weights.max()) * scene.share  # [R]
    votes = torch.log(scene.probs + LOGIT_EPS) if vote_space == "logits" else scene.probs  # [R, C]
    num = torch.zeros(V, C).index_add_(0, scene.voxel, w[:, None] * votes)
    den = torch.zeros(V).index_add_(0, scene.voxel, w)
    mean = num / den.clamp(min=1e-30)[:, None]
    return torch.log_softmax(mean, dim=1) if vote_space == "logits" else torch.log(mean + 1e-6)


def scene_loss(net: FrameVoteNet, scene: FrameVoteScene, uniform: bool = False) -> tuple[torch.Tensor, float]:
    """(cross-entropy, accuracy) of the voted supervised voxels (only those with an observation)."""
    log_w = torch.zeros(len(scene.voxel)) if uniform else net(scene.cues)
    log_s = voted(scene, log_w, net.vote_space)
    seen = torch.zeros(len(scene.labels), dtype=torch.bool)
    seen[scene.voxel] = True
    loss = torch.nn.functional.nll_loss(log_s[seen], scene.labels[seen])
    return loss, float((log_s[seen].argmax(1) == scene.labels[seen]).float().mean())


def train(scenes: list, val_scenes: list, config: FrameVoteTrainConfig, progress: bool = True) -> tuple:
    """(network, history) trained on `scenes` (full batch, one step over all scenes)."""
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    net = FrameVoteNet(config.hidden_dim, config.vote_space)
    cues = torch.cat([s.cues for s in scenes])
    net.cue_mean.copy_(cues.mean(0))
    net.cue_std.copy_(cues.std(0) + 1e-3)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    history = FrameVoteHistory()
    for step in tqdm(range(1, config.steps + 1), desc="frame votes", unit="step", file=sys.stderr, disable=not progress):
        loss = sum(scene_loss(net, s)[0] for s in scenes) / len(scenes)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 10 == 0 or step == config.steps:
            with torch.no_grad():
                val = [scene_loss(net, s) for s in val_scenes]
            history.step.append(step)
            history.train_loss.append(float(loss.detach()))
            history.val_loss.append(float(np.mean([float(v[0]) for v in val])))
            history.val_accuracy.append(float(np.mean([v[1] for v in val])))
    with torch.no_grad():  # an average observation weighs 1 (keyframe votes are fused in these units)
        net.mlp[-1].bias -= torch.logsumexp(net(cues), 0) - np.log(len(cues))
    return net.eval(), history


def plot_history(history: FrameVoteHistory, uniform_val_loss: float, path, vote_space: str = "probabilities") -> None:
    """Loss curves (and the equal-weight vote's validation loss) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from semantic_mapping.io.pictures import write_figure_png

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(history.step, history.train_loss, label="train")
    ax.plot(history.step, history.val_loss, label="validation")
    ax.axhline(uniform_val_loss, color="grey", linestyle="--", label="validation, equal weights")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy vs held-out 2D labels")
    ax.set_title(f"frame-vote weights (votes over {vote_space})")
    ax.legend()
    write_figure_png(fig, path)
    plt.close(fig)


def run_training(out_path, train_seeds: list, val_seeds: list, config: FrameVoteTrainConfig, num_classes: int,
                 progress: bool = True) -> dict:
    """Collect the scenes, train, write the checkpoint, its loss plot (.png) and return its meta."""
    from pathlib import Path

    from semantic_mapping.sim.sequence import require_development_seeds

    require_development_seeds(list(train_seeds) + list(val_seeds))
    torch.set_num_threads(1)
    out_path = Path(out_path)
    start = time.perf_counter()
    scenes = [collect_scene(s, config, num_classes) for s in train_seeds]
    val_scenes = [collect_scene(s, config, num_classes) for s in val_seeds]
    prepare_s = time.perf_counter() - start
    net, history = train(scenes, val_scenes, config, progress)
    with torch.no_grad():
        uniform = [scene_loss(net, s, uniform=True) for s in val_scenes]
        learned = [scene_loss(net, s) for s in val_scenes]
    meta = {"train_seeds": list(train_seeds), "val_seeds": list(val_seeds), "config": asdict(config),
            "val_uniform": {"cross_entropy": float(np.mean([float(u[0]) for u in uniform])),
                            "accuracy": float(np.mean([u[1] for u in uniform]))},
            "val_learned": {"cross_entropy": float(np.mean([float(v[0]) for v in learned])),
                            "accuracy": float(np.mean([v[1] for v in learned]))},
            "observations": int(sum(len(s.voxel) for s in scenes)), "prepare_s": prepare_s,
            "train_s": time.perf_counter() - start - prepare_s, "torch": str(torch.__version__), "threads": 1,
            "segmenter": "simulated, default SegmenterSimConfig"}
    save_checkpoint(out_path, net, meta)
    atomic_write_bytes(out_path.with_suffix(".json"), json.dumps({"meta": meta, "history": asdict(history)}, indent=1).encode())
    plot_history(history, meta["val_uniform"]["cross_entropy"], out_path.with_suffix(".png"), config.vote_space)
    log.info("frame votes: validation cross-entropy %.4f (equal weights %.4f), accuracy %.4f (%.4f)",
             meta["val_learned"]["cross_entropy"], meta["val_uniform"]["cross_entropy"],
             meta["val_learned"]["accuracy"], meta["val_uniform"]["accuracy"])
    return meta
