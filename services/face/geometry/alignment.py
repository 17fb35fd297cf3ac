"""Aligned crops in the conventions 3D-GANs were trained with, and their cameras.

FFHQ alignment (the procedure of the FFHQ dataset, which EG3D and PanoHead inherit): an oriented square
from the eye and mouth positions, roll removed. The HEAD framing enlarges it and moves it up so the
whole head with hair fits (PanoHead-like). The crop camera follows EG3D: radius 2.7 around (0, 0, 0.2),
focal 4.2647 crop widths, in their world frame (HeadForge's axes, EG3D units).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from services.core.cameras import PinholeCamera, intrinsics, look_at, orbit_position
from services.core.landmarks import LEFT_EYE, RIGHT_EYE

EG3D_RADIUS = 2.7
EG3D_TARGET = (0.0, 0.0, 0.2)
EG3D_FOCAL = 4.2647  # in units of the crop size
HEAD_SCALE = 1.3     # HEAD crop side / FFHQ crop side
HEAD_SHIFT = 0.08    # HEAD crop centre moves up by this fraction of the FFHQ side


@dataclass
class AlignedCrop:
    image: np.ndarray       # (S, S, 3) uint8
    transform: np.ndarray   # (2, 3) input pixels -> crop pixels
    camera: PinholeCamera   # EG3D-convention camera of the crop
    eg3d_label: np.ndarray  # (25,) cam2world (16) + normalised intrinsics (9)


def ffhq_quad(lm68: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre c (2,), half-axis x (2,) pointing image-right and half-axis y (2,) pointing down the face."""
    eye_left, eye_right = lm68[LEFT_EYE].mean(0), lm68[RIGHT_EYE].mean(0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm68[48] + lm68[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    return c, x, y


def crop_transform(lm68: np.ndarray, size: int, style: str) -> np.ndarray:
    """(2, 3) affine mapping input pixels to the size x size crop, for style "ffhq" or "head"."""
    c, x, y = ffhq_quad(lm68)
    if style == "head":
        c = c - y * 2 * HEAD_SHIFT
        x, y = x * HEAD_SCALE, y * HEAD_SCALE
    src = np.float32([c - x - y, c - x + y, c + x - y])  # top-left, bottom-left, top-right
    dst = np.float32([[0, 0], [0, size], [size, 0]])
    return cv2.getAffineTransform(src, dst).astype(np.float64)


def warp(image: np.ndarray, transform: np.ndarray, size: int, interpolation=cv2.INTER_LINEAR,
         border=cv2.BORDER_REFLECT) -> np.ndarray:
    """Apply a (2, 3) affine, low-pass filtering first when it shrinks, so the crop does not alias."""
    scale = np.sqrt(abs(np.linalg.det(transform[:, :2])))
    if scale < 0.7 and interpolation != cv2.INTER_NEAREST:
        sigma = 0.5 / scale
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)
    return cv2.warpAffine(image, transform, (size, size), flags=interpolation, borderMode=border)


def crop_camera(yaw: float, pitch: float, size: int, style: str) -> tuple[PinholeCamera, np.ndarray]:
    """EG3D camera of an aligned crop of a head with the given yaw/pitch (degrees), and its 25-d label."""
    eye = orbit_position(-yaw, -pitch, EG3D_RADIUS, EG3D_TARGET)
    w2c = look_at(eye, EG3D_TARGET)
    f, cy = EG3D_FOCAL * size, size / 2
    if style == "head":
        f = f / HEAD_SCALE
        cy = size / 2 + size * 2 * HEAD_SHIFT / HEAD_SCALE / 2
    K = intrinsics(f, f, size / 2, cy)
    label = np.concatenate([np.linalg.inv(w2c).reshape(-1), (K / np.array([[size], [size], [1]])).reshape(-1)])
    return PinholeCamera(K, w2c, size, size), label.astype(np.float32)


def align(image: np.ndarray, lm68: np.ndarray, yaw: float, pitch: float, size: int = 512,
          style: str = "head") -> AlignedCrop:
    """The aligned crop of one face. image (H, W, 3) uint8; lm68 (68, 2) pixels; yaw/pitch degrees."""
    T = crop_transform(lm68, size, style)
    camera, label = crop_camera(yaw, pitch, size, style)
    return AlignedCrop(warp(image, T, size), T, camera, label)
