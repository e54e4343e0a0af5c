"""2D perception plugins: the interfaces of semantic segmenters and class-agnostic mask generators.

A plugin is any object with the right method; the pipeline makes one by name from a registry, so a
simulator and a real network are interchangeable. Factories are registered as callables or as
lazily imported "module:attribute" paths (so registering costs no import).
"""

from __future__ import annotations

import importlib
from typing import Callable, Protocol, Union, runtime_checkable

import numpy as np

from semantic_mapping.config import ConfigError
from semantic_mapping.types import Frame

Factory = Union[Callable[..., object], str]


@runtime_checkable
class Segmenter(Protocol):
    """Per-pixel semantic segmentation of a frame."""

    num_classes: int

    def predict(self, frame: Frame) -> np.ndarray:
        """Class probabilities [H, W, C] float32 (sum to 1 over C) for the frame's image."""
        ...


@runtime_checkable
class MaskGenerator(Protocol):
    """Class-agnostic instance masks of a frame (SAM-like)."""

    def generate(self, frame: Frame) -> np.ndarray:
        """Instance ids [H, W] int32, 0 = no mask; ids are arbitrary and per view."""
        ...


_SEGMENTERS: dict[str, Factory] = {"simulated": "semantic_mapping.sim.segmenter:SimulatedSegmenter"}
_MASK_GENERATORS: dict[str, Factory] = {
    "simulated": "semantic_mapping.sim.masks:SimulatedMaskGenerator",
    "geometric": "semantic_mapping.objects.geometric_masks:GeometricMaskGenerator",
}


def register_segmenter(name: str, factory: Factory) -> None:
    """Make `make_segmenter(name, ...)` call `factory` (a callable or a "module:attribute" path)."""
    _SEGMENTERS[name] = factory


def register_mask_generator(name: str, factory: Factory) -> None:
    """Make `make_mask_generator(name, ...)` call `factory` (a callable or a "module:attribute" path)."""
    _MASK_GENERATORS[name] = factory


def known_segmenters() -> list[str]:
    return sorted(_SEGMENTERS)


def known_mask_generators() -> list[str]:
    return sorted(_MASK_GENERATORS)


def make_segmenter(name: str, **kwargs) -> Segmenter:
    """The segmenter registered as `name`, built with `kwargs`."""
    return _resolve(_SEGMENTERS, name, "segmenter")(**kwargs)


def make_mask_generator(name: str, **kwargs) -> MaskGenerator:
    """The mask generator registered as `name`, built with `kwargs`."""
    return _resolve(_MASK_GENERATORS, name, "mask generator")(**kwargs)


def _resolve(registry: dict, name: str, kind: str) -> Callable[..., object]:
    if name not in registry:
        raise ConfigError(f"unknown {kind} {name!r}; known: {sorted(registry)}")
    factory = registry[name]
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
    return factory
