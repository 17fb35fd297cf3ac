"""Control pictures in the service's conventions -> the inputs lllyasviel's SD1.5 ControlNets were trained on.

Service conventions (guidance.proto ControlInput): landmarks (3, H, W) in [0, 1], already drawn; canny
(1, H, W) edges in [0, 1] or (3, H, W) RGB to detect edges on; normal (3, H, W) in [-1, 1] OpenCV camera frame;
depth (1, H, W) world units, 0 = background. uint8 pictures are read as [0, 255].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _as_float(picture: np.ndarray) -> np.ndarray:
    """float32 copy; uint8 in [0, 255] -> [0, 1]."""
    picture = np.asarray(picture)
    if picture.dtype == np.uint8:
        return picture.astype(np.float32) / 255.0
    return picture.astype(np.float32)


def _resize(chw: np.ndarray, resolution: int) -> torch.Tensor:
    """(C, H, W) float -> (1, C, R, R) bilinear (antialiased when shrinking)."""
    t = torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32))[None]
    if t.shape[-2:] == (resolution, resolution):
        return t
    shrink = t.shape[-1] > resolution or t.shape[-2] > resolution
    return F.interpolate(t, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrink)


def normal_to_bae(normals: np.ndarray) -> np.ndarray:
    """OpenCV camera-frame unit normals (3, H, W) in [-1, 1] (x right, y down, z forward: a surface facing the
    camera has z < 0) -> the picture lllyasviel's control_v11p_sd15_normalbae was trained on.

    That ControlNet saw normal maps from Bae et al.'s estimator saved as (n + 1) / 2, which follow the ScanNet
    protocol: red = x pointing to the image's left, green = y up, blue = z toward the viewer (a surface facing
    the camera is (0.5, 0.5, 1), the familiar lavender). Each of those axes is the negated OpenCV axis
    (left = -right, up = -down, toward the viewer = -forward), so the colour is (1 - n) / 2 per channel.
    Zero vectors (background in a render) come out mid grey (0.5, 0.5, 0.5)."""
    n = np.clip(normals.astype(np.float32), -1.0, 1.0)
    return (1.0 - n) * 0.5


def depth_to_inverse(depth: np.ndarray) -> np.ndarray:
    """World depth (1, H, W), 0 = background -> normalised inverse depth in [0, 1]: d_near / d on the foreground
    (1 at the nearest point, the true ratio of inverse depths elsewhere, as a MiDaS-style relative inverse depth
    whose far end is at infinity), 0 on the background."""
    d = depth.astype(np.float32)
    fg = np.isfinite(d) & (d > 0)
    out = np.zeros_like(d)
    if fg.any():
        out[fg] = d[fg].min() / d[fg]
    return out


def controlnet_input(kind: str, picture: np.ndarray, resolution: int) -> torch.Tensor:
    """A control picture (C, H, W) of `kind` -> the ControlNet's input (1, 3, R, R) float32 in [0, 1] on the CPU.

    landmarks: the drawn picture, resized.
    canny: (1, H, W) edges, resized and replicated to 3 channels; or (3, H, W) RGB, resized to R, then
        cv2.Canny(100, 200) edges (as lllyasviel's annotator: resize, then detect).
    normal: (1 - n) / 2, the normalbae convention (see normal_to_bae), then resized.
    depth: d_near / d on the foreground, 0 on the background (see depth_to_inverse), resized, replicated.
    A custom kind ("") is treated like landmarks: a ready (C, H, W) picture in [0, 1]."""
    raw = np.asarray(picture)
    if raw.ndim != 3:
        raise ValueError(f"control picture must be (C, H, W), got shape {raw.shape}")
    if kind == "normal":
        n = raw.astype(np.float32) / 127.5 - 1.0 if raw.dtype == np.uint8 else raw.astype(np.float32)
        out = _resize(normal_to_bae(n[:3]), resolution)
    elif kind == "depth":
        out = _resize(depth_to_inverse(raw[:1].astype(np.float32)), resolution)
    elif kind == "canny" and raw.shape[0] == 3:
        import cv2

        rgb = (np.clip(_as_float(raw), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)
        h, w = rgb.shape[:2]
        interp = cv2.INTER_AREA if max(h, w) > resolution else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (resolution, resolution), interpolation=interp)
        edges = cv2.Canny(rgb, 100, 200).astype(np.float32) / 255.0
        out = torch.from_numpy(edges)[None, None]
    else:
        out = _resize(_as_float(raw), resolution)
    if out.shape[1] == 1:
        out = out.expand(-1, 3, -1, -1)
    return out.clamp(0.0, 1.0).contiguous()
