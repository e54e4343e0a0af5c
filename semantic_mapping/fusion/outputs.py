"""Map outputs as plain arrays: labelled surface voxels, semantic mesh, traversability grid.

Each output can carry scene completion's predictions (`PredictedVoxels`) beside the observations,
flagged as predicted. Observed voxels always win: a predicted voxel is only used where the map has not
observed the voxel at all (weight 0).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from semantic_mapping.config import OutputConfig
from semantic_mapping.fusion.voxel_map import VoxelMap, pack_indices
from semantic_mapping.semantics.label_space import LabelSpace
from semantic_mapping.types import LabelledVoxels, PredictedVoxels, SemanticMesh, TraversabilityGrid


def unobserved_predictions(voxel_map: VoxelMap, predicted: PredictedVoxels) -> PredictedVoxels:
    """The predicted voxels the map has not observed (observations win), in the order given."""
    return predicted.select(np.isnan(voxel_map.observed_sdf(predicted.indices)))


def build_labelled_voxels(voxel_map: VoxelMap, label_space: LabelSpace,
                          predicted: Optional[PredictedVoxels] = None) -> LabelledVoxels:
    """Voxels the observed surface passes through, with colour, label (ignore id if unknown) and confidence;
    with `predicted`, then the unobserved voxels holding the predicted surface (|sdf| <= half a voxel),
    flagged predicted, with the predicted colour, label and its probability."""
    indices = voxel_map.surface_voxel_indices()  # [N, 3]
    values = voxel_map.voxel_values(indices)
    labels = np.where(values["labels"] >= 0, values["labels"], label_space.ignore_id).astype(np.int32)
    voxels = LabelledVoxels(
        positions_m=(indices * voxel_map.voxel_size_m).astype(np.float32),
        colors=values["colors"],
        labels=labels,
        confidence=values["confidence"],
    )
    if predicted is None or len(predicted.indices) == 0:
        return voxels
    surface = np.abs(predicted.tsdf) * voxel_map.sdf_trunc_m <= 0.5 * voxel_map.voxel_size_m
    surface &= ~np.isin(pack_indices(predicted.indices), pack_indices(indices))
    p = unobserved_predictions(voxel_map, predicted.select(surface))
    return LabelledVoxels(
        positions_m=np.concatenate([voxels.positions_m, (p.indices * voxel_map.voxel_size_m).astype(np.float32)]),
        colors=np.concatenate([voxels.colors, p.colors]),
        labels=np.concatenate([voxels.labels, p.labels.astype(np.int32)]),
        confidence=np.concatenate([voxels.confidence, p.confidence.astype(np.float32)]),
        predicted=np.concatenate([np.zeros(len(voxels.labels), bool), np.ones(len(p.labels), bool)]),
    )


def build_mesh(voxel_map: VoxelMap, label_space: LabelSpace, predicted: Optional[PredictedVoxels] = None) -> SemanticMesh:
    """Marching-cubes mesh with each vertex's colour and label taken from its nearest voxel.

    With `predicted`, the surface of the map's TSDF overlaid with the predicted TSDF where unobserved is
    meshed around the predicted voxels, and its triangles touching a predicted voxel (a vertex whose
    nearest voxel is predicted) are added, those vertices flagged predicted with the predicted colour and
    label. Where both meet, the two meshes can leave gaps or overlaps of up to a voxel.
    """
    vertices, triangles = voxel_map.triangle_mesh()
    values = voxel_map.voxel_values(np.round(vertices / voxel_map.voxel_size_m).astype(np.int64))
    labels = np.where(values["labels"] >= 0, values["labels"], label_space.ignore_id).astype(np.int32)
    mesh = SemanticMesh(vertices_m=vertices, triangles=triangles, vertex_colors=values["colors"], vertex_labels=labels)
    if predicted is None or len(predicted.indices) == 0:
        return mesh
    p = unobserved_predictions(voxel_map, predicted)
    if len(p.indices) == 0:
        return mesh
    p_vertices, p_triangles = voxel_map.triangle_mesh_overlaid(p.indices, p.tsdf, p.colors)
    keys = pack_indices(p.indices)
    order = np.argsort(keys)
    nearest = pack_indices(np.round(p_vertices / voxel_map.voxel_size_m).astype(np.int64))  # [V']
    row = order[np.clip(np.searchsorted(keys, nearest, sorter=order), 0, len(keys) - 1)]  # [V'] into p
    is_predicted = keys[row] == nearest  # [V']
    keep = is_predicted[p_triangles].any(axis=1)
    used, p_triangles = np.unique(p_triangles[keep], return_inverse=True)
    p_triangles = p_triangles.reshape(-1, 3).astype(np.int32)
    row, is_predicted = row[used], is_predicted[used]
    observed = voxel_map.voxel_values(np.round(p_vertices[used] / voxel_map.voxel_size_m).astype(np.int64))
    observed_labels = np.where(observed["labels"] >= 0, observed["labels"], label_space.ignore_id)
    return SemanticMesh(
        vertices_m=np.concatenate([mesh.vertices_m, p_vertices[used]]).astype(np.float32),
        triangles=np.concatenate([mesh.triangles, p_triangles + len(mesh.vertices_m)]),
        vertex_colors=np.concatenate([mesh.vertex_colors, np.where(is_predicted[:, None], p.colors[row], observed["colors"])]),
        vertex_labels=np.concatenate([mesh.vertex_labels, np.where(is_predicted, p.labels[row], observed_labels)]).astype(np.int32),
        vertex_predicted=np.concatenate([mesh.vertex_predicted, is_predicted]),
    )


def build_traversability(
    voxels: LabelledVoxels, label_space: LabelSpace, config: OutputConfig, voxel_size_m: float
) -> TraversabilityGrid:
    """2D grid over x-y: floor surfaces free, other surfaces at robot height above the floor occupied.

    The floor level is the median height of floor-labelled voxels (the observed ones when there are
    any). A cell is occupied when a non-floor surface lies between floor + floor_clearance_m and floor +
    robot_height_m; free when it has observed floor and no such obstacle; unknown otherwise. Predicted
    obstacles count like observed ones (a cell is flagged `predicted` when only predicted voxels made it
    occupied), predicted floor frees no cell: completion guesses what nobody saw, and a planner should
    not drive on a guess.
    """
    resolution = float(config.grid_resolution_m or voxel_size_m)
    if len(voxels.labels) == 0:
        return TraversabilityGrid(np.full((1, 1), TraversabilityGrid.UNKNOWN, np.int8), resolution, (0.0, 0.0))
    pos = voxels.positions_m
    floor_ids = label_space.ids_with_role("floor")
    is_floor = np.isin(voxels.labels, floor_ids)
    observed_floor = is_floor & ~voxels.predicted
    floor_z = float(np.median(pos[observed_floor if observed_floor.any() else is_floor, 2])) if is_floor.any() \
        else float(pos[:, 2].min())
    origin = pos[:, :2].min(axis=0) - 1.5 * resolution  # one cell of margin; voxel centres mid-cell
    shape = (np.ceil((pos[:, :2].max(axis=0) - origin) / resolution).astype(int) + 2)[::-1]  # rows (y), cols (x)
    col_row = np.floor((pos[:, :2] - origin) / resolution).astype(int)
    height = pos[:, 2] - floor_z
    near_floor = np.abs(height) <= max(config.floor_clearance_m, 2 * voxel_size_m)
    # Unlabelled surfaces in the robot's height band block too: an unknown class is no licence to drive.
    obstacle = ~is_floor & (height > config.floor_clearance_m) & (height < config.robot_height_m)
    free = is_floor & near_floor & ~voxels.predicted
    cells = np.full(shape, TraversabilityGrid.UNKNOWN, np.int8)
    cells[col_row[free, 1], col_row[free, 0]] = TraversabilityGrid.FREE
    cells[col_row[obstacle, 1], col_row[obstacle, 0]] = TraversabilityGrid.OCCUPIED
    observed_obstacle = obstacle & ~voxels.predicted
    seen = np.zeros(shape, bool)  # cells with an observed obstacle
    seen[col_row[observed_obstacle, 1], col_row[observed_obstacle, 0]] = True
    predicted = (cells == TraversabilityGrid.OCCUPIED) & ~seen
    return TraversabilityGrid(cells=cells, resolution_m=resolution, origin_xy_m=(float(origin[0]), float(origin[1])),
                              predicted=predicted)
