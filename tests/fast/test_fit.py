"""Fitting the template to a real photo: landmarks first, then the silhouette through the render service
(in-process, and once over gRPC against a real render server process)."""

from __future__ import annotations

import numpy as np
from orchestrator.head_template.fit import (fit_to_landmarks, landmark_error, rbf_deform, refine_silhouette)


def test_rbf_deform_hits_its_controls_and_is_smooth():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 3))
    dst = src + rng.normal(scale=0.05, size=(20, 3))
    np.testing.assert_allclose(rbf_deform(src, src, dst, smooth=0.0), dst, atol=1e-8)
    # far from the controls the map is the affine part: a translation stays a translation
    far = np.array([[10.0, 10.0, 10.0]])
    np.testing.assert_allclose(rbf_deform(far, src, src + [0.1, 0, 0], smooth=0.0), far + [0.1, 0, 0], atol=1e-8)


def test_landmark_fit_brings_the_anchors_onto_the_photo(template, astronaut_face):
    rgb, face = astronaut_face
    before = landmark_error(template.vertices, template.anchors, face.camera, face.landmarks_68)
    v = fit_to_landmarks(template, face.landmarks_3d_68)
    after = landmark_error(v, template.anchors, face.camera, face.landmarks_68)
    face_px = face.box[2] - face.box[0]
    assert after < 0.25 * before and after < 0.03 * face_px, (before, after)
    # the rest of the head followed smoothly: no vertex jumped
    assert np.abs(v - template.vertices).max() < 0.6


def _silhouette(render_client, template, astronaut_face, steps):
    rgb, face = astronaut_face
    v = fit_to_landmarks(template, face.landmarks_3d_68)
    fit = refine_silhouette(render_client, template, v, face.camera, face.head_mask, face.landmarks_68, steps=steps)
    return v, fit, landmark_error(fit.vertices, template.anchors, face.camera, face.landmarks_68)


def test_silhouette_fit_through_the_render_service_matches_the_head_mask(template, astronaut_face, render_client):
    rgb, face = astronaut_face
    v, fit, err = _silhouette(render_client, template, astronaut_face, steps=12)
    assert fit.iou_after > fit.iou_before + 0.05, (fit.iou_before, fit.iou_after)
    assert fit.losses[-1] < fit.losses[0]
    assert err < 0.04 * (face.box[2] - face.box[0])            # the face stayed on its landmarks
    from tests.fast.test_template import check_clean_mesh

    check_clean_mesh(fit.vertices, template.faces, template.cols)   # still a clean, unfolded mesh


def test_silhouette_fit_over_grpc_matches_in_process(template, astronaut_face, render_client, render_server):
    from services.render.client import GrpcRenderClient

    client = GrpcRenderClient(render_server.address, timeout_s=60)
    client.wait_ready()
    try:
        _, remote, _ = _silhouette(client, template, astronaut_face, steps=3)
    finally:
        client.close()
    _, local, _ = _silhouette(render_client, template, astronaut_face, steps=3)
    assert remote.iou_after > remote.iou_before
    np.testing.assert_allclose(remote.vertices, local.vertices, atol=2e-3)


def test_dense_fit_puts_the_face_on_the_mediapipe_points(template, astronaut_face):
    """The 468 face-mesh points (head frame) end up on the surface; the head away from the face does not
    move; the 68 landmarks stay where the landmark fit put them (in the photo)."""
    from orchestrator.head_template.dense_fit import _zones, fit_dense

    rgb, face = astronaut_face
    assert face.landmarks_3d_478 is not None            # the default detector (auto) found it with MediaPipe
    v0 = fit_to_landmarks(template, face.landmarks_3d_68)
    fit = fit_dense(template, v0, face.landmarks_3d_478)
    assert fit.points_used == 468
    assert fit.rms_before > 0.02 and fit.rms_after < 0.3 * fit.rms_before and fit.rms_after < 0.07, fit
    _, moving, _ = _zones(template)
    still = np.setdiff1d(np.arange(len(v0)), moving)
    np.testing.assert_array_equal(fit.vertices[still], v0[still])
    face_px = face.box[2] - face.box[0]
    assert landmark_error(fit.vertices, template.anchors, face.camera, face.landmarks_68) < 0.03 * face_px
    from tests.fast.test_template import check_clean_mesh

    check_clean_mesh(fit.vertices, template.faces, template.cols)


def test_dense_fit_follows_a_known_shape(template):
    """A nose 1 cm longer: points on the template pushed out along the normals round the nose tip come back
    as a surface pushed out by about that much there, and nowhere far from it."""
    from orchestrator.head_template.dense_fit import face_area, fit_dense, vertex_normals

    v0 = template.vertices
    n = vertex_normals(v0, template.faces)
    tip = template.anchors[30]
    area = np.flatnonzero(face_area(template))
    rng = np.random.default_rng(0)
    pick = rng.choice(area, 468, replace=False)
    r = np.linalg.norm(v0[pick] - v0[tip], axis=1)
    bump = 0.1 * np.exp(-(r / 0.15) ** 2)
    fit = fit_dense(template, v0, v0[pick] + n[pick] * bump[:, None])
    moved = np.einsum("ij,ij->i", fit.vertices - v0, n)
    assert 0.07 < moved[tip] < 0.12, moved[tip]
    far = np.linalg.norm(v0 - v0[tip], axis=1) > 0.6
    assert np.abs(moved[far]).max() < 0.01
    assert fit.rms_after < 0.25 * fit.rms_before
