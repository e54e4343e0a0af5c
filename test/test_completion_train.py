"""Completion training: the crop loss is supervised where it should be, and a short run on one small
scene lowers it on crops it was not trained on."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from semantic_mapping.completion.data import IncompleteScanConfig, make_completion_scene
from semantic_mapping.completion.network import CompletionNetwork, CompletionNetworkConfig
from semantic_mapping.completion.train import CompletionTrainConfig, crop_loss, inside_crop, random_crop_origin, train_steps

IGNORE = 255


@pytest.fixture(scope="module")
def scene():
    return make_completion_scene(5, 60, 0.08, IncompleteScanConfig(keep_view_fraction=1.0), view_size_px=(64, 48),
                                 real_view_stride=3, num_virtual=6)


def _net(num_classes: int) -> CompletionNetwork:
    torch.manual_seed(0)
    return CompletionNetwork(CompletionNetworkConfig(num_classes=num_classes, base_channels=4, max_channels=16,
                                                     num_levels=3))


def test_inside_crop_selects_pixels_whose_surface_is_in_the_box(scene):
    view = scene.views[0]
    origin_m = np.array([-100.0, -100.0, -100.0])
    assert inside_crop(view, origin_m, np.full(3, 200.0), 0.08).mean() == pytest.approx((view.depth_m > 0).mean())
    assert not inside_crop(view, origin_m, np.full(3, 1.0), 0.08).any()


def test_crop_loss_has_every_term_and_gradients(scene):
    config = CompletionTrainConfig(crop_voxels=(16, 16, 32), views_per_step=6)
    net = _net(scene.complete.label_space.num_classes)
    rng = np.random.default_rng(0)
    surface = scene.complete.map.surface_voxel_indices()
    losses = crop_loss(net, scene, random_crop_origin(surface, np.array(config.crop_voxels), rng), config, IGNORE, rng, 1)
    for name in ("3d", "depth", "color", "semantics"):
        assert losses[name].item() > 0, name
    losses["total"].backward()
    assert all(p.grad is not None for p in net.semantic_decoder.parameters())
    assert net.geometry_encoder.stem[0].weight.grad.abs().sum() > 0


def test_short_training_lowers_the_loss_on_held_out_crops(scene):
    config = CompletionTrainConfig(crop_voxels=(16, 16, 32), steps=60, learning_rate=3e-3, views_per_step=3, seed=1)
    net = _net(scene.complete.label_space.num_classes)
    shape = np.array(config.crop_voxels)
    surface = scene.complete.map.surface_voxel_indices()

    def held_out_loss():
        rng = np.random.default_rng(99)  # the same crops, masks and views before and after
        with torch.no_grad():
            return np.mean([crop_loss(net, scene, random_crop_origin(surface, shape, rng), config, IGNORE, rng, 10**6 + k)
                            ["total"].item() for k in range(6)])

    before = held_out_loss()
    history = train_steps(net, [scene], config, IGNORE, progress=False)
    after = held_out_loss()
    assert len(history) == 60 and np.isfinite([h["total"] for h in history]).all()
    print(f"held-out crop loss {before:.3f} -> {after:.3f}")
    assert after < 0.7 * before, (before, after)


def test_train_completion_command_writes_weights_plot_and_history(tmp_path):
    from semantic_mapping.cli import main
    from semantic_mapping.completion.network import load_completion_model

    out = tmp_path / "completion.pt"
    assert main(["train-completion", "--out", str(out), "--seeds", "5", "--val-seeds", "6", "--frames", "12",
                 "--steps", "2", "--crop", "16,16,32", "--validate-every", "1", "--voxel-size", "0.08"]) == 0
    net = load_completion_model(out)
    assert net.meta["voxel_size_m"] == 0.08 and net.meta["train_seeds"] == [5]
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert len(json.loads(out.with_suffix(".json").read_text())["validation"]) == 3  # before, after steps 1 and 2


def test_train_completion_refuses_benchmark_seeds(tmp_path, capsys):
    from semantic_mapping.cli import main

    assert main(["train-completion", "--out", str(tmp_path / "c.pt"), "--seeds", "1001"]) == 2
    assert "held out from training" in capsys.readouterr().err
