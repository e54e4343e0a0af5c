"""Translating a dataset's class ids into our label space (config/classes.yaml)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from semantic_mapping.config import load_yaml
from semantic_mapping.semantics.label_space import LabelSpace, default_label_space

log = logging.getLogger(__name__)

LabelMappingArg = Union[None, dict, str, os.PathLike]


def load_label_mapping(mapping: Union[dict, str, os.PathLike], label_space: LabelSpace) -> np.ndarray:
    """Lookup table [max source id + 1] int32: source class id -> our class id (ignore id if unmapped).

    `mapping` is a dict or a YAML file of `source_id: our class id or class name`; a source id
    mapped to null, or not listed, becomes the ignore id.
    """
    where = "label mapping"
    if not isinstance(mapping, dict):
        where = str(mapping)
        mapping = load_yaml(Path(mapping))
        if not isinstance(mapping, dict):
            raise ValueError(f"{where}: expected a YAML mapping of source class id -> class id or name")
    if not mapping:
        raise ValueError(f"{where}: the mapping is empty")
    try:
        source_ids = {int(k): v for k, v in mapping.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{where}: keys must be integer source class ids, got {list(mapping)[:10]}") from None
    if min(source_ids) < 0:
        raise ValueError(f"{where}: source class ids must be >= 0, got {min(source_ids)}")
    lut = np.full(max(source_ids) + 1, label_space.ignore_id, dtype=np.int32)
    for source_id, target in source_ids.items():
        if target is None:
            continue
        target_id = label_space.id_of(target) if isinstance(target, str) else int(target)
        if not (0 <= target_id < label_space.num_classes or target_id == label_space.ignore_id):
            raise ValueError(
                f"{where}: source id {source_id} maps to {target_id}, which is neither a class id "
                f"(0..{label_space.num_classes - 1}) nor the ignore id {label_space.ignore_id}"
            )
        lut[source_id] = target_id
    return lut


class GroundTruthLabelMapper:
    """Turns a dataset's ground-truth class ids into ours, or drops labels that do not fit.

    With a mapping, ids go through its table (unlisted ids -> ignore id). Without one, labels are
    kept as they are when every id is a class id or the ignore id, and dropped (with one log line
    per reader) otherwise.
    """

    def __init__(self, source_name: str, mapping: LabelMappingArg = None, label_space: Optional[LabelSpace] = None):
        self.source_name = source_name
        self.label_space = label_space or default_label_space()
        self.lut = None if mapping is None else load_label_mapping(mapping, self.label_space)
        self.frames_dropped = 0

    def __call__(self, source_ids: np.ndarray) -> Optional[np.ndarray]:
        """[H, W] int32 labels in our label space, or None when they do not fit and no mapping is set."""
        source_ids = source_ids.astype(np.int64)
        ignore_id = self.label_space.ignore_id
        if self.lut is not None:
            inside = (source_ids >= 0) & (source_ids < len(self.lut))
            return np.where(inside, self.lut[np.clip(source_ids, 0, len(self.lut) - 1)], ignore_id).astype(np.int32)
        fits = (source_ids == ignore_id) | ((source_ids >= 0) & (source_ids < self.label_space.num_classes))
        if fits.all():
            return source_ids.astype(np.int32)
        if self.frames_dropped == 0:
            log.warning(
                "%s: ground-truth class ids (up to %d) do not fit the label space (0..%d, ignore %d); "
                "dropping them. Pass label_mapping={source_id: class} or a YAML file to use them.",
                self.source_name,
                int(source_ids.max()),
                self.label_space.num_classes - 1,
                ignore_id,
            )
        self.frames_dropped += 1
        return None
