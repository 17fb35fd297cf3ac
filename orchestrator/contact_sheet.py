"""The contact sheet of every recipe: the input, the protocol views with their identity distances,
shaded geometry, the texture and the evaluation's figures in one picture (contact_sheet.png)."""

from __future__ import annotations

import cv2
import numpy as np


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    cv2.rectangle(out, (4, 4), (12 + w, 12 + h), (255, 255, 255), -1)
    cv2.putText(out, text, (8, 8 + h), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    return out


def _tile(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = size / max(h, w)
    r = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    out = np.full((size, size, 3), 255, np.uint8)
    y, x = (size - r.shape[0]) // 2, (size - r.shape[1]) // 2
    out[y:y + r.shape[0], x:x + r.shape[1]] = r
    return out


def shade_normals(normals: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """A grey Lambert picture of world normals (3, H, W) for looking at the geometry."""
    light = np.array([0.35, 0.45, 1.0])
    light = light / np.linalg.norm(light)
    s = np.clip((normals * light[:, None, None]).sum(0), 0, 1) * 0.75 + 0.2
    img = s * alpha + 0.86 * (1 - alpha)
    return (np.repeat(img[..., None], 3, 2) * 255).astype(np.uint8)


def contact_sheet(photo: np.ndarray | None, renders: dict[str, np.ndarray], geometry: list[np.ndarray],
                  texture: np.ndarray | None, metrics: dict, tile: int = 256, head_box=None) -> np.ndarray:
    """(3 tile, 5 tile, 3) uint8: input | photo camera | frontal | +-30 ; +-45 | +-90 | rear ;
    geometry x3 | texture | figures. photo / texture None (text recipes, non-mesh scenes), a missing
    render or missing figures give a labelled blank tile. renders: uint8 (H, W, 3) by view name
    (evaluation.evaluate_scene's); texture float (T, T, 3) in [0, 1]; head_box crops the photo-camera view."""
    views = metrics.get("views", {})

    def blank(text: str) -> np.ndarray:
        return _label(np.full((tile, tile, 3), 255, np.uint8), text)

    def view(name: str, text: str) -> np.ndarray:
        return _label(_tile(renders[name], tile), text) if name in renders else blank(f"{name}: none")

    def lab(name: str) -> str:
        v = views.get(name)
        if not v or "face_found" not in v:   # no identity check on this view (no photo)
            return name
        return f"{name} d={v['distance']:.2f}" if v.get("distance") is not None else f"{name} no face"

    ref_view = renders.get("reference_view")
    if ref_view is not None and head_box is not None:   # the photo's camera, cropped to the head
        x0, y0, x1, y1 = (int(round(v)) for v in head_box)
        H, W = ref_view.shape[:2]
        pad = np.pad(ref_view, ((H, H), (W, W), (0, 0)), mode="edge")
        ref_view = pad[y0 + H:y1 + H, x0 + W:x1 + W]
    row1 = [_label(_tile(photo, tile), "input") if photo is not None else blank("no photo"),
            _label(_tile(ref_view, tile), "photo camera") if ref_view is not None else blank("no photo camera"),
            view("frontal", lab("frontal")), view("left_frontal", lab("left_frontal")),
            view("right_frontal", lab("right_frontal"))]
    row2 = [view(n, lab(n)) for n in ("yaw_+45", "yaw_-45", "left", "right")]
    row2.append(view("rear", "rear"))
    row3 = [_label(_tile(g, tile), "geometry") for g in geometry[:3]]
    row3 += [blank("geometry") for _ in range(3 - len(row3))]
    row3.append(_label(_tile((texture * 255).astype(np.uint8), tile), "texture") if texture is not None
                else blank("no texture"))
    row3.append(np.full((tile, tile, 3), 255, np.uint8))

    def figure(key: str, fmt: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None or isinstance(value, str) else format(value, fmt)

    sp = metrics.get("same_person_views")
    text = ([f"same person: {sp['count']} of {sp['of']} views"] if sp else []) + [
            f"ID (mean cos, 4 views) {figure('identity_similarity', '.3f')}",
            f"PSNR {figure('psnr_db', '.2f')} dB  SSIM {figure('ssim', '.3f')}",
            f"LPIPS / CLIP-I: {figure('lpips', '')} / {figure('clip_i', '')}"]
    for k, t in enumerate(text):
        cv2.putText(row3[-1], t[:34], (6, 30 + 26 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (20, 20, 20), 1, cv2.LINE_AA)
    return np.concatenate([np.concatenate(r, 1) for r in (row1, row2, row3)], 0)
