"""The interface every dataset reader offers: a re-iterable, sized sequence of Frames."""

from __future__ import annotations

import abc
from typing import Iterator

from semantic_mapping.types import CameraIntrinsics, Frame


class FrameSource(abc.ABC):
    """Frames of one camera, in time order; iterating again starts from the first frame.

    `intrinsics` is the camera of every frame; `meta` is a JSON-able dict describing the source
    (layout name, path, frames skipped and why).
    """

    layout: str = ""
    intrinsics: CameraIntrinsics
    meta: dict

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of frames the iterator yields."""

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """Yield the frames in time order."""


class IndexedFrameSource(FrameSource):
    """A FrameSource with random access: frame i is loaded by `_load_frame(i)`."""

    @abc.abstractmethod
    def _load_frame(self, index: int) -> Frame:
        """Read frame `index` (0 <= index < len) from disk."""

    def __getitem__(self, index: int) -> Frame:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"frame index {index} out of range for {n} frames")
        return self._load_frame(index % n)

    def __iter__(self) -> Iterator[Frame]:
        for index in range(len(self)):
            yield self._load_frame(index)
