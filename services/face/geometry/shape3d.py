"""A 3D face model's own 68 landmarks (3DDFA-V2's BFM shape) in the head frame of the 68-point pose fit.

The model's shape is already in head-frame axes (+Y up, face along +Z, x toward the subject's left) and
the fit's camera rotation came from the same model (services.face.geometry.pose.rotation_from_bfm), so
only a scale and a translation are fitted: the least-squares ones that carry the shape's eye, nose and
mouth points (dense.RIGID) onto the fit's landmarks_3d_68, giving head units (1 = 10 cm). The shape is
the model's, not moved onto the 2D landmarks' rays: projected with the fitted camera it lands near,
not exactly on, landmarks_68.
"""

from __future__ import annotations

import numpy as np

from services.face.geometry.dense import RIGID
from services.face.geometry.pose import HeadPoseFit


def head_frame_shape(shape: np.ndarray, fit: HeadPoseFit) -> np.ndarray:
    """(68, 3) model-frame points (any unit) -> (68, 3) head frame, head units."""
    src = np.asarray(shape, np.float64)
    a, b = src[RIGID], np.asarray(fit.landmarks_3d, np.float64)[RIGID]
    ca, cb = a.mean(0), b.mean(0)
    s = float(((a - ca) * (b - cb)).sum() / max(((a - ca) ** 2).sum(), 1e-12))
    return (src - ca) * s + cb
