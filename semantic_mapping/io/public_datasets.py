"""Readers for public RGB-D dataset layouts, and layout detection for any dataset path.

Every reader converts once, at the edge: poses become T_world_cam with an OpenCV camera
(x right, y down, z forward), depth becomes float32 metres with 0 = invalid, colour RGB uint8.
The world frame is the dataset's own. Datasets without time stamps get a nominal 30 Hz clock.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

from semantic_mapping.geometry.pose import T_from_quat_xyzw, is_rigid_transform
from semantic_mapping.geometry.projection import intrinsics_from_fov
from semantic_mapping.io.bag import BagFrameReader
from semantic_mapping.io.dataset_folder import FORMAT_NAME, METADATA_FILE, DatasetFolderReader
from semantic_mapping.io.frame_source import FrameSource, IndexedFrameSource
from semantic_mapping.io.image_files import depth_units_to_m, read_rgb, read_unchanged, resize_nearest
from semantic_mapping.io.label_mapping import GroundTruthLabelMapper, LabelMappingArg
from semantic_mapping.io.stamps import NS_PER_S, PoseTrajectory, associate_nearest, seconds_str_to_ns
from semantic_mapping.types import CameraIntrinsics, Frame, FrameGroundTruth

log = logging.getLogger(__name__)

NOMINAL_FRAME_PERIOD_NS = NS_PER_S // 30  # datasets without stamps: frame k at k / 30 s

# Colour-camera intrinsics of the TUM RGB-D Freiburg sensors, 640 x 480.
TUM_INTRINSICS = {
    "freiburg1": CameraIntrinsics(517.3, 516.5, 318.6, 255.3, 640, 480),
    "freiburg2": CameraIntrinsics(520.9, 521.0, 325.1, 249.7, 640, 480),
    "freiburg3": CameraIntrinsics(535.4, 539.2, 320.1, 247.6, 640, 480),
}
SEVEN_SCENES_INTRINSICS = CameraIntrinsics(585.0, 585.0, 320.0, 240.0, 640, 480)
REPLICA_HFOV_DEG = 90.0


def _numbered_files(folder: Path, pattern: str) -> dict[int, Path]:
    """{number: path} of files in folder whose names match `pattern` (one integer group)."""
    regex = re.compile(pattern)
    found = {}
    if folder.is_dir():
        for path in folder.iterdir():
            match = regex.fullmatch(path.name)
            if match:
                found[int(match.group(1))] = path
    return found


def _read_matrix_4x4(path: Path) -> np.ndarray:
    values = np.array(path.read_text(encoding="utf-8").split(), dtype=np.float64)
    if values.size != 16:
        raise ValueError(f"{path}: expected a 4x4 matrix (16 numbers), found {values.size}")
    return values.reshape(4, 4)


def _pick_sequence(root: Path, pattern: str, sequence: Union[None, int, str], what: str) -> Path:
    """The sequence folder of `root` named by `sequence` (number or name), else the first one."""
    regex = re.compile(pattern)
    found = sorted(
        (int(regex.fullmatch(p.name).group(1)), p) for p in root.iterdir() if p.is_dir() and regex.fullmatch(p.name)
    )
    if not found:
        raise FileNotFoundError(f"{root}: no {what} sequence folders (matching {pattern}) found")
    names = [p.name for _, p in found]
    if sequence is None:
        if len(found) > 1:
            log.info("%s: reading %s; pass sequence= to read one of %s", root, names[0], names)
        return found[0][1]
    for number, p in found:
        if sequence in (number, p.name):
            return p
    raise ValueError(f"{root}: sequence {sequence!r} not found; available: {names}")


def _ground_truth(labels: Optional[np.ndarray], instances: Optional[np.ndarray]) -> Optional[FrameGroundTruth]:
    if labels is None:
        return None
    return FrameGroundTruth(labels=labels, instances=None if instances is None else instances.astype(np.int32))


class TumRgbdReader(IndexedFrameSource):
    """TUM RGB-D benchmark sequence: rgb.txt, depth.txt, groundtruth.txt and their PNG folders.

    Each colour image is paired with the nearest depth image within `max_stamp_diff_s`; its pose
    is interpolated at the colour stamp from groundtruth.txt (pose gaps over `max_pose_gap_s` are
    not bridged). Colour images without a depth partner or a pose are skipped and counted in
    `meta['skipped']`. Intrinsics default to the Freiburg camera named in the folder name
    (freiburg1/2/3, fr1/2/3), else freiburg3; pass `intrinsics=` to override.
    """

    layout = "tum"

    def __init__(
        self,
        path: os.PathLike,
        intrinsics: Optional[CameraIntrinsics] = None,
        max_stamp_diff_s: float = 0.02,
        max_pose_gap_s: float = 0.1,
        depth_units_per_m: float = 5000.0,
    ):
        self.root = Path(path)
        self.intrinsics = intrinsics or self._default_intrinsics(self.root)
        self.depth_units_per_m = depth_units_per_m
        rgb_stamps, rgb_files = self._read_list("rgb.txt")
        depth_stamps, depth_files = self._read_list("depth.txt")
        pose_stamps, pose_rows = self._read_list("groundtruth.txt", num_fields=7)
        poses = [T_from_quat_xyzw(row[:3], row[3:]) for row in np.array(pose_rows, dtype=np.float64)]
        trajectory = PoseTrajectory(pose_stamps, np.array(poses).reshape(-1, 4, 4), int(max_pose_gap_s * NS_PER_S))
        rgb_to_depth = associate_nearest(rgb_stamps, depth_stamps, int(max_stamp_diff_s * NS_PER_S))
        self._frames = []  # (stamp_ns, rgb path, depth path, T_world_cam)
        skipped = {"no_depth": 0, "no_pose": 0}
        for i in map(int, np.argsort(rgb_stamps, kind="stable")):
            if i not in rgb_to_depth:
                skipped["no_depth"] += 1
                continue
            T_world_cam = trajectory.at(rgb_stamps[i])
            if T_world_cam is None:
                skipped["no_pose"] += 1
                continue
            j = rgb_to_depth[i]
            rgb_path, depth_path = self.root / rgb_files[i][0], self.root / depth_files[j][0]
            self._frames.append((rgb_stamps[i], rgb_path, depth_path, T_world_cam))
        if any(skipped.values()):
            log.info("%s: skipped colour images %s", self.root, skipped)
        self.meta = {"layout": self.layout, "source": str(self.root), "skipped": skipped}

    @staticmethod
    def _default_intrinsics(root: Path) -> CameraIntrinsics:
        match = re.search(r"(?:freiburg|fr)([123])", root.resolve().name.lower())
        if match:
            return TUM_INTRINSICS[f"freiburg{match.group(1)}"]
        log.info("%s: folder name names no Freiburg camera; using freiburg3 intrinsics", root)
        return TUM_INTRINSICS["freiburg3"]

    def _read_list(self, name: str, num_fields: int = 1) -> tuple[list[int], list[list[str]]]:
        """(stamps_ns, fields after the stamp) of a TUM list file; '#' lines are comments."""
        path = self.root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: a TUM RGB-D folder holds rgb.txt, depth.txt and groundtruth.txt")
        stamps, rows = [], []
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 1 + num_fields:
                raise ValueError(f"{path}:{line_no}: expected a stamp and {num_fields} field(s), got {line!r}")
            stamps.append(seconds_str_to_ns(fields[0]))
            rows.append(fields[1:])
        return stamps, rows

    def __len__(self) -> int:
        return len(self._frames)

    def _load_frame(self, index: int) -> Frame:
        stamp_ns, rgb_path, depth_path, T_world_cam = self._frames[index]
        return Frame(
            rgb=read_rgb(rgb_path),
            depth_m=depth_units_to_m(read_unchanged(depth_path), self.depth_units_per_m),
            intrinsics=self.intrinsics,
            T_world_cam=T_world_cam.copy(),
            stamp_ns=stamp_ns,
        )


class ScanNetReader(IndexedFrameSource):
    """ScanNet frames exported from a .sens file: color/N.jpg, depth/N.png (mm), pose/N.txt, intrinsic/.

    Colour is resized to the depth resolution and the depth intrinsics are used. Frames whose
    pose is not finite (ScanNet marks lost tracking with -inf) are skipped and counted. 2D
    ground truth from label-filt/ (or label/) and instance-filt/ (or instance/) is read when
    present; ScanNet class ids need `label_mapping` (see GroundTruthLabelMapper).
    """

    layout = "scannet"

    def __init__(self, path: os.PathLike, label_mapping: LabelMappingArg = None):
        self.root = Path(path)
        depth_files = _numbered_files(self.root / "depth", r"(\d+)\.png")
        if not depth_files:
            raise FileNotFoundError(
                f"{self.root / 'depth'}: no N.png depth images "
                "(a ScanNet export holds color/, depth/, pose/, intrinsic/)"
            )
        K_depth = _read_matrix_4x4(self.root / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
        first_depth = read_unchanged(depth_files[min(depth_files)])
        self.intrinsics = CameraIntrinsics.from_K(K_depth, first_depth.shape[1], first_depth.shape[0])
        self._labels = GroundTruthLabelMapper(f"ScanNet {self.root}", label_mapping)
        self._label_dir = self._first_dir("label-filt", "label")
        self._instance_dir = self._first_dir("instance-filt", "instance")
        self._frames = []  # (frame number, T_world_cam)
        invalid_poses = 0
        for number in sorted(depth_files):
            T_world_cam = _read_matrix_4x4(self.root / "pose" / f"{number}.txt")
            if not is_rigid_transform(T_world_cam):
                invalid_poses += 1
                continue
            self._frames.append((number, T_world_cam))
        if invalid_poses:
            log.info("%s: skipped %d frames with invalid (inf/NaN) poses", self.root, invalid_poses)
        self.meta = {"layout": self.layout, "source": str(self.root), "skipped": {"invalid_pose": invalid_poses}}

    def __len__(self) -> int:
        return len(self._frames)

    def _first_dir(self, *names: str) -> Optional[Path]:
        return next((self.root / name for name in names if (self.root / name).is_dir()), None)

    def _color_path(self, number: int) -> Path:
        for suffix in (".jpg", ".png"):
            path = self.root / "color" / f"{number}{suffix}"
            if path.is_file():
                return path
        raise FileNotFoundError(f"{self.root / 'color'}: no {number}.jpg or {number}.png")

    def _load_frame(self, index: int) -> Frame:
        number, T_world_cam = self._frames[index]
        width, height = self.intrinsics.width_px, self.intrinsics.height_px
        rgb = read_rgb(self._color_path(number))
        if rgb.shape[:2] != (height, width):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        depth_m = depth_units_to_m(read_unchanged(self.root / "depth" / f"{number}.png"), 1000.0)
        labels = instances = None
        if self._label_dir is not None and (self._label_dir / f"{number}.png").is_file():
            labels = self._labels(resize_nearest(read_unchanged(self._label_dir / f"{number}.png"), width, height))
        if self._instance_dir is not None and (self._instance_dir / f"{number}.png").is_file():
            instances = resize_nearest(read_unchanged(self._instance_dir / f"{number}.png"), width, height)
        return Frame(
            rgb=rgb,
            depth_m=depth_m,
            intrinsics=self.intrinsics,
            T_world_cam=T_world_cam.copy(),
            stamp_ns=number * NOMINAL_FRAME_PERIOD_NS,
            ground_truth=_ground_truth(labels, instances),
        )


class ReplicaReader(IndexedFrameSource):
    """Replica renders as used by Semantic-NeRF: Sequence_N/{rgb,depth,semantic_class}/, traj_w_c.txt.

    `path` is a Sequence_N folder or the scene folder holding them (`sequence=` picks one, else
    the first). traj_w_c.txt holds one row-major 4x4 T_world_cam (OpenCV camera) per frame;
    depth PNGs are millimetres; the camera has a 90° horizontal field of view. semantic_class
    images become ground-truth labels through `label_mapping` (their ids are Semantic-NeRF's).
    """

    layout = "replica"

    def __init__(
        self,
        path: os.PathLike,
        sequence: Union[None, int, str] = None,
        label_mapping: LabelMappingArg = None,
        depth_units_per_m: float = 1000.0,
    ):
        root = Path(path)
        is_sequence = (root / "traj_w_c.txt").is_file()
        self.root = root if is_sequence else _pick_sequence(root, r"Sequence_(\d+)", sequence, "Replica")
        self.depth_units_per_m = depth_units_per_m
        self._rgb_files = _numbered_files(self.root / "rgb", r"rgb_(\d+)\.png")
        if not self._rgb_files:
            raise FileNotFoundError(f"{self.root / 'rgb'}: no rgb_K.png images")
        rows = np.loadtxt(self.root / "traj_w_c.txt", ndmin=2)
        if rows.shape[1] != 16:
            raise ValueError(f"{self.root / 'traj_w_c.txt'}: expected 16 values per line, got {rows.shape[1]}")
        self._numbers = sorted(self._rgb_files)
        if self._numbers[-1] >= len(rows):
            raise ValueError(
                f"{self.root}: rgb_{self._numbers[-1]}.png has no pose (traj_w_c.txt has {len(rows)} lines)"
            )
        self._poses = rows.reshape(-1, 4, 4)
        first = read_rgb(self._rgb_files[self._numbers[0]])
        self.intrinsics = intrinsics_from_fov(first.shape[1], first.shape[0], REPLICA_HFOV_DEG)
        self._labels = GroundTruthLabelMapper(f"Replica {self.root}", label_mapping)
        self.meta = {"layout": self.layout, "source": str(self.root)}

    def __len__(self) -> int:
        return len(self._numbers)

    def _load_frame(self, index: int) -> Frame:
        number = self._numbers[index]
        label_path = self.root / "semantic_class" / f"semantic_class_{number}.png"
        depth_path = self.root / "depth" / f"depth_{number}.png"
        labels = self._labels(read_unchanged(label_path)) if label_path.is_file() else None
        return Frame(
            rgb=read_rgb(self._rgb_files[number]),
            depth_m=depth_units_to_m(read_unchanged(depth_path), self.depth_units_per_m),
            intrinsics=self.intrinsics,
            T_world_cam=self._poses[number].copy(),
            stamp_ns=number * NOMINAL_FRAME_PERIOD_NS,
            ground_truth=_ground_truth(labels, None),
        )


class SevenScenesReader(IndexedFrameSource):
    """Microsoft 7-Scenes: seq-XX/frame-XXXXXX.{color.png, depth.png, pose.txt}.

    `path` is a seq-XX folder or the scene folder holding them (`sequence=` picks one, else the
    first). Depth is millimetres with 0 and 65535 invalid; poses are camera-to-world. The Kinect
    colour and depth images are not registered; both are used with the depth camera's nominal
    intrinsics (fx = fy = 585, cx = 320, cy = 240), as is customary for this dataset.
    """

    layout = "7scenes"

    def __init__(
        self,
        path: os.PathLike,
        sequence: Union[None, int, str] = None,
        intrinsics: CameraIntrinsics = SEVEN_SCENES_INTRINSICS,
    ):
        root = Path(path)
        has_frames = any(root.glob("frame-*.color.png"))
        self.root = root if has_frames else _pick_sequence(root, r"seq-(\d+)", sequence, "7-Scenes")
        self.intrinsics = intrinsics
        numbers = sorted(_numbered_files(self.root, r"frame-(\d+)\.color\.png"))
        if not numbers:
            raise FileNotFoundError(f"{self.root}: no frame-XXXXXX.color.png images")
        self._frames = []  # (frame number, T_world_cam)
        invalid_poses = 0
        for number in numbers:
            T_world_cam = _read_matrix_4x4(self._frame_path(number, "pose.txt"))
            if not is_rigid_transform(T_world_cam):
                invalid_poses += 1
                continue
            self._frames.append((number, T_world_cam))
        if invalid_poses:
            log.info("%s: skipped %d frames with invalid poses", self.root, invalid_poses)
        self.meta = {"layout": self.layout, "source": str(self.root), "skipped": {"invalid_pose": invalid_poses}}

    def _frame_path(self, number: int, suffix: str) -> Path:
        return self.root / f"frame-{number:06d}.{suffix}"

    def __len__(self) -> int:
        return len(self._frames)

    def _load_frame(self, index: int) -> Frame:
        number, T_world_cam = self._frames[index]
        depth_mm = read_unchanged(self._frame_path(number, "depth.png"))
        return Frame(
            rgb=read_rgb(self._frame_path(number, "color.png")),
            depth_m=depth_units_to_m(depth_mm, 1000.0, invalid_values=(0, 65535)),
            intrinsics=self.intrinsics,
            T_world_cam=T_world_cam.copy(),
            stamp_ns=number * NOMINAL_FRAME_PERIOD_NS,
        )


# ----------------------------------------------------------------------------- detection
LAYOUTS = {
    DatasetFolderReader.layout: f"our dataset folder ({METADATA_FILE} with format {FORMAT_NAME!r})",
    BagFrameReader.layout: "ROS 2 bag (metadata.yaml, or a .mcap / .db3 file)",
    TumRgbdReader.layout: "TUM RGB-D (rgb.txt, depth.txt, groundtruth.txt)",
    ScanNetReader.layout: "ScanNet export (color/, depth/, pose/, intrinsic/)",
    ReplicaReader.layout: "Replica / Semantic-NeRF (traj_w_c.txt and rgb/, or Sequence_N/ folders holding them)",
    SevenScenesReader.layout: "7-Scenes (frame-XXXXXX.color.png, or seq-XX/ folders holding them)",
}
BAG_SUFFIXES = (".mcap", ".db3")


class UnknownLayoutError(ValueError):
    """A path that is none of the dataset layouts we read."""


def _is_our_folder(path: Path) -> bool:
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        return False
    try:
        return json.loads(meta_path.read_text(encoding="utf-8")).get("format") == FORMAT_NAME
    except (json.JSONDecodeError, AttributeError):
        return False


def _is_replica_sequence(path: Path) -> bool:
    return (path / "traj_w_c.txt").is_file() and (path / "rgb").is_dir()


def _bag_storage_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix in BAG_SUFFIXES)


def detect_layout(path: os.PathLike) -> str:
    """Name of the layout of a dataset path: one of the keys of LAYOUTS."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset path {path} does not exist")
    if path.is_file():
        if path.suffix in BAG_SUFFIXES:
            return BagFrameReader.layout
        raise UnknownLayoutError(
            f"{path} is a file; datasets are folders, or ROS 2 bag files ending in {' or '.join(BAG_SUFFIXES)}"
        )
    if _is_our_folder(path):
        return DatasetFolderReader.layout
    if (path / "metadata.yaml").is_file() or _bag_storage_files(path):
        return BagFrameReader.layout
    if all((path / name).is_file() for name in ("rgb.txt", "depth.txt", "groundtruth.txt")):
        return TumRgbdReader.layout
    if all((path / name).is_dir() for name in ("color", "depth", "pose", "intrinsic")):
        return ScanNetReader.layout
    if _is_replica_sequence(path) or any(_is_replica_sequence(p) for p in path.glob("Sequence_*")):
        return ReplicaReader.layout
    if any(path.glob("frame-*.color.png")) or any(path.glob("seq-*/frame-*.color.png")):
        return SevenScenesReader.layout
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    shown = ", ".join(entries[:30]) + (f", ... ({len(entries)} entries)" if len(entries) > 30 else "")
    tried = "\n".join(f"  - {name}: {needs}" for name, needs in LAYOUTS.items())
    raise UnknownLayoutError(
        f"{path} is not a dataset layout we read. Tried:\n{tried}\nThe folder holds: {shown or '(nothing)'}"
    )


def open_dataset(path: os.PathLike, **kwargs) -> FrameSource:
    """A reader for the dataset at `path` (layout from detect_layout); kwargs go to the reader."""
    path = Path(path)
    layout = detect_layout(path)
    if layout == BagFrameReader.layout and path.is_dir() and not (path / "metadata.yaml").is_file():
        files = _bag_storage_files(path)
        if len(files) > 1:
            names = [f.name for f in files]
            raise ValueError(f"{path} has no metadata.yaml and several bag files {names}; open one of them")
        path = files[0]
    readers = {
        DatasetFolderReader.layout: DatasetFolderReader,
        BagFrameReader.layout: BagFrameReader,
        TumRgbdReader.layout: TumRgbdReader,
        ScanNetReader.layout: ScanNetReader,
        ReplicaReader.layout: ReplicaReader,
        SevenScenesReader.layout: SevenScenesReader,
    }
    return readers[layout](path, **kwargs)
