"""Map outputs as plain arrays: labelled surface voxels, semantic mesh, traversability grid."""

from __future__ import annotations

import numpy as np

from semantic_mapping.config import OutputConfig
from semantic_mapping.fusion.voxel_map import VoxelMap
from semantic_mapping.semantics.label_space import LabelSpace
from semantic_mapping.types import LabelledVoxels, SemanticMesh, TraversabilityGrid


def build_labelled_voxels(voxel_map: VoxelMap, label_space: LabelSpace) -> LabelledVoxels:
    """Voxels the observed surface passes through, with colour, label (ignore id if unknown) and confidence."""
    indices = voxel_map.surface_voxel_indices()  # [N, 3]
    values = voxel_map.voxel_values(indices)
    labels = np.where(values["labels"] >= 0, values["labels"], label_space.ignore_id).astype(np.int32)
    return LabelledVoxels(
        positions_m=(indices * voxel_map.voxel_size_m).astype(np.float32),
        colors=values["colors"],
        labels=labels,
        confidence=values["confidence"],
    )


def build_mesh(voxel_map: VoxelMap, label_space: LabelSpace) -> SemanticMesh:
    """Marching-cubes mesh with each vertex's colour and label taken from its nearest voxel."""
    vertices, triangles = voxel_map.triangle_mesh()
    values = voxel_map.voxel_values(np.round(vertices / voxel_map.voxel_size_m).astype(np.int64))
    labels = np.where(values["labels"] >= 0, values["labels"], label_space.ignore_id).astype(np.int32)
    return SemanticMesh(vertices_m=vertices, triangles=triangles, vertex_colors=values["colors"], vertex_labels=labels)


def build_traversability(
    voxels: LabelledVoxels, label_space: LabelSpace, config: OutputConfig, voxel_size_m: float
) -> TraversabilityGrid:
    """2D grid over x-y: floor surfaces free, other surfaces at robot height above the floor occupied.

    The floor level is the median height of floor-labelled voxels. A cell is occupied when a
    non-floor surface lies between floor + floor_clearance_m and floor + robot_height_m; free when
    it has floor and no such obstacle; unknown otherwise.
    """
    resolution = float(config.grid_resolution_m or voxel_size_m)
    if len(voxels.labels) == 0:
        return TraversabilityGrid(np.full((1, 1), TraversabilityGrid.UNKNOWN, np.int8), resolution, (0.0, 0.0))
    pos = voxels.positions_m
    floor_ids = label_space.ids_with_role("floor")
    is_floor = np.isin(voxels.labels, floor_ids)
    floor_z = float(np.median(pos[is_floor, 2])) if is_floor.any() else float(pos[:, 2].min())
    origin = pos[:, :2].min(axis=0) - 1.5 * resolution  # one cell of margin; voxel centres mid-cell
    shape = (np.ceil((pos[:, :2].max(axis=0) - origin) / resolution).astype(int) + 2)[::-1]  # rows (y), cols (x)
    col_row = np.floor((pos[:, :2] - origin) / resolution).astype(int)
    height = pos[:, 2] - floor_z
    near_floor = np.abs(height) <= max(config.floor_clearance_m, 2 * voxel_size_m)
    # Unlabelled surfaces in the robot's height band block too: an unknown class is no licence to drive.
    obstacle = ~is_floor & (height > config.floor_clearance_m) & (height < config.robot_height_m)
    cells = np.full(shape, TraversabilityGrid.UNKNOWN, np.int8)
    free = is_floor & near_floor
    cells[col_row[free, 1], col_row[free, 0]] = TraversabilityGrid.FREE
    cells[col_row[obstacle, 1], col_row[obstacle, 0]] = TraversabilityGrid.OCCUPIED
    return TraversabilityGrid(cells=cells, resolution_m=resolution, origin_xy_m=(float(origin[0]), float(origin[1])))
