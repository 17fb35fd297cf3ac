"""MediaPipe's 478 points in the head frame of the 68-point pose fit (services.face.geometry.pose).

MediaPipe's x, y are image pixels and its z a relative depth in the same pixel scale (smaller = nearer
the camera), i.e. an orthographic shape in OpenCV camera axes up to scale. That shape is carried into
the head frame by the similarity transform (one scale for x, y and z, a rotation, a translation) that
best maps its eye, nose and mouth points (the iBUG 27-67 read off the mesh) onto the fitted
landmarks_3d_68, so it takes their units (head radius ~1) and axes (+Y up, face along +Z). Each point
is then moved, at its depth from the fitted camera, onto the ray through its 2D point, as the 68 are
personalised: projecting the result with the fitted camera gives landmarks_478 exactly.
"""

from __future__ import annotations

import numpy as np

from services.core.face_mesh import ibug68_from_478
from services.core.similarity import similarity_transform
from services.face.geometry.pose import HeadPoseFit

RIGID = slice(27, 68)  # nose, eyes, mouth: the iBUG points whose 3D template is trusted (not jaw, brows)


def head_frame_478(points: np.ndarray, fit: HeadPoseFit) -> np.ndarray:
    """(478, 3) MediaPipe points (x, y pixels, z relative depth in x's scale) -> (478, 3) head frame."""
    pts = np.asarray(points, dtype=np.float64)
    s, R, t = similarity_transform(ibug68_from_478(pts)[RIGID], fit.landmarks_3d[RIGID])
    head = pts @ (s * R).T + t
    cam = fit.camera
    Rc, tc = cam.world_to_camera[:3, :3], cam.world_to_camera[:3, 3]
    depth = (head @ Rc.T + tc)[:, 2:3]
    rays = np.c_[pts[:, :2], np.ones(len(pts))] @ np.linalg.inv(cam.K).T
    return (rays * depth - tc) @ Rc
