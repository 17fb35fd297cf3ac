"""The evaluation protocol's pieces: PSNR/SSIM over a mask, CLIP-I with weights given (a tiny random CLIP
in the real Hugging Face folder format: its numbers mean nothing, it proves the path), views."""

from __future__ import annotations

import numpy as np

from orchestrator.evaluation import (PROTOCOL_VIEWS, Reference, _clip_similarity, evaluate_scene, psnr_ssim,
                                     view_camera)


def test_psnr_ssim_over_a_mask():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    psnr, ssim = psnr_ssim(a, a, mask)
    assert psnr == float("inf") and abs(ssim - 1) < 1e-9
    b = a.copy()
    b[~mask] = 0                                  # differences outside the mask do not count...
    assert psnr_ssim(b, a, mask)[0] == float("inf")
    c = np.clip(a.astype(int) + 16, 0, 255).astype(np.uint8)
    p, s = psnr_ssim(c, a, mask)                 # ...inside they do
    assert 20 < p < 30 and s < 1


def test_protocol_views_follow_the_camera_convention():
    # left = +90: the camera on +X, which sees the subject's left side
    assert PROTOCOL_VIEWS["left"] == 90 and PROTOCOL_VIEWS["right"] == -90 and PROTOCOL_VIEWS["rear"] == 180
    assert view_camera(90).position[0] > 6 and view_camera(0).position[2] > 6


def _tiny_clip(folder):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    text = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, vocab_size=99,
                max_position_embeddings=16)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


def test_clip_i_with_weights_given(astronaut_head, face_client, render_client, astronaut_face, tmp_path):
    clip = _tiny_clip(tmp_path / "clip")
    rgb, face = astronaut_face
    assert abs(_clip_similarity(clip, [rgb], rgb) - 1.0) < 1e-5
    result, _ = astronaut_head
    scene = render_client.create_scene("mesh", asset=(result.glb.read_bytes(), "glb"))
    try:
        ref = Reference(rgb, face.camera, face.head_mask, face.embedding, face.embedding_norm)
        ev = evaluate_scene(render_client, face_client, scene.scene_id, ref, clip_model=clip)
    finally:
        render_client.close_scene(scene.scene_id)
    assert isinstance(ev.metrics["clip_i"], float) and -1 <= ev.metrics["clip_i"] <= 1
    assert ev.metrics["lpips"].startswith("not available")
    assert set(ev.renders) >= set(PROTOCOL_VIEWS) | {"reference_view", "frontal"}


def test_identity_definition_names_the_recogniser():
    from orchestrator.evaluation import identity_definition

    ada = identity_definition("adaface")
    assert "mean adaface cosine" in ada and "0 for a view where no face is found" in ada and "Portrait3D-ID" in ada
    assert "left_frontal, left, right_frontal, right" in ada
    assert "not their recogniser" in identity_definition("dlib")
