"""Synthetic indoor scenes with ground truth: procedural layouts, camera paths, RGB-D rendering.

`generate_scene(seed)` gives a JSON-serialisable `SceneSpec`; `spec.build_mesh()` its labelled
`SceneMesh`; `make_trajectory` a camera path; `SceneRenderer(mesh).render(T_world_cam, stamp_ns, rng)`
a `Frame` with ground truth; `voxelize_surface` / `occupancy_grid` the 3D ground truth.
"""

from semantic_mapping.sim.ground_truth import (
    GroundTruthVoxels,
    InstanceInfo,
    SceneMesh,
    occupancy_grid,
    save_scene_mesh,
    voxel_indices,
    voxelize_surface,
)
from semantic_mapping.sim.primitives import BOX, CYLINDER, Solid, TextureSpec
from semantic_mapping.sim.render import SceneRenderer, apply_depth_noise, camera_intrinsics
from semantic_mapping.sim.scene import (
    FloorGrid,
    ObjectSpec,
    OpeningSpec,
    RoomSpec,
    SceneSpec,
    SurfaceSpec,
    floor_grid,
    generate_scene,
    scene_statistics,
)
from semantic_mapping.sim.trajectory import camera_rotation, make_trajectory

__all__ = [
    "BOX",
    "CYLINDER",
    "FloorGrid",
    "GroundTruthVoxels",
    "InstanceInfo",
    "ObjectSpec",
    "OpeningSpec",
    "RoomSpec",
    "SceneMesh",
    "SceneRenderer",
    "SceneSpec",
    "Solid",
    "SurfaceSpec",
    "TextureSpec",
    "apply_depth_noise",
    "camera_intrinsics",
    "camera_rotation",
    "floor_grid",
    "generate_scene",
    "make_trajectory",
    "occupancy_grid",
    "save_scene_mesh",
    "scene_statistics",
    "voxel_indices",
    "voxelize_surface",
]
