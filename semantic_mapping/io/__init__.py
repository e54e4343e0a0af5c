"""Datasets in and out: our dataset folder, public RGB-D layouts, ROS 2 bags (rosbags, no ROS needed).

Every reader is a FrameSource (sized, re-iterable, yields Frames with T_world_cam in an OpenCV
camera and depth in metres); `open_dataset(path)` picks the reader from the folder's layout.
"""

from semantic_mapping.io.bag import BagContentError, BagFrameReader, BagTopics, BagWriter, describe_bag
from semantic_mapping.io.dataset_folder import DatasetFolderReader, DatasetWriter
from semantic_mapping.io.frame_source import FrameSource, IndexedFrameSource
from semantic_mapping.io.label_mapping import GroundTruthLabelMapper, load_label_mapping
from semantic_mapping.io.public_datasets import (
    LAYOUTS,
    ReplicaReader,
    ScanNetReader,
    SevenScenesReader,
    TumRgbdReader,
    UnknownLayoutError,
    detect_layout,
    open_dataset,
)

__all__ = [
    "LAYOUTS",
    "BagContentError",
    "BagFrameReader",
    "BagTopics",
    "BagWriter",
    "DatasetFolderReader",
    "DatasetWriter",
    "FrameSource",
    "GroundTruthLabelMapper",
    "IndexedFrameSource",
    "ReplicaReader",
    "ScanNetReader",
    "SevenScenesReader",
    "TumRgbdReader",
    "UnknownLayoutError",
    "describe_bag",
    "detect_layout",
    "load_label_mapping",
    "open_dataset",
]
