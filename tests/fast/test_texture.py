"""Texture completion in the template's UV layout: symmetry, smooth fill, photo tones."""

from __future__ import annotations

import numpy as np

from orchestrator.texture import (PhotoTones, complete_texture, mirror_fill, photo_tones, push_pull, region_map,
                                  REGION_EAR, REGION_NECK, REGION_SCALP, REGION_SKIN)


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


def test_mirror_is_gated_by_the_photos_yaw_and_a_better_mirrored_view():
    from orchestrator.texture import yaw_mirror_weight

    assert yaw_mirror_weight(0) == 1 and yaw_mirror_weight(-10) == 1 and yaw_mirror_weight(35) == 0
    assert 0 < yaw_mirror_weight(20) < 1 and yaw_mirror_weight(20) == yaw_mirror_weight(-20)
    T = 64
    rng = np.random.default_rng(2)
    tex = rng.uniform(size=(T, T, 3)).astype(np.float32)
    vis = np.zeros((T, T), np.float32)
    vis[:, : T // 2] = 0.9                     # the near side seen head-on
    vis[:, T // 2:] = 0.3                      # the far side grazing
    seen = np.where(vis[..., None] > 0, tex, 0)
    _, _, frontal = mirror_fill(seen, vis, yaw_mirror_weight(0))
    assert frontal[:, T // 2:].all()           # a frontal face: the grazing side takes its mirror
    out, _, turned = mirror_fill(seen, vis, yaw_mirror_weight(35))
    assert not turned.any()                    # turned 35 deg: no mirrored colour at all
    np.testing.assert_allclose(out, seen, atol=1e-6)
    # a mirror seen only a little better than the texel itself is not taken
    _, _, close = mirror_fill(seen, np.where(vis > 0.5, 0.5, 0.45).astype(np.float32), 1.0)
    assert not close.any()


def test_no_hard_step_where_the_photo_stops(template):
    T = 256
    tex = np.zeros((T, T, 3), np.float32)
    vis = np.zeros((T, T), np.float32)
    rows, cols = slice(90, 170), slice(100, 156)
    vis[rows, cols] = 0.9
    tex[rows, cols] = [0.8, 0.2, 0.2]
    # the photo's edge carries a one-texel fringe of background colour
    edge = np.zeros((T, T), bool)
    edge[rows, cols] = True
    inner = np.zeros((T, T), bool)
    inner[91:169, 101:155] = True
    tex[edge & ~inner] = [0.2, 0.9, 0.8]
    tones = PhotoTones(np.array([0.3, 0.3, 0.9], np.float32), np.array([0.2, 0.1, 0.05], np.float32), 500, 500)
    out, _ = complete_texture(tex, vis, template, tones)
    band = out[100:160, 80:176]
    step = np.abs(np.diff(band, axis=1)).max()
    assert step < 0.12, step                  # the fringe and the seen / unseen edge are feathered away
    assert np.abs(out[130, 128] - [0.8, 0.2, 0.2]).max() < 0.05   # the photo's middle is kept


def _paint_portrait(face):
    """A synthetic portrait in the astronaut's landmark frame: mint wall, skin face, brown hair cap, and a
    loose head mask that takes in a lot of wall."""
    import cv2

    h, w = face.face_mask.shape
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (90, 200, 170)                                             # mint wall
    head = face.head_mask > 0
    face_m = face.face_mask > 0
    img[head] = (150, 110, 80)                                          # light brown hair cap
    img[face_m] = (205, 160, 135)                                       # skin
    loose = cv2.dilate(face.head_mask.astype(np.uint8), np.ones((61, 61), np.uint8))
    return img, loose


def test_hair_tone_comes_from_hair_not_the_wall(astronaut_face):
    _, face = astronaut_face
    img, loose = _paint_portrait(face)
    tones = photo_tones(img, face.landmarks_68, loose, face.face_mask)
    np.testing.assert_allclose(tones.hair * 255, (150, 110, 80), atol=12)   # the wall is further from skin
    assert getattr(tones, "background", None) is not None and np.abs(tones.background * 255 - (90, 200, 170)).max() < 12


def test_hair_tone_of_obama_is_dark_not_the_wall(face_client):
    import os
    from PIL import Image
    import pytest
    from orchestrator.photo_intake import analyse_photo, prepare_image

    path = "/tmp/hf/wild_src/face_recognition-1.3.0/tests/test_images/obama.jpg"
    if not os.path.exists(path):
        pytest.skip("the face_recognition test photos are not here")
    rgb, face, _, _ = analyse_photo(face_client, prepare_image(np.asarray(Image.open(path).convert("RGB"))))
    hair = photo_tones(rgb, face.landmarks_68, face.head_mask, face.face_mask).hair
    # the wall behind him is mint-grey (g, b > r); his hair is grey-black
    assert hair[1] <= hair[0] + 0.02 and hair[2] <= hair[0] + 0.02 and hair.mean() < 0.6, hair


def test_unseen_scalp_gets_the_seen_hairs_structure(template):
    T = 256
    regions = region_map(template, T)
    rng = np.random.default_rng(3)
    import cv2

    strands = cv2.GaussianBlur(rng.normal(size=(T, T)).astype(np.float32), (0, 0), sigmaX=1, sigmaY=4)
    hair = np.clip(0.3 + 0.6 * strands[..., None] * [1, 0.8, 0.6], 0, 1).astype(np.float32)
    vis = np.zeros((T, T), np.float32)
    vis[:, 96:160] = 0.9                       # the front of the head seen, the back not
    tex = np.where(vis[..., None] > 0, hair, 0).astype(np.float32)
    tones = PhotoTones(np.array([0.8, 0.6, 0.5], np.float32), np.array([0.3, 0.24, 0.18], np.float32), 500, 500)
    out, _ = complete_texture(tex, vis, template, tones)

    def local_std(img, mask):
        m = cv2.blur(img, (9, 9))
        return float(np.sqrt(np.maximum(cv2.blur(img * img, (9, 9)) - m * m, 0)).mean(-1)[mask].mean())

    scalp = regions == REGION_SCALP
    seen = scalp & (vis > 0)
    back = scalp.copy()
    back[:, 40:216] = False                   # the back of the head, far from anything seen
    assert back.sum() > 500
    assert local_std(out, back) > 0.3 * local_std(out, seen), (local_std(out, back), local_std(out, seen))


def test_ears_are_skin_not_the_wall_or_the_hair(template):
    """The template's ears stand out past most photos' ears: where the photo gave them the wall's colour
    (a pale wall taken into the head mask beside white hair) they are dropped, and ears and neck are filled
    from the skin the photo showed, not from the hair round the ears."""
    T = 128
    regions = region_map(template, T)
    skin, hair, wall = np.array([0.7, 0.5, 0.4]), np.array([0.9, 0.9, 0.88]), np.array([0.95, 0.93, 0.85])
    tex = np.zeros((T, T, 3), np.float32)
    vis = np.zeros((T, T), np.float32)
    tex[regions == REGION_SKIN], vis[regions == REGION_SKIN] = skin, 0.9
    tex[regions == REGION_SCALP], vis[regions == REGION_SCALP] = hair, 0.9
    tex[regions == REGION_EAR], vis[regions == REGION_EAR] = wall, 0.6
    tones = PhotoTones(skin.astype(np.float32), hair.astype(np.float32), 1000, 1000, wall.astype(np.float32))
    out, _ = complete_texture(tex, vis, template, tones)
    ears = out[regions == REGION_EAR]
    assert np.linalg.norm(ears.mean(0) - skin) < 0.15, ears.mean(0)   # the wall and the hair are 0.5-0.6 away
    # a photo that shows real ears keeps them
    tex[regions == REGION_EAR] = skin * 0.9
    out, _ = complete_texture(tex, vis, template, tones)
    np.testing.assert_allclose(out[regions == REGION_EAR].mean(0), skin * 0.9, atol=0.05)
