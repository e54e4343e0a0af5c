"""Training of the soft-voting network with 2D supervision only (GNeSF §3.3, Eq. 5-6, 8-9).

Each step takes a batch of rays of held-out views of one scene, votes the semantics of the
samples along each ray from the scene's keyframes, renders them with the SDF weights and
minimises the cross-entropy against the rays' 2D labels. The geometry prior π(c | n, h) is rendered
the same way from the samples' TSDF normals (turned towards the camera) and heights and gets its own
cross-entropy term, on rays drawn from all training scenes at every step.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from semantic_mapping.atomic_files import atomic_write_text
from semantic_mapping.config import FusionConfig, KeyframeConfig, MapperConfig, ObjectsConfig, config_to_dict
from semantic_mapping.semantics.label_space import default_label_space
from semantic_mapping.semantics.voting import VotingNet, sample_maps, save_checkpoint
from semantic_mapping.semantics.voting_data import SceneData, TrainingDataConfig, prepare_scene
from semantic_mapping.sim.sequence import require_development_seeds

_LOG_EPS = 1e-6


def _render(scene, rays: torch.Tensor, per_sample: torch.Tensor) -> torch.Tensor:  # [B, C]
    """Eq. 5: the rays' [B] samples' class distributions [B * S, C] weighted by Eq. 8-9."""
    return (scene.render_weight[rays].unsqueeze(-1) * per_sample.reshape(len(rays), scene.samples_per_ray, -1)).sum(1)


def _sample_rows(scene, rays: torch.Tensor) -> torch.Tensor:  # [B * S]
    S = scene.samples_per_ray
    return (rays[:, None] * S + torch.arange(S)).reshape(-1)


def render_rays(net: VotingNet, scene: SceneData, rays: torch.Tensor, uniform: bool = False) -> torch.Tensor:
    """Rendered voted class distributions [B, C] of the rays `rays` [B] (Eq. 5)."""
    views = scene.views.select(_sample_rows(scene, rays))
    features = None if uniform else sample_maps(net.encoder(scene.keyframe_rgb), views.view_index, views.pixel_uv)  # [B * S, N, d]
    return _render(scene, rays, net.vote(views, features, scene.image_wh, uniform))


@dataclass
class PriorRays:
    """What the geometry prior learns from: the supervised rays of several scenes, pooled."""

    prior_normal: torch.Tensor  # [R * S, 3] float32 sample normals turned towards the camera
    height_m: torch.Tensor  # [R * S] float32 sample heights above the floor
    render_weight: torch.Tensor  # [R, S] float32 Eq. 8-9 weights
    label: torch.Tensor  # [R] int64
    samples_per_ray: int

    @classmethod
    def pool(cls, scenes: list) -> "PriorRays":
        return cls(*(torch.cat([getattr(s, name) for s in scenes]) for name in ("prior_normal", "height_m", "render_weight", "label")),
                   scenes[0].samples_per_ray)


def render_prior(net: VotingNet, scene, rays: torch.Tensor) -> torch.Tensor:
    """Rendered geometry prior π(c | n, h) [B, C] of the rays `rays` [B] of a SceneData or PriorRays."""
    rows = _sample_rows(scene, rays)
    return _render(scene, rays, torch.softmax(net.prior_logits(scene.prior_normal[rows], scene.height_m[rows]), dim=-1))


@dataclass
class TrainConfig:
    steps: int = 400
    rays_per_step: int = 1024
    learning_rate: float = 2e-3
    prior_rays_per_step: int = 8192
    """Rays per step for the geometry prior, drawn from all training scenes at once (rare surfaces
    such as ceilings, which few scenes show, are in every step)."""
    prior_learning_rate: float = 1e-2
    weight_decay: float = 1e-4
    eval_every: int = 50
    seed: int = 0


@dataclass
class History:
    step: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    val_prior_loss: list = field(default_factory=list)
    val_prior_accuracy: list = field(default_factory=list)


def evaluate(net: VotingNet, scenes: list, uniform: bool = False, prior: bool = False) -> tuple[float, float]:
    """(cross-entropy, pixel accuracy) of the rendered votes (or, with `prior`, geometry prior) of `scenes`' rays."""
    total, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for scene in scenes:
            rays = torch.arange(len(scene.label))
            rendered = render_prior(net, scene, rays) if prior else render_rays(net, scene, rays, uniform)
            total += float(F.nll_loss(torch.log(rendered + _LOG_EPS), scene.label, reduction="sum"))
            correct += int((rendered.argmax(1) == scene.label).sum())
            count += len(rays)
    return total / max(count, 1), correct / max(count, 1)


def _loss(rendered: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.nll_loss(torch.log(rendered + _LOG_EPS), labels)


def train(net: VotingNet, scenes: list, val_scenes: list, config: TrainConfig, progress=None) -> History:
    """Adam on the rendered cross-entropy (Eq. 6) of the votes of one scene's rays plus that of the
    geometry prior on rays of all scenes; returns the loss curves."""
    generator = torch.Generator().manual_seed(config.seed)
    named = list(net.named_parameters())
    optimiser = torch.optim.AdamW(
        [{"params": [p for name, p in named if not name.startswith("prior_mlp.")]},
         {"params": [p for name, p in named if name.startswith("prior_mlp.")], "lr": config.prior_learning_rate}],
        lr=config.learning_rate, weight_decay=config.weight_decay)
    pooled = PriorRays.pool(scenes)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, config.steps)
    history = History()
    running = []
    for step in range(1, config.steps + 1):
        scene = scenes[int(torch.randint(len(scenes), (1,), generator=generator))]
        rays = torch.randint(len(scene.label), (min(config.rays_per_step, len(scene.label)),), generator=generator)
        net.train()
        loss = _loss(render_rays(net, scene, rays), scene.label[rays])
        prior_rays = torch.randint(len(pooled.label), (config.prior_rays_per_step,), generator=generator)
        loss = loss + _loss(render_prior(net, pooled, prior_rays), pooled.label[prior_rays])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running.append(loss.item())
        if progress is not None:
            progress(step, running[-1])
        if step % config.eval_every == 0 or step == config.steps:
            net.eval()
            val_loss, val_accuracy = evaluate(net, val_scenes)
            val_prior_loss, val_prior_accuracy = evaluate(net, val_scenes, prior=True)
            history.step.append(step)
            history.train_loss.append(sum(running) / len(running))
            history.val_loss.append(val_loss)
            history.val_accuracy.append(val_accuracy)
            history.val_prior_loss.append(val_prior_loss)
            history.val_prior_accuracy.append(val_prior_accuracy)
            running = []
    return history


def plot_history(history: History, path, title: str = "soft voting training") -> None:
    """Loss curves (train, validation) and validation accuracy as a PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from semantic_mapping.io.pictures import write_figure_png

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(history.step, history.train_loss, label="train, votes + prior (mean since last point)")
    ax_loss.plot(history.step, history.val_loss, label="validation, votes")
    ax_loss.plot(history.step, history.val_prior_loss, label="validation, geometry prior")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("rendered cross-entropy (Eq. 6)")
    ax_loss.legend()
    ax_acc.plot(history.step, history.val_accuracy, label="votes")
    ax_acc.plot(history.step, history.val_prior_accuracy, label="geometry prior")
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("validation pixel accuracy")
    ax_acc.legend()
    fig.suptitle(title)
    write_figure_png(fig, path)


def run_training(out_path, train_seeds: list, val_seeds: list, data: TrainingDataConfig, config: TrainConfig,
                 vote_space: str = "probabilities", voxel_size_m: float = 0.04) -> dict:
    """Prepare the scenes, train, and write the checkpoint (`out_path`), its loss plot (.png) and its
    history (.json) next to it. Returns the checkpoint's meta (config, seeds, validation figures)."""
    require_development_seeds(train_seeds + val_seeds)
    out_path = Path(out_path)
    start = time.perf_counter()
    mapper_config = MapperConfig(fusion=FusionConfig(voxel_size_m=voxel_size_m, device="cpu"), objects=ObjectsConfig(enabled=False))
    keyframes = KeyframeConfig()
    scenes, val_scenes = [], []
    for seed in tqdm(train_seeds + val_seeds, desc="preparing scenes", unit="scene", file=sys.stderr):
        (val_scenes if seed in val_seeds else scenes).append(prepare_scene(seed, mapper_config, keyframes, data))
    prepare_s = time.perf_counter() - start
    torch.manual_seed(config.seed)
    net = VotingNet(default_label_space().num_classes, vote_space=vote_space)
    uniform_ce, uniform_acc = evaluate(net, val_scenes, uniform=True)
    with tqdm(total=config.steps, desc="training", unit="step", file=sys.stderr) as bar:
        def progress(step, loss):
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")

        history = train(net, scenes, val_scenes, config, progress)
    meta = {
        "vote_space": vote_space, "voxel_size_m": voxel_size_m, "train_seeds": train_seeds, "val_seeds": val_seeds,
        "data": dataclasses.asdict(data), "train": dataclasses.asdict(config), "keyframes": config_to_dict(keyframes),
        "segmenter": "simulated, default SegmenterSimConfig",
        "val_uniform": {"cross_entropy": uniform_ce, "pixel_accuracy": uniform_acc},
        "val_learned": {"cross_entropy": history.val_loss[-1], "pixel_accuracy": history.val_accuracy[-1]},
        "val_prior": {"cross_entropy": history.val_prior_loss[-1], "pixel_accuracy": history.val_prior_accuracy[-1]},
        "prepare_s": prepare_s, "train_s": time.perf_counter() - start - prepare_s,
        "torch": str(torch.__version__), "threads": torch.get_num_threads(),
    }
    save_checkpoint(out_path, net, meta)
    plot_history(history, out_path.with_suffix(".png"), title=f"soft voting training ({vote_space})")
    atomic_write_text(out_path.with_suffix(".json"), json.dumps({"meta": meta, "history": dataclasses.asdict(history)}, indent=1))
    return meta
