"""A photo of a head turned 40 degrees, made by rendering the astronaut's own fast head (the only turned
face with a known pose we have: no registry package ships turned portraits) on a plain background:
- its yaw is read from MediaPipe's 3D face shape, not from the 2D landmarks alone, which say about half
  (services.face.geometry.pose);
- its head mask keeps out the background at the far side of the face, where the far jaw points and the
  forehead hull reach past the silhouette (services.face.geometry.masks.head_mask)."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.evaluation import to_uint8
from services.core.cameras import orbit_camera
from services.face.types import AnalyzeOptions

BACKGROUND = np.array([0.45, 0.5, 0.55])


@pytest.fixture(scope="module")
def turned(astronaut_head, render_client):
    """(image (640, 640, 3) uint8, silhouette (640, 640) bool) of the astronaut's head at azimuth 40 deg."""
    result, _ = astronaut_head
    scene = render_client.create_scene("mesh", asset=(result.glb.read_bytes(), "glb"))
    try:
        cam = orbit_camera(40.0, 0.0, 7.5, fov_deg=26.0, width=640, height=640, target=(0.0, -0.1, 0.0))
        out = render_client.render(scene.scene_id, [cam], ["rgb", "alpha"], background=BACKGROUND).outputs
    finally:
        render_client.close_scene(scene.scene_id)
    return to_uint8(out["rgb"][0]), out["alpha"][0, 0] > 0.5


def test_a_turned_head_is_seen_turned(turned, face_client):
    image, _ = turned
    face = face_client.analyze(image, AnalyzeOptions(skip_crop=True, skip_masks=True, skip_embedding=True)).faces[0]
    assert face.pose.yaw < -27, face.pose.yaw   # azimuth +40 = the head turned to its right (yaw < 0)


def test_a_turned_heads_mask_stays_on_the_head(turned, face_client):
    image, silhouette = turned
    face = face_client.analyze(image, AnalyzeOptions(skip_crop=True, skip_embedding=True)).faces[0]
    head = face.head_mask > 0
    outside = (head & ~silhouette).sum() / head.sum()
    assert outside < 0.01, f"{outside:.1%} of the head mask is background"
