"""Landmark layouts: iBUG 68 -> ArcFace 5 points, and HeadForge's generic 3D 68-point face template.

The template is the project's own: average adult facial proportions laid out by hand in the head frame
(+Y up, face along +Z, 1 unit = 10 cm so the head radius is about 1), mirror-symmetric about x = 0.
It only anchors pose estimation and depth; per-subject 3D landmarks come from fitting it to the photo.
"""

from __future__ import annotations

import numpy as np

# Half-face points in centimetres (x <= 0: the subject's right = image left in a frontal photo),
# indexed by iBUG 68 number. The other half is the mirror image (see MIRROR_68).
_HALF_CM = {
    # jaw, from the ear attachment down to the chin
    0: (-7.0, 1.5, 1.0), 1: (-6.9, -0.5, 1.5), 2: (-6.6, -2.6, 1.8), 3: (-6.1, -4.6, 2.4),
    4: (-5.3, -6.4, 3.4), 5: (-4.2, -7.8, 4.8), 6: (-3.0, -8.8, 6.4), 7: (-1.6, -9.4, 8.0), 8: (0.0, -9.6, 8.6),
    # brow, outer to inner
    17: (-5.2, 4.3, 6.8), 18: (-4.2, 5.0, 8.2), 19: (-3.0, 5.2, 9.0), 20: (-1.9, 5.0, 9.5), 21: (-0.9, 4.6, 9.8),
    # nose bridge (midline) and lower nose
    27: (0.0, 3.2, 9.6), 28: (0.0, 1.6, 10.3), 29: (0.0, 0.1, 11.0), 30: (0.0, -1.3, 11.7),
    31: (-1.5, -2.2, 9.6), 32: (-0.8, -2.5, 10.2), 33: (0.0, -2.6, 10.6),
    # eye: outer corner, upper outer, upper inner, inner corner, lower inner, lower outer
    36: (-4.6, 2.4, 7.2), 37: (-3.7, 3.0, 8.0), 38: (-2.6, 3.0, 8.3), 39: (-1.7, 2.4, 8.2),
    40: (-2.6, 2.0, 8.2), 41: (-3.7, 2.0, 8.0),
    # outer lip: corner, upper, upper-mid (51 midline), lower (57 midline)
    48: (-2.5, -5.0, 8.3), 49: (-1.6, -4.3, 9.2), 50: (-0.6, -4.0, 9.7), 51: (0.0, -4.1, 9.8),
    59: (-1.6, -5.7, 9.0), 58: (-0.7, -6.0, 9.4), 57: (0.0, -6.1, 9.5),
    # inner lip
    60: (-2.2, -5.0, 8.5), 61: (-0.8, -4.8, 9.4), 62: (0.0, -4.8, 9.6), 67: (-0.8, -5.1, 9.4), 66: (0.0, -5.1, 9.6),
}

# iBUG index -> its mirror partner across the face's midline.
MIRROR_68 = {
    **{i: 16 - i for i in range(17)},
    **{17 + i: 26 - i for i in range(5)},
    31: 35, 32: 34, 33: 33, 27: 27, 28: 28, 29: 29, 30: 30,
    36: 45, 37: 44, 38: 43, 39: 42, 40: 47, 41: 46,
    48: 54, 49: 53, 50: 52, 51: 51, 59: 55, 58: 56, 57: 57,
    60: 64, 61: 63, 62: 62, 67: 65, 66: 66,
}


def _build_template() -> np.ndarray:
    pts = np.full((68, 3), np.nan)
    for i, p in _HALF_CM.items():
        pts[i] = p
        j = MIRROR_68[i]
        pts[j] = (-p[0], p[1], p[2])
    assert not np.isnan(pts).any(), "template misses points"
    return pts / 10.0


TEMPLATE_68 = _build_template()
"""(68, 3) generic 3D landmarks in the head frame, head units (1 = 10 cm)."""

ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
"""The 5-point positions ArcFace-family recognisers were trained with, in a 112x112 crop."""

JAW = slice(0, 17)
LEFT_BROW = slice(17, 22)     # image-left brow (the subject's right)
RIGHT_BROW = slice(22, 27)
NOSE = slice(27, 36)
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
MOUTH = slice(48, 68)


def five_from_68(lm68: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG points -> (5, 2) ArcFace order: left eye centre, right eye centre, nose tip, left and
    right mouth corners (left/right as seen in the image)."""
    return np.stack([lm68[LEFT_EYE].mean(0), lm68[RIGHT_EYE].mean(0), lm68[30], lm68[48], lm68[54]])
