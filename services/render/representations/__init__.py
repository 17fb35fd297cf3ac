"""Scene kinds by name: the class, how to create it from CreateScene's init values or an asset file,
and which options it accepts. Imports are lazy so a server only loads what it uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from services.common.errors import InvalidArgument

KINDS = ("gaussians", "mesh", "dmtet", "triplane", "trigrid", "pyramid_trigrid")


@dataclass
class KindSpec:
    cls: type
    create: Callable[[dict, int, dict, Any], Any]      # (init, seed, options, limits) -> Representation
    from_asset: Callable[[bytes, str, dict], Any]       # (data, fmt, options) -> Representation
    options: dict[str, str]                             # accepted CreateScene options, described
    export_formats: tuple[str, ...]
    regularizers: tuple[str, ...]                       # names accepted by ApplyGradients


def _nonzero(init: dict, key: str, default):
    value = init.get(key)
    return default if value is None or (not isinstance(value, bool) and value == 0) else value


def _gaussians() -> KindSpec:
    from services.render.representations.gaussians import GaussiansConfig, GaussianScene
    from services.render.representations.gaussians_strategy import GaussianStrategyConfig

    def config(init: dict, options: dict, limits) -> GaussiansConfig:
        d = GaussiansConfig()
        s = GaussianStrategyConfig()
        for key, value in (init.get("strategy") or {}).items():
            if key == "disabled" or (key == "opacity_reset_every" and value < 0):
                setattr(s, key, value)
            elif value:
                setattr(s, key, type(getattr(s, key))(value))
        s.max_gaussians = min(s.max_gaussians or limits.max_gaussians, limits.max_gaussians)
        num = int(_nonzero(init, "num_points", d.num_points))
        if num > limits.max_gaussians:
            raise InvalidArgument("gaussians.num_points", f"{num} exceeds the server cap of {limits.max_gaussians}")
        try:
            extent, tile = float(options.get("extent", 0) or 0), int(options.get("tile_size", d.tile_size))
        except ValueError as e:
            raise InvalidArgument("options", f"extent must be a number and tile_size an integer: {e}") from None
        if tile not in (8, 16, 32):
            raise InvalidArgument("options.tile_size", f"must be 8, 16 or 32, got {tile}")
        return GaussiansConfig(num_points=num, radius=float(_nonzero(init, "radius", d.radius)),
                               points=init.get("points"), colors=init.get("colors"),
                               sh_degree=int(init.get("sh_degree") or 0),
                               opacity=float(_nonzero(init, "opacity", d.opacity)), strategy=s,
                               extent=extent, backend=options.get("backend", "auto"), tile_size=tile)

    def from_asset(data: bytes, fmt: str, options: dict):
        kw = {"backend": options.get("backend", "auto")}
        if fmt == "ply":
            return GaussianScene.from_ply(data, **kw)
        if fmt == "npz":
            return GaussianScene.from_npz(data, **kw)
        raise InvalidArgument("asset.format", f"a Gaussian scene is created from PLY or NPZ, not {fmt}")

    return KindSpec(GaussianScene, lambda init, seed, options, limits: GaussianScene.create(
        config(init, options, limits), seed), from_asset,
        {"backend": "auto | torch | gsplat", "tile_size": "torch rasteriser tile side (16)",
         "extent": "scene size for learning rates and densification (0 = from the init)"}, ("ply", "npz"),
        ("opacity_entropy", "scale"))


def _mesh() -> KindSpec:
    from services.render.representations.mesh import MeshScene

    def create(init: dict, seed: int, options: dict, limits):
        if init.get("vertices") is None or init.get("faces") is None:
            raise InvalidArgument("mesh.vertices", "a mesh needs vertices and faces (or create it from an asset)")
        return MeshScene.create(init["vertices"], init["faces"], uvs=init.get("uvs"), texture=init.get("texture"),
                                texture_size=int(init.get("texture_size") or 0), max_triangles=limits.max_triangles,
                                backend=options.get("backend", "auto"),
                                flat_normals=options.get("flat_normals", "false") == "true")

    def from_asset(data: bytes, fmt: str, options: dict):
        return MeshScene.from_asset(data, fmt or None, backend=options.get("backend", "auto"))

    return KindSpec(MeshScene, create, from_asset,
                    {"backend": "auto | torch | nvdiffrast", "flat_normals": "true: face normals"},
                    ("glb", "obj_zip", "ply", "npz"), ("laplacian", "normal_consistency", "edge_length"))


def _dmtet() -> KindSpec:
    from services.render.representations.dmtet import DmtetScene

    def create(init: dict, seed: int, options: dict, limits):
        mesh = init.get("mesh")
        mesh_arg = (mesh["vertices"], mesh["faces"]) if mesh else None
        return DmtetScene.create(int(init.get("grid_resolution") or 128), float(init.get("extent") or 1.2),
                                 sphere_radius=init.get("sphere_radius"), mesh=mesh_arg,
                                 color_field=options.get("color_field", "false") == "true",
                                 backend=options.get("backend", "auto"), max_triangles=limits.max_triangles)

    def from_asset(data: bytes, fmt: str, options: dict):
        from services.render.representations import mesh_io

        m = mesh_io.load_mesh(data, fmt or None, mesh_io.DEFAULT_MAX_TRIANGLES)
        return DmtetScene.create(int(options.get("grid_resolution", 128)), float(options.get("extent", 1.2)),
                                 mesh=m, color_field=options.get("color_field", "false") == "true",
                                 backend=options.get("backend", "auto"))

    return KindSpec(DmtetScene, create, from_asset,
                    {"backend": "auto | torch | nvdiffrast", "color_field": "true: a per-vertex colour field",
                     "grid_resolution": "for asset init (128)", "extent": "for asset init (1.2)"},
                    ("glb", "obj_zip", "ply", "npz"), ("sdf_sign", "laplacian", "normal_consistency"))


def _field(kind: str) -> KindSpec:
    from services.render.representations import fields

    cls = {"triplane": fields.TriplaneRepresentation, "trigrid": fields.TrigridRepresentation,
           "pyramid_trigrid": fields.PyramidTrigridRepresentation}[kind]

    def from_asset(data: bytes, fmt: str, options: dict):
        if fmt != "npz":
            raise InvalidArgument("asset.format", f"a {kind} scene is created from NPZ, not {fmt}")
        return cls.from_npz(data, options)

    return KindSpec(cls, lambda init, seed, options, limits: cls.create(init, seed=seed, options=options),
                    from_asset, dict(fields.OPTIONS), ("npz",), ("tv", "l1"))


_BUILDERS = {"gaussians": _gaussians, "mesh": _mesh, "dmtet": _dmtet, "triplane": lambda: _field("triplane"),
             "trigrid": lambda: _field("trigrid"), "pyramid_trigrid": lambda: _field("pyramid_trigrid")}
_CACHE: dict[str, KindSpec] = {}


def kind_spec(kind: str) -> KindSpec:
    """The KindSpec of a scene kind; InvalidArgument for unknown names."""
    if kind not in _BUILDERS:
        raise InvalidArgument("kind", f"unknown scene kind {kind!r}; known: {list(KINDS)}")
    if kind not in _CACHE:
        _CACHE[kind] = _BUILDERS[kind]()
    return _CACHE[kind]
