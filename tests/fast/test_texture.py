"""Texture completion in the template's UV layout: symmetry, smooth fill, photo tones."""

from __future__ import annotations

import numpy as np

from orchestrator.texture import (PhotoTones, complete_texture, mirror_fill, photo_tones, push_pull, region_map,
                                  REGION_EAR, REGION_NECK, REGION_SCALP)


def test_mirror_fill_copies_the_seen_side_onto_the_unseen_side():
    T = 64
    rng = np.random.default_rng(1)
    tex = rng.uniform(size=(T, T, 3)).astype(np.float32)
    vis = np.zeros((T, T), np.float32)
    vis[:, : T // 2] = 0.9                     # only the left half seen, head-on
    seen = np.where(vis[..., None] > 0, tex, 0)
    out, conf, mirrored = mirror_fill(seen, vis)
    np.testing.assert_allclose(out[:, : T // 2], tex[:, : T // 2], atol=1e-6)        # seen texels untouched
    np.testing.assert_allclose(out[:, T // 2:], tex[:, : T // 2][:, ::-1], atol=1e-6)  # u -> 1 - u
    assert mirrored[:, T // 2:].all() and not mirrored[:, : T // 2].any()
    # a texel seen well on both sides keeps its own colour (asymmetric features survive)
    vis_both = np.full((T, T), 0.9, np.float32)
    out2, _, mirrored2 = mirror_fill(tex, vis_both)
    np.testing.assert_allclose(out2, tex, atol=1e-6)
    assert not mirrored2.any()


def test_push_pull_keeps_known_texels_and_fills_smoothly():
    T = 64
    img = np.zeros((T, T, 3), np.float32)
    w = np.zeros((T, T), np.float32)
    img[:, :8] = [1, 0, 0]
    w[:, :8] = 1
    img[:, 32:40] = [0, 0, 1]
    w[:, 32:40] = 1
    out = push_pull(img, w)
    np.testing.assert_allclose(out[w > 0], img[w > 0])
    assert out.min() >= 0 and out.max() <= 1
    # between the red and the blue band the fill goes from red to blue
    row = out[T // 2]
    assert row[10, 0] > row[30, 0] and row[30, 2] > row[10, 2]
    # and wraps round the seam: the texels left of column 0 lean to red, not blue
    assert row[-2, 0] > row[-2, 2]


def test_region_map_and_completion_use_hair_and_skin_tones(template):
    T = 128
    regions = region_map(template, T)
    assert (regions[:5] == REGION_SCALP).all()             # the crown
    assert (regions[-3:] == REGION_NECK).mean() > 0.9      # the neck cut
    assert (regions == REGION_EAR).any()
    tones = PhotoTones(np.array([0.8, 0.6, 0.5], np.float32), np.array([0.2, 0.1, 0.05], np.float32), 500, 500)
    tex = np.zeros((T, T, 3), np.float32)
    vis = np.zeros((T, T), np.float32)
    out, stats = complete_texture(tex, vis, template, tones)   # nothing seen: the priors alone
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out[2, T // 4], tones.hair, atol=0.05)        # back of the crown: hair
    assert stats["inpainted_texels"] == 1.0


def test_photo_tones_of_a_real_portrait(astronaut_face):
    rgb, face = astronaut_face
    tones = photo_tones(rgb, face.landmarks_68, face.head_mask, face.face_mask)
    # skin is lighter and redder than her brown hair
    assert tones.skin.mean() > tones.hair.mean() + 0.15
    assert tones.skin[0] > tones.skin[2] and tones.hair[0] > tones.hair[2]
    assert tones.hair_pixels > 500 and tones.skin_pixels > 500
