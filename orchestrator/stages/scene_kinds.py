"""What each render-service scene kind can do, as recipes are checked against it at load time (before any
service is called): its render outputs, regularisers and export formats, and the conversions HeadForge
has. This mirrors the render service's Describe (tests/orchestrator/test_recipe_flow.py compares them), so
the jobs service can validate a recipe without a render service."""

from __future__ import annotations

_BASE = frozenset({"rgb", "alpha", "depth", "normal_camera", "normal_world"})
_FIELD = {"outputs": _BASE, "regularizers": frozenset({"tv", "l1"}), "exports": frozenset({"npz", "glb", "ply", "obj_zip"})}

KINDS: dict[str, dict[str, frozenset[str]]] = {
    "gaussians": {"outputs": _BASE | {"albedo"}, "regularizers": frozenset({"opacity_entropy", "scale"}),
                  "exports": frozenset({"ply", "npz"})},
    "mesh": {"outputs": _BASE | {"albedo", "roughness", "metallic", "uv", "triangle_id", "texture_seen"},
             "regularizers": frozenset({"laplacian", "normal_consistency", "edge_length"}),
             "exports": frozenset({"glb", "obj_zip", "ply", "npz"})},
    "dmtet": {"outputs": _BASE | {"albedo", "roughness", "metallic", "triangle_id"}, "regularizers": frozenset({"sdf_sign", "laplacian", "normal_consistency"}),
              "exports": frozenset({"glb", "obj_zip", "ply", "npz"})},
    "dmtet_expression": {"outputs": _BASE | {"albedo", "roughness", "metallic", "triangle_id"},
                         "regularizers": frozenset({"sdf_sign", "laplacian", "normal_consistency"}),
                         "exports": frozenset({"glb", "obj_zip", "ply", "npz"})},
    "triplane": _FIELD, "trigrid": _FIELD, "pyramid_trigrid": _FIELD,
}

# (from, to) pairs of the convert stage (orchestrator/stages/scene.py)
CONVERSIONS = frozenset({("mesh", "gaussians"), ("mesh", "dmtet"), ("dmtet", "mesh"),
                         *((field, "mesh") for field in ("triplane", "trigrid", "pyramid_trigrid"))})
