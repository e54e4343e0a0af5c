"""Pictures people look at: frame contact sheets and render-vs-truth comparisons."""

from __future__ import annotations

import cv2
import numpy as np

from semantic_mapping.semantics.label_space import LabelSpace


def depth_image(depth_m: np.ndarray, max_depth_m: float = 6.0) -> np.ndarray:
    """[H, W] metres -> [H, W, 3] uint8 colour map (black where invalid)."""
    scaled = (np.clip(depth_m / max_depth_m, 0, 1) * 255).astype(np.uint8)
    img = cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    img[depth_m <= 0] = 0
    return img


def instance_image(ids: np.ndarray) -> np.ndarray:
    """[H, W] instance ids -> [H, W, 3] uint8 with a stable pseudo-random colour per id (0 black)."""
    rng = np.random.default_rng(12345)
    table = rng.integers(40, 256, size=(int(ids.max()) + 1 if ids.size else 1, 3)).astype(np.uint8)
    table[0] = 0
    return table[np.clip(ids, 0, None)]


def labelled(tile: np.ndarray, text: str) -> np.ndarray:
    """A copy of an RGB tile with a caption in its top-left corner."""
    out = np.ascontiguousarray(tile.copy())
    scale = max(out.shape[1] / 640.0, 0.35)
    cv2.putText(out, text, (6, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (6, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def grid_of(rows: list) -> np.ndarray:
    """Stack rows of equally sized RGB tiles into one image."""
    return np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)


def frame_contact_sheet(frames: list, label_space: LabelSpace, tile_width_px: int = 320) -> np.ndarray:
    """One row per frame: rgb, depth, ground-truth labels, noisy 2D labels, masks."""
    rows = []
    for frame in frames:
        h = int(round(frame.height_px * tile_width_px / frame.width_px))

        def fit(img, nearest=False):
            return cv2.resize(img, (tile_width_px, h), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)

        tiles = [labelled(fit(frame.rgb), f"rgb t={frame.stamp_ns / 1e9:.2f}s"), labelled(fit(depth_image(frame.depth_m), True), "depth")]
        if frame.ground_truth is not None:
            tiles.append(labelled(fit(label_space.colorize(frame.ground_truth.labels), True), "true labels"))
        if frame.class_probs is not None or frame.labels is not None:
            noisy = frame.labels if frame.labels is not None else frame.class_probs.argmax(axis=2)
            tiles.append(labelled(fit(label_space.colorize(noisy), True), "2D labels (noisy)"))
        if frame.instance_masks is not None:
            tiles.append(labelled(fit(instance_image(frame.instance_masks), True), "masks"))
        rows.append(tiles)
    width = max(len(r) for r in rows)
    for r in rows:
        r.extend([np.zeros_like(r[0])] * (width - len(r)))
    return grid_of(rows)


def objects_top_down(voxels, objects: list, label_space: LabelSpace, voxel_size_m: float,
                     pixels_per_voxel: int = 4) -> np.ndarray:
    """Top-down picture of labelled voxels (`LabelledVoxels` with object_ids): left coloured by object,
    right by class; the boxes of objects whose class is a thing (role "object", not wall or floor)
    outlined and captioned "#id class". [H, W, 3] uint8."""
    if len(voxels.positions_m) == 0:
        return labelled(np.zeros((240, 320, 3), np.uint8), "empty map")
    cells = np.round(voxels.positions_m[:, :2] / voxel_size_m).astype(np.int64)  # [N, 2] x, y
    lo = cells.min(axis=0) - 2
    size = cells.max(axis=0) - lo + 3
    order = np.argsort(voxels.positions_m[:, 2])  # higher voxels drawn last, so they show
    col, row = cells[order, 0] - lo[0], size[1] - 1 - (cells[order, 1] - lo[1])  # image y grows to -y
    ids = voxels.object_ids[order]
    by_object = np.zeros((size[1], size[0], 3), np.uint8)
    by_object[row, col] = np.where(ids[:, None] > 0, instance_image(ids), 60)
    by_class = np.zeros_like(by_object)
    by_class[row, col] = label_space.colorize(voxels.labels[order])
    scale = pixels_per_voxel
    tiles = [cv2.resize(img, (size[0] * scale, size[1] * scale), interpolation=cv2.INTER_NEAREST)
             for img in (by_object, by_class)]
    things = [o for o in objects if o.class_id >= 0 and label_space.roles[o.class_id] == "object"]
    for obj in things:
        yaw = 2.0 * np.arctan2(obj.box_quat_xyzw[2], obj.box_quat_xyzw[3])
        corners = np.array([[sx, sy] for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]) * obj.box_size_m[:2] / 2
        R = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
        xy = (corners @ R.T + obj.box_center_m[:2]) / voxel_size_m  # [4, 2] in voxels
        pts = np.stack([(xy[:, 0] - lo[0] + 0.5) * scale, (size[1] - 1 - (xy[:, 1] - lo[1]) + 0.5) * scale], 1)
        text = f"#{obj.id} {obj.class_name or '?'}"
        anchor = (int(pts[:, 0].min()), max(int(pts[:, 1].min()) - 3, 10))
        for tile in tiles:
            cv2.polylines(tile, [pts.astype(np.int32)], True, (255, 255, 255), 1, cv2.LINE_AA)
            cv2.putText(tile, text, anchor, cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return grid_of([[labelled(tiles[0], "objects (top-down)"), labelled(tiles[1], "classes (top-down)")]])


def write_figure_png(fig, path, dpi: int = 100) -> None:
    """A matplotlib figure laid out tightly and written as a PNG atomically; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    from semantic_mapping.atomic_files import atomic_write_bytes

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
