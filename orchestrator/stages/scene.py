"""init, convert and export: the subject's scene in the render service, created once and restored from the job's
checkpoint after a restart (the render service may have restarted too)."""

from __future__ import annotations

import re

import numpy as np

from orchestrator.stages.context import StageContext
from orchestrator.stages.params import ConvertParams, ExportParams, InitParams, OptimizerParams
from orchestrator.stages.scene_kinds import CONVERSIONS
from services.common.errors import FailedPrecondition, HeadForgeError, InvalidArgument
from services.common.images import decode_png
from services.render.types import LrSchedule, OptimizerSpec

EXTENSIONS = {"glb": "glb", "ply": "ply", "npz": "npz", "obj_zip": "zip"}


def optimizer_spec(params: OptimizerParams | dict | None) -> OptimizerSpec:
    """The render service's OptimizerSpec of a stage's optimizer params (or their JSON dump)."""
    if params is None:
        return OptimizerSpec()
    if isinstance(params, dict):
        params = OptimizerParams.model_validate(params)
    lrs = {}
    for group, v in params.lrs.items():
        lrs[group] = LrSchedule.constant(float(v)) if isinstance(v, (int, float)) else \
            LrSchedule(int(v[0]), float(v[1]), float(v[2]), int(v[3]), interpolation=params.interpolation)
    return OptimizerSpec(kind=params.kind, lrs=lrs, frozen=set(params.frozen), betas=tuple(params.betas),
                         eps=params.eps, weight_decay=params.weight_decay, max_grad_norm=params.max_grad_norm)


def with_level_lrs(optimizer: OptimizerParams, groups) -> OptimizerParams:
    """optimizer with level_lrs written out as lrs of the pyramid levels among `groups` (names "level_<R>"),
    finest first; levels already in lrs keep theirs. Unchanged without level_lrs."""
    if not optimizer.level_lrs:
        return optimizer
    levels = sorted((g for g in groups if g.startswith("level_") and g[6:].isdigit()), key=lambda g: -int(g[6:]))
    if not levels:
        raise FailedPrecondition("optimizer level_lrs is for a pyramid tri-grid's levels; this scene has groups "
                                 f"{sorted(groups)}", reason="NO_PYRAMID_LEVELS")
    rule = optimizer.level_lrs
    lrs = {g: rule[min(i, len(rule) - 1)] for i, g in enumerate(levels)}
    return optimizer.model_copy(update={"lrs": {**lrs, **optimizer.lrs}})


def create_job_scene(ctx: StageContext, kind: str, init: dict | None = None, *, asset: tuple[bytes, str] | None = None,
                     optimizer: OptimizerParams | None = None, options: dict[str, str] | None = None,
                     seed: int = 0) -> str:
    """CreateScene as the job's scene (set_job_scene) with `optimizer`, its level_lrs written out for the new
    scene's levels (the scene is made again from its own state with them: the levels are known only once it
    exists). The stage's learning rates per group go into the report's optimizers section."""
    render = ctx.clients.render
    info = render.create_scene(kind, init, asset=asset, optimizer=optimizer_spec(optimizer), options=options or None,
                               seed=seed, label=ctx.job_id)
    if optimizer is not None and optimizer.level_lrs:
        optimizer = with_level_lrs(optimizer, info.param_counts)
        state = render.get_state(info.scene_id, exclude_optimizer=True)
        render.close_scene(info.scene_id)
        info = render.create_scene(kind, asset=(state, "checkpoint"), optimizer=optimizer_spec(optimizer),
                                   options=options or None, label=ctx.job_id)
    set_job_scene(ctx, kind, info.scene_id, optimizer, options)
    opt = optimizer or OptimizerParams()
    ctx.state.setdefault("report", {}).setdefault("optimizers", {})[ctx.stage] = {
        "kind": opt.kind, "lrs": {g: opt.lrs.get(g, "default") for g in sorted(info.param_counts) if g not in opt.frozen},
        "frozen": sorted(opt.frozen)}
    return info.scene_id


def _photo_colour(ctx: StageContext, n: int) -> np.ndarray:
    """(n, 3) float32: the photo's mean head colour (preprocess's reference view and mask)."""
    photo = decode_png(ctx.read_artifact(ctx.state["reference"]["image"]))[..., :3].astype(np.float32) / 255
    mask = decode_png(ctx.read_artifact(ctx.state["reference"]["mask"]))[..., 0] > 127
    mean = photo[mask].mean(0) if mask.any() else np.full(3, 0.5)
    return np.tile(mean, (n, 1)).astype(np.float32)


def _template_mesh(ctx: StageContext, fitted: bool) -> dict:
    """The head template's mesh (fitted: the template_fit stage's vertices) as mesh init values."""
    from orchestrator.head_template.build import load_template

    template = load_template()
    vertices = template.vertices
    if fitted:
        from orchestrator.stages.template_fit import load_fitted_vertices

        vertices = load_fitted_vertices(ctx)
    return {"vertices": np.asarray(vertices, np.float32), "faces": np.asarray(template.faces, np.int32)}


def _sphere_mesh(radius: float) -> dict:
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    return {"vertices": np.asarray(sphere.vertices, np.float32), "faces": np.asarray(sphere.faces, np.int32)}


def _init_values(ctx: StageContext, params: InitParams) -> tuple[dict | None, tuple[bytes, str] | None, dict]:
    """(init values, asset, options) of CreateScene for the init stage's representation and source."""
    kind, start = params.representation, params.start
    options: dict[str, str] = {}
    asset = (ctx.read_artifact(params.artifact), params.artifact.rsplit(".", 1)[-1]) if start == "artifact" else None
    if kind == "gaussians":
        if asset is not None:
            return None, asset, options
        g = params.gaussians
        init: dict = {"num_points": params.num_points, "radius": params.radius, "sh_degree": g.sh_degree,
                      "opacity": g.opacity, "strategy": g.strategy.model_dump()}
        if params.color_from_photo and "reference" in ctx.state:
            init["colors"] = _photo_colour(ctx, params.num_points)
        return init, None, options
    if kind == "mesh":
        if asset is not None:
            return None, asset, options
        mesh = _sphere_mesh(params.radius) if start == "sphere" else _template_mesh(ctx, start == "fitted_template")
        return {**mesh, "texture_size": params.texture}, None, options
    if kind in ("dmtet", "dmtet_expression"):
        init = {"grid_resolution": params.dmtet.grid_resolution, "extent": params.dmtet.extent,
                "texture_size": params.texture}
        if kind == "dmtet_expression":
            options.update(params.dmtet.options)
            init.update(expressions=len(params.dmtet.expressions), max_offset=params.dmtet.max_offset)
        elif params.dmtet.color_field:
            options["color_field"] = "true"
        if asset is not None:
            init["mesh_asset"] = asset
        elif start == "sphere":
            init["sphere_radius"] = params.radius
        else:
            init["mesh"] = _template_mesh(ctx, start == "fitted_template")
        return init, None, options
    f = params.field   # triplane, trigrid, pyramid_trigrid
    if f.decoder == "frozen":
        options["freeze_decoder"] = "true"
    if f.samples_per_ray:
        options["samples_per_ray"] = str(f.samples_per_ray)
    if f.importance_samples is not None:
        options["importance_samples"] = str(f.importance_samples)
    if start == "gan_sample":
        asset = (_gan_sample(ctx, params), "npz")
    if asset is not None:
        return None, asset, options
    init = {k: v for k, v in {"resolution": f.resolution, "channels": f.channels, "depth": f.depth,
                              "levels": tuple(f.levels), "box_size": f.box_size}.items() if v}
    return init, None, options


def _gan_sample(ctx: StageContext, params: InitParams) -> bytes:
    """The field NPZ of the inversion service's sample params.gan (its generator recorded in the report);
    FailedPrecondition GENERATOR_KIND_MISMATCH when the generator's field is not params.representation."""
    from orchestrator.stages.generators import export_gan_sample, record_generator

    info, data = export_gan_sample(ctx, params.gan)
    if info.kind != params.representation:
        raise FailedPrecondition(f"{ctx.stage}: generator {info.name!r} makes a {info.kind} field, not the "
                                 f"{params.representation} this stage asks for", reason="GENERATOR_KIND_MISMATCH")
    record_generator(ctx, info)
    ctx.add_report_section("init", {"gan_sample": {"generator": info.name, "seed": params.gan.seed,
                                                   "truncation_psi": params.gan.truncation_psi}})
    return data


def run_init(ctx: StageContext, params: InitParams) -> None:
    init, asset, options = _init_values(ctx, params)
    if params.representation == "dmtet_expression":   # what each code means, for the stages after
        ctx.state["expressions"] = list(params.dmtet.expressions)
    create_job_scene(ctx, params.representation, init, asset=asset, optimizer=params.optimizer_params(),
                     options=options, seed=ctx.seed + 1)


def set_job_scene(ctx: StageContext, kind: str, scene_id: str, optimizer: OptimizerParams | None = None,
                  options: dict[str, str] | None = None) -> None:
    """Make a live render-service scene the job's scene (of `kind`, with its optimiser and CreateScene
    options) and checkpoint it, so later stages and a restarted job find it (ensure_scene)."""
    ctx.state["scene"] = {"kind": kind, "optimizer": (optimizer or OptimizerParams()).model_dump(mode="json"),
                          "options": dict(options or {}), "live_id": scene_id}
    ctx.scratch["scene_id"] = scene_id
    ctx.checkpoint(ctx.clients.render.get_state(scene_id))


def ensure_scene(ctx: StageContext) -> str:
    """The scene id of this job. A resumed job (new process, or the render service restarted) gets its
    scene back from the last checkpoint."""
    if "scene_id" not in ctx.scratch:
        if "scene" not in ctx.state:
            raise FailedPrecondition(f"{ctx.stage} needs the job's scene: put a stage that makes one (init, "
                                     "template_texture) before it", reason="NO_SCENE")
        scene = ctx.state["scene"]
        if scene.get("live_id"):    # the previous worker's scene, if the render service still holds it
            try:
                ctx.clients.render.close_scene(scene["live_id"])
            except HeadForgeError:
                pass
        info = ctx.clients.render.create_scene(scene["kind"], asset=(ctx.read_artifact(ctx.state["scene_checkpoint"]),
                                                                     "checkpoint"),
                                               optimizer=optimizer_spec(scene.get("optimizer")),
                                               options=scene.get("options") or None, label=ctx.job_id)
        ctx.scratch["scene_id"] = scene["live_id"] = info.scene_id
    return ctx.scratch["scene_id"]


def use_optimizer(ctx: StageContext, optimizer: OptimizerParams) -> str:
    """Give the job's scene a new optimiser (a stage's own): the scene restarts from its current state
    without the old optimiser's moments. Returns the (new) scene id."""
    render = ctx.clients.render
    state = render.get_state(ensure_scene(ctx), exclude_optimizer=True)
    kind, options = ctx.state["scene"]["kind"], ctx.state["scene"].get("options") or {}
    close_scene(ctx)
    return create_job_scene(ctx, kind, asset=(state, "checkpoint"), optimizer=optimizer, options=options)


def close_scene(ctx: StageContext) -> None:
    """Free the job's scene in the render service (end of job, or cancelled)."""
    scene_id = ctx.scratch.pop("scene_id", None)
    if scene_id is not None:
        try:
            ctx.clients.render.close_scene(scene_id)
        except HeadForgeError:   # already gone (expired, or the service restarted)
            pass


def _mesh_to_gaussians(ctx: StageContext, params: ConvertParams) -> tuple[dict, None]:
    """Points sampled evenly over the exported GLB's surface, coloured by its texture."""
    import io

    import trimesh

    mesh = trimesh.load(io.BytesIO(ctx.clients.render.export(ensure_scene(ctx), "glb")), file_type="glb",
                        force="mesh")
    points, faces = trimesh.sample.sample_surface_even(mesh, params.num_points, seed=ctx.seed)
    colors = np.full((len(points), 3), 0.5, np.float32)
    visual = mesh.visual
    if isinstance(visual, trimesh.visual.TextureVisuals) and visual.uv is not None and visual.material is not None:
        bary = trimesh.triangles.points_to_barycentric(mesh.triangles[faces], points)
        uv = np.einsum("nk,nkj->nj", bary, visual.uv[mesh.faces[faces]])
        colors = visual.material.to_color(uv)[:, :3].astype(np.float32) / 255
    return {"points": points.astype(np.float32), "colors": colors}, None


def _surface_to_mesh(ctx: StageContext, params: ConvertParams) -> dict:
    """A DMTet's extracted surface, or a field's density surface (marching cubes), as a textured mesh: the
    render service unwraps it with xatlas (no UVs given); the texture starts as the surface's mean vertex
    colour, for a texture stage to paint."""
    import io

    import trimesh

    mesh = trimesh.load(io.BytesIO(ctx.clients.render.export(ensure_scene(ctx), "glb")), file_type="glb",
                        force="mesh")
    colours = getattr(mesh.visual, "vertex_colors", None)
    mean = np.asarray(colours, np.float32)[:, :3].mean(0) / 255 if colours is not None and len(colours) else np.full(3, 0.5)
    size = params.texture_size
    return {"vertices": np.asarray(mesh.vertices, np.float32), "faces": np.asarray(mesh.faces, np.int32),
            "texture": np.broadcast_to(mean.astype(np.float32)[:, None, None], (3, size, size)).copy(),
            "texture_size": size}


def run_convert(ctx: StageContext, params: ConvertParams) -> None:
    """Replace the job's scene by the same head in another representation (ConvertParams); the old scene
    is closed and the job continues on the new one, with the stage's optimiser."""
    source = ctx.state.get("scene", {}).get("kind")
    if (source, params.to) not in CONVERSIONS:
        raise FailedPrecondition(f"convert: {source} -> {params.to} is not a conversion HeadForge has; it has "
                                 f"{sorted(CONVERSIONS)}", reason="NO_CONVERSION")
    render = ctx.clients.render
    options: dict[str, str] = {}
    if params.to == "gaussians":
        init, asset = _mesh_to_gaussians(ctx, params)
    elif params.to == "dmtet":   # the mesh's SDF on the grid
        init = {"grid_resolution": params.dmtet.grid_resolution, "extent": params.dmtet.extent,
                "mesh_asset": (render.export(ensure_scene(ctx), "glb"), "glb")}
        asset = None
        options = {"color_field": "true"} if params.dmtet.color_field else {}
    else:                        # dmtet or field -> mesh
        init, asset = _surface_to_mesh(ctx, params), None
    close_scene(ctx)
    create_job_scene(ctx, params.to, init, asset=asset, optimizer=params.optimizer_params(), options=options,
                     seed=ctx.seed + 2)


def expression_slug(text: str) -> str:
    """An artifact-name-safe form of an expression text ("Jaw open!" -> "jaw_open")."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "expression"


def scene_expressions(ctx: StageContext) -> list[str]:
    """The expression texts of the job's dmtet_expression scene (its init stage's), in code order; else []."""
    if ctx.state.get("scene", {}).get("kind") != "dmtet_expression":
        return []
    return list(ctx.state.get("expressions") or [])


def run_export(ctx: StageContext, params: ExportParams) -> None:
    scene_id = ensure_scene(ctx)
    render = ctx.clients.render
    expressions = scene_expressions(ctx)
    if not expressions:
        if params.expression:
            raise InvalidArgument("expression", "the job's scene has no expressions")
        for fmt in params.formats:
            ctx.artifact(f"{params.stem}.{EXTENSIONS[fmt]}", render.export(scene_id, fmt, scale=params.scale_for(fmt)))
        return
    chosen = params.expression or expressions[0]
    if chosen not in expressions:
        raise InvalidArgument("expression", f"{chosen!r} is not one of the scene's expressions {expressions}")
    files = {}
    for fmt in params.formats:
        if fmt == "npz":   # the whole neural model: every expression at once
            ctx.artifact(f"{params.stem}.npz", render.export(scene_id, fmt))
            continue
        for index, text in enumerate(expressions):
            data = render.export(scene_id, fmt, scale=params.scale_for(fmt), expression=index)
            name = f"{params.stem}_{expression_slug(text)}.{EXTENSIONS[fmt]}"
            ctx.artifact(name, data)
            files.setdefault(text, []).append(name)
            if text == chosen:
                ctx.artifact(f"{params.stem}.{EXTENSIONS[fmt]}", data)
    ctx.add_report_section("expressions", {"texts": expressions, "exported": chosen, "files": files})
