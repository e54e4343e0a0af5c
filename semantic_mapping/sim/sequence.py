"""A whole simulated recording: scene, camera path, rendered frames with simulated 2D semantics and masks.

Seeds: DEVELOPMENT_SEEDS are for development and training; BENCHMARK_SEEDS are held out for
the benchmark and nothing is tuned on them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Optional

import numpy as np

from semantic_mapping.config import SimConfig
from semantic_mapping.semantics.label_space import LabelSpace, default_label_space
from semantic_mapping.sim.ground_truth import SceneMesh
from semantic_mapping.sim.masks import SimulatedMaskGenerator
from semantic_mapping.sim.render import SceneRenderer, camera_intrinsics
from semantic_mapping.sim.scene import SceneSpec, generate_scene
from semantic_mapping.sim.segmenter import SimulatedSegmenter
from semantic_mapping.sim.trajectory import make_trajectory
from semantic_mapping.types import CameraIntrinsics, Frame

DEVELOPMENT_SEEDS = range(0, 1000)
"""Scenes for development, tuning and training."""
BENCHMARK_SEEDS = (1001, 1002, 1003)
"""Held-out scenes the benchmark reports on; never used for tuning or training."""
VOTING_BENCHMARK_SEEDS = BENCHMARK_SEEDS + tuple(range(1004, 1011))
"""Held-out scenes of the benchmark's voting stage. Its gain over Bayesian fusion varies from scene to
scene by about 3.3 points of 3D mIoU (standard deviation over 14 development scenes), so the mean of
three scenes is known to about ±1.9 points, too coarse to test a 3-point gain; ten give about ±1.0."""
DEMO_SEED = 7
"""The embedded default scene of `semantic-mapping demo` (a development seed)."""


def parse_seeds(text: str) -> list:
    """'20-31,40' -> [20, ..., 31, 40]; ValueError says what was expected."""
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            seeds += list(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise ValueError(f"expected seeds such as '20-31,40', got {text!r}") from None
    return seeds


def require_development_seeds(seeds) -> None:
    """Refuse seeds outside DEVELOPMENT_SEEDS (ValueError): the others are held out from training."""
    held_out = sorted(s for s in set(seeds) if s not in DEVELOPMENT_SEEDS)
    if held_out:
        raise ValueError(f"seeds {held_out} are held out from training (the benchmark's scenes are drawn from "
                         f"them); use development seeds ({DEVELOPMENT_SEEDS.start}-{DEVELOPMENT_SEEDS.stop - 1})")


@dataclass
class SimulatedRecording:
    """A scene with its camera path and the plugins that stand in for real 2D networks."""

    seed: int
    config: SimConfig
    spec: SceneSpec
    mesh: SceneMesh
    poses: list  # [(stamp_ns, T_world_cam [4, 4])]
    renderer: SceneRenderer
    segmenter: SimulatedSegmenter
    mask_generator: SimulatedMaskGenerator

    @property
    def intrinsics(self) -> CameraIntrinsics:
        return camera_intrinsics(self.config.camera)

    def __len__(self) -> int:
        return len(self.poses)

    def frame(self, index: int, semantics: bool = True, masks: bool = True) -> Frame:
        """Frame `index`: noisy RGB-D with ground truth, plus simulated probabilities and masks."""
        stamp_ns, T_world_cam = self.poses[index]
        frame = self.renderer.render(T_world_cam, stamp_ns, np.random.default_rng([self.seed, index]))
        if semantics:
            frame.class_probs = self.segmenter.predict(frame)
        if masks:
            frame.instance_masks = self.mask_generator.generate(frame)
        return frame

    def frames(self, semantics: bool = True, masks: bool = True, stride: int = 1) -> Iterator[Frame]:
        for i in range(0, len(self.poses), stride):
            yield self.frame(i, semantics, masks)


def simulate(
    seed: int,
    config: Optional[SimConfig] = None,
    num_frames: Optional[int] = None,
    label_space: Optional[LabelSpace] = None,
) -> SimulatedRecording:
    """Build scene `seed` and its camera path; frames are rendered lazily."""
    config = config or SimConfig()
    if num_frames is not None:
        config = replace(config, trajectory=replace(config.trajectory, num_frames=int(num_frames)))
    label_space = label_space or default_label_space()
    spec = generate_scene(seed, config.scene)
    mesh = spec.build_mesh()
    poses = make_trajectory(spec, seed, config.trajectory, config.camera)
    return SimulatedRecording(
        seed=seed,
        config=config,
        spec=spec,
        mesh=mesh,
        poses=poses,
        renderer=SceneRenderer(mesh, config.camera, config.depth_noise, label_space),
        segmenter=SimulatedSegmenter(config.segmenter, label_space, seed),
        mask_generator=SimulatedMaskGenerator(config.masks, seed, label_space),
    )
