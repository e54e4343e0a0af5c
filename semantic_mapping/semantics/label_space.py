"""The label space: class ids, names, colours and roles, read from config/classes.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from semantic_mapping.config import config_dir, load_yaml

ROLES = ("floor", "structure", "object")


@dataclass(frozen=True)
class LabelSpace:
    names: tuple  # [C] class names, index = class id
    colors: np.ndarray  # [C, 3] uint8 display colours
    roles: tuple  # [C] 'floor', 'structure' or 'object'
    ignore_id: int = 255

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def id_of(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"class {name!r} is not in the label space {list(self.names)}") from None

    def ids_with_role(self, role: str) -> np.ndarray:
        return np.array([i for i, r in enumerate(self.roles) if r == role], dtype=np.int32)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """[...] class ids -> [..., 3] uint8 colours (black where ignore or out of range)."""
        table = np.zeros((max(self.ignore_id, self.num_classes) + 1, 3), np.uint8)
        table[: self.num_classes] = self.colors
        idx = np.where((labels >= 0) & (labels < self.num_classes), labels, self.ignore_id)
        return table[idx]

    @classmethod
    def load(cls, path: Optional[Path] = None) -> "LabelSpace":
        path = Path(path) if path else config_dir() / "classes.yaml"
        data = load_yaml(path)
        classes = sorted(data["classes"], key=lambda c: c["id"])
        ids = [c["id"] for c in classes]
        if ids != list(range(len(ids))):
            raise ValueError(f"{path}: class ids must be 0..C-1 without gaps, got {ids}")
        roles = tuple(c.get("role", "object") for c in classes)
        bad = [r for r in roles if r not in ROLES]
        if bad:
            raise ValueError(f"{path}: unknown role(s) {bad}; expected one of {ROLES}")
        ignore_id = int(data.get("ignore_id", 255))
        if ignore_id < len(ids):
            raise ValueError(f"{path}: ignore_id {ignore_id} collides with a class id")
        return cls(
            names=tuple(c["name"] for c in classes),
            colors=np.array([c["color"] for c in classes], dtype=np.uint8),
            roles=roles,
            ignore_id=ignore_id,
        )


_DEFAULT: Optional[LabelSpace] = None


def default_label_space() -> LabelSpace:
    """The package's label space (config/classes.yaml), loaded once."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = LabelSpace.load()
    return _DEFAULT
