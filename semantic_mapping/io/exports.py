"""Exporters for map outputs: PLY (mesh, labelled voxels), grid PNG + YAML, JSON; all atomic."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import cv2
import numpy as np

from semantic_mapping.atomic_files import atomic_write_bytes, atomic_write_text
from semantic_mapping.semantics.label_space import LabelSpace
from semantic_mapping.types import LabelledVoxels, SemanticMesh, TraversabilityGrid


def _ply_bytes(vertex_fields: list, vertex_data: list, faces=None) -> bytes:
    """Binary little-endian PLY. vertex_fields: [(name, ply type, numpy dtype)], vertex_data: matching [N] arrays."""
    n = len(vertex_data[0]) if vertex_data else 0
    header = ["ply", "format binary_little_endian 1.0", "comment semantic_mapping export", f"element vertex {n}"]
    header += [f"property {ptype} {name}" for name, ptype, _ in vertex_fields]
    if faces is not None:
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    header.append("end_header")
    record = np.dtype([(name, dtype) for name, _, dtype in vertex_fields])
    vertices = np.empty(n, dtype=record.newbyteorder("<"))
    for (name, _, _), values in zip(vertex_fields, vertex_data):
        vertices[name] = values
    out = io.BytesIO()
    out.write(("\n".join(header) + "\n").encode("ascii"))
    out.write(vertices.tobytes())
    if faces is not None:
        face_record = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
        face_record["n"] = 3
        face_record["idx"] = faces
        out.write(face_record.tobytes())
    return out.getvalue()


def _xyz_fields(points: np.ndarray) -> tuple[list, list]:
    fields = [("x", "float", "<f4"), ("y", "float", "<f4"), ("z", "float", "<f4")]
    return fields, [points[:, 0], points[:, 1], points[:, 2]]


def _rgb_fields(colors: np.ndarray, prefix: str = "") -> tuple[list, list]:
    fields = [(prefix + c, "uchar", "u1") for c in ("red", "green", "blue")]
    return fields, [colors[:, 0], colors[:, 1], colors[:, 2]]


def write_mesh_ply(path: os.PathLike, mesh: SemanticMesh, label_space: LabelSpace) -> Path:
    """Mesh with class colours as vertex colour, the observed (or predicted) colour, and `label` and
    `predicted` (1 on the surface scene completion predicted) vertex attributes."""
    fields, data = _xyz_fields(mesh.vertices_m)
    f, d = _rgb_fields(label_space.colorize(mesh.vertex_labels))
    fields, data = fields + f, data + d
    f, d = _rgb_fields(mesh.vertex_colors, prefix="observed_")
    fields += f + [("label", "int", "<i4"), ("predicted", "uchar", "u1")]
    data += d + [mesh.vertex_labels, mesh.vertex_predicted.astype(np.uint8)]
    return atomic_write_bytes(path, _ply_bytes(fields, data, mesh.triangles))


def write_voxels_ply(path: os.PathLike, voxels: LabelledVoxels, label_space: LabelSpace) -> Path:
    """Labelled voxel centres: class colour, observed colour, label, confidence, predicted flag."""
    fields, data = _xyz_fields(voxels.positions_m)
    f, d = _rgb_fields(label_space.colorize(voxels.labels))
    fields, data = fields + f, data + d
    f, d = _rgb_fields(voxels.colors, prefix="observed_")
    fields += f + [("label", "int", "<i4"), ("confidence", "float", "<f4"), ("predicted", "uchar", "u1")]
    data += d + [voxels.labels, voxels.confidence, voxels.predicted.astype(np.uint8)]
    return atomic_write_bytes(path, _ply_bytes(fields, data))


def read_ply_vertices(path: os.PathLike) -> np.ndarray:
    """Vertex records of a PLY written by this module (structured array), for checks and tools."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    types = {"float": "<f4", "uchar": "u1", "int": "<i4"}
    n = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    fields = []
    for line in header[header.index(next(h for h in header if h.startswith("element vertex"))) + 1:]:
        if not line.startswith("property "):
            break
        _, ptype, name = line.split()
        fields.append((name, types[ptype]))
    return np.frombuffer(data, dtype=np.dtype(fields), count=n, offset=end)


def grid_image(grid: TraversabilityGrid, scale: int = 1) -> np.ndarray:
    """[rows, cols, 3] uint8 picture: free white, occupied black, unknown grey; +y up as on a map."""
    colors = {TraversabilityGrid.FREE: 255, TraversabilityGrid.OCCUPIED: 0, TraversabilityGrid.UNKNOWN: 128}
    img = np.full(grid.cells.shape, 128, np.uint8)
    for value, shade in colors.items():
        img[grid.cells == value] = shade
    img = np.repeat(np.repeat(img[::-1], scale, axis=0), scale, axis=1)
    return np.repeat(img[..., None], 3, axis=2)


def write_grid(path_png: os.PathLike, grid: TraversabilityGrid) -> Path:
    """Traversability grid as a map_server-style PNG + YAML pair (YAML beside it, same stem)."""
    path_png = Path(path_png)
    ok, png = cv2.imencode(".png", grid_image(grid)[..., 0])
    if not ok:
        raise OSError(f"could not encode {path_png}")
    atomic_write_bytes(path_png, png.tobytes())
    yaml_text = (
        f"image: {path_png.name}\nresolution: {grid.resolution_m:.6f}\n"
        f"origin: [{grid.origin_xy_m[0]:.6f}, {grid.origin_xy_m[1]:.6f}, 0.0]\n"
        "negate: 0\noccupied_thresh: 0.65\nfree_thresh: 0.196\nmode: trinary\n"
    )
    atomic_write_text(path_png.with_suffix(".yaml"), yaml_text)
    return path_png


def write_png(path: os.PathLike, rgb: np.ndarray) -> Path:
    """RGB uint8 image to PNG, atomically."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path}")
    return atomic_write_bytes(path, png.tobytes())


def write_json(path: os.PathLike, data) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
