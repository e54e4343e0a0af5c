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
