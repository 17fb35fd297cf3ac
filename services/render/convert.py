"""Proto <-> plain-type conversion for the render service (services/render/types.py), both directions.

The servicer parses requests with the *_from_proto functions (naming the bad field in InvalidArgument);
the gRPC client builds requests with the *_to_proto functions. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
from google.protobuf import timestamp_pb2

from headforge.v1 import common_pb2, render_pb2
from services.common import tensors
from services.common.errors import require
from services.core.cameras import PinholeCamera
from services.render.types import (DensifyResult, EnvironmentMap, GradientTerm, KindDescription, LrSchedule,
                                   OptimizerSpec, RenderDescription, RenderLimits)

SERVICE_NAME = render_pb2.DESCRIPTOR.services_by_name["RenderService"].full_name
KIND_NAMES = {render_pb2.SCENE_KIND_GAUSSIANS: "gaussians", render_pb2.SCENE_KIND_MESH: "mesh",
              render_pb2.SCENE_KIND_DMTET: "dmtet", render_pb2.SCENE_KIND_TRIPLANE: "triplane",
              render_pb2.SCENE_KIND_TRIGRID: "trigrid", render_pb2.SCENE_KIND_PYRAMID_TRIGRID: "pyramid_trigrid",
              render_pb2.SCENE_KIND_DMTET_EXPRESSION: "dmtet_expression"}
KIND_ENUMS = {v: k for k, v in KIND_NAMES.items()}
FORMAT_NAMES = {render_pb2.ASSET_FORMAT_GLB: "glb", render_pb2.ASSET_FORMAT_OBJ_ZIP: "obj_zip",
                render_pb2.ASSET_FORMAT_PLY: "ply", render_pb2.ASSET_FORMAT_NPZ: "npz",
                render_pb2.ASSET_FORMAT_CHECKPOINT: "checkpoint"}
FORMAT_ENUMS = {v: k for k, v in FORMAT_NAMES.items()}
_INTERP = {0: "linear", 1: "linear", 2: "exponential", 3: "cosine"}
_OPTIMIZERS = {0: "adam", render_pb2.OptimizerConfig.ADAM: "adam", render_pb2.OptimizerConfig.ADAN: "adan"}
WRITE_MODES = {0: "none", 1: "none", 2: "visible", 3: "unseen"}


def enum_value(value: int, names: dict, field: str):
    """names[value]; proto3 enums are open (any int32 arrives): an unknown value is INVALID_ARGUMENT."""
    require(value in names, field, f"unknown enum value {value}")
    return names[value]


def asset_format(value: int, field: str) -> str:
    """The format name of an AssetFormat value, "" for unspecified (then it is detected)."""
    return "" if value == 0 else enum_value(value, FORMAT_NAMES, field)


def timestamp(seconds_from_now: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int((time.time() + seconds_from_now) * 1e9))
    return ts


def optional_tensor(msg: common_pb2.Tensor, field: str, ndim=None) -> np.ndarray | None:
    """None for an unset tensor; a tensor with only a dtype set is decoded (and its dtype checked)."""
    if not msg.data and not msg.shape and not msg.dtype:
        return None
    return np.array(tensors.from_proto(msg, field, ndim=ndim))


def init_from_proto(req: render_pb2.CreateSceneRequest) -> dict:
    """The kind-specific init as a plain dict named like the proto fields (tensors as numpy)."""
    which = req.WhichOneof("init")
    if which == "gaussians":
        g = req.gaussians
        s = g.strategy
        return {"num_points": g.num_points, "radius": g.radius, "points": optional_tensor(g.points, "gaussians.points", 2),
                "colors": optional_tensor(g.colors, "gaussians.colors", 2), "sh_degree": g.sh_degree, "opacity": g.opacity,
                "strategy": {"disabled": s.disabled, "densify_every": s.densify_every, "densify_from": s.densify_from,
                             "densify_until": s.densify_until, "grad_threshold": s.grad_threshold,
                             "percent_dense": s.percent_dense, "prune_opacity": s.prune_opacity,
                             "opacity_reset_every": s.opacity_reset_every, "max_gaussians": s.max_gaussians}}
    if which == "mesh":
        return _mesh_init(req.mesh, "mesh")
    if which == "dmtet":
        d = req.dmtet
        out = {"grid_resolution": d.grid_resolution, "extent": d.extent, "texture_size": d.texture_size,
               "expressions": d.expressions, "code_dim": d.code_dim, "max_offset": d.max_offset}
        shape = d.WhichOneof("shape")
        if shape == "sphere_radius":
            out["sphere_radius"] = d.sphere_radius
        elif shape == "mesh":
            out["mesh"] = _mesh_init(d.mesh, "dmtet.mesh")
        elif shape == "mesh_asset":
            out["mesh_asset"] = d.mesh_asset
        return out
    if which == "field":
        f = req.field
        return {"resolution": f.resolution, "channels": f.channels, "depth": f.depth, "levels": list(f.levels),
                "box_size": f.box_size, "init_std": f.init_std}
    return {}


def _mesh_init(m: render_pb2.MeshInit, field: str) -> dict:
    out = {"vertices": optional_tensor(m.vertices, f"{field}.vertices", 2), "faces": optional_tensor(m.faces, f"{field}.faces", 2),
           "uvs": optional_tensor(m.uvs, f"{field}.uvs", 2), "texture": optional_tensor(m.texture, f"{field}.texture", 3),
           "texture_size": m.texture_size}
    if m.materials:
        out["materials"] = True
    for name in ("roughness", "metallic"):
        if m.HasField(name):
            out[name] = getattr(m, name)
    return out


def environment_from_proto(e: render_pb2.EnvironmentMap, field: str = "environment") -> EnvironmentMap | None:
    """None when unset (no values, no size); else a validated EnvironmentMap (InvalidArgument naming the field)."""
    if not e.values and not e.height and not e.width:
        return None
    require(e.height > 0 and e.width > 0, f"{field}.height", f"height and width must be > 0, got {e.height} x {e.width}")
    require(len(e.values) == 3 * e.height * e.width, f"{field}.values",
            f"expected 3 x {e.height} x {e.width} = {3 * e.height * e.width} values, got {len(e.values)}")
    values = np.asarray(e.values, dtype=np.float32).reshape(3, e.height, e.width)
    return EnvironmentMap.checked(values, e.rotation_y_deg, field)


def environment_to_proto(env: EnvironmentMap) -> render_pb2.EnvironmentMap:
    a = np.asarray(env.radiance, np.float32)
    return render_pb2.EnvironmentMap(values=a.ravel().tolist(), height=a.shape[1], width=a.shape[2],
                                     rotation_y_deg=float(env.rotation_y_deg))


def optimizer_from_proto(o: render_pb2.OptimizerConfig) -> OptimizerSpec:
    lrs, frozen = {}, set()
    for i, g in enumerate(o.groups):
        require(bool(g.name), f"optimizer.groups[{i}].name", "is empty")
        if g.frozen:
            frozen.add(g.name)
        if g.HasField("lr"):
            lr = g.lr
            require(all(np.isfinite([lr.start_value, lr.end_value])) and lr.start_value >= 0 and lr.end_value >= 0,
                    f"optimizer.groups[{i}].lr", "values must be finite and >= 0")
            lrs[g.name] = LrSchedule(lr.start_step, lr.start_value, lr.end_value, lr.end_step,
                                     enum_value(lr.interpolation, _INTERP, f"optimizer.groups[{i}].lr.interpolation"))
    kind = enum_value(o.kind, _OPTIMIZERS, "optimizer.kind")
    require(len(o.betas) in (0, 2 if kind == "adam" else 3), "optimizer.betas",
            f"{kind} takes {2 if kind == 'adam' else 3} betas, got {len(o.betas)}")
    require(all(0 <= b < 1 for b in o.betas), "optimizer.betas", "must lie in [0, 1)")
    require(np.isfinite(o.eps) and o.eps >= 0, "optimizer.eps", f"must be finite and >= 0, got {o.eps}")
    require(np.isfinite(o.weight_decay) and o.weight_decay >= 0, "optimizer.weight_decay",
            f"must be finite and >= 0, got {o.weight_decay}")
    require(np.isfinite(o.max_grad_norm) and o.max_grad_norm >= 0, "optimizer.max_grad_norm",
            f"must be finite and >= 0, got {o.max_grad_norm}")
    return OptimizerSpec(kind, lrs, frozen, tuple(o.betas), o.eps or 1e-8, o.weight_decay, o.max_grad_norm)


def cameras_from_proto(cams, field: str = "cameras") -> list[PinholeCamera]:
    require(len(cams) > 0, field, "at least one camera is needed")
    return [PinholeCamera.from_proto(c, f"{field}[{i}]") for i, c in enumerate(cams)]


def chunks(data: bytes, fmt: str, chunk_bytes: int):
    digest = hashlib.sha256(data).hexdigest()
    size = chunk_bytes or (1 << 20)
    for offset in range(0, max(len(data), 1), size):
        chunk = render_pb2.AssetChunk(offset=offset, data=data[offset:offset + size])
        if offset == 0:
            chunk.total_size, chunk.sha256, chunk.format = len(data), digest, FORMAT_ENUMS.get(fmt, 0)
        yield chunk


def sniff_format(data: bytes) -> str:
    if data[:4] == b"glTF":
        return "glb"
    if data[:4] == b"PK\x03\x04":
        return "npz" if b".npy" in data[:2048] else "obj_zip"
    if data[:3] == b"ply":
        return "ply"
    return "checkpoint"



def _t(a) -> common_pb2.Tensor:
    return tensors.to_proto(np.asarray(a))


def init_to_proto(req: render_pb2.CreateSceneRequest, kind: str, init: dict) -> None:
    def mesh(msg: render_pb2.MeshInit, m: dict) -> None:
        for name in ("vertices", "uvs", "texture"):
            if m.get(name) is not None:
                getattr(msg, name).CopyFrom(_t(np.asarray(m[name], np.float32)))
        if m.get("faces") is not None:
            msg.faces.CopyFrom(_t(np.asarray(m["faces"], np.int32)))
        msg.texture_size = int(m.get("texture_size", 0))
        msg.materials = bool(m.get("materials", False))
        for name in ("roughness", "metallic"):
            if m.get(name) is not None:
                setattr(msg, name, float(m[name]))

    if kind == "gaussians":
        g = req.gaussians
        g.num_points, g.radius = int(init.get("num_points", 0)), float(init.get("radius", 0))
        g.sh_degree, g.opacity = int(init.get("sh_degree", 0)), float(init.get("opacity", 0))
        for name in ("points", "colors"):
            if init.get(name) is not None:
                getattr(g, name).CopyFrom(_t(np.asarray(init[name], np.float32)))
        for key, value in (init.get("strategy") or {}).items():
            setattr(g.strategy, key, value)
    elif kind == "mesh":
        mesh(req.mesh, init)
    elif kind in ("dmtet", "dmtet_expression"):
        d = req.dmtet
        d.grid_resolution, d.extent = int(init.get("grid_resolution", 0)), float(init.get("extent", 0))
        d.texture_size = int(init.get("texture_size", 0))
        d.expressions, d.code_dim = int(init.get("expressions", 0)), int(init.get("code_dim", 0))
        d.max_offset = float(init.get("max_offset", 0))
        if "sphere_radius" in init:
            d.sphere_radius = float(init["sphere_radius"])
        elif "mesh" in init:
            mesh(d.mesh, init["mesh"])
        elif "mesh_asset" in init:
            data, fmt = init["mesh_asset"]
            d.mesh_asset.CopyFrom(render_pb2.AssetSource(data=data, format=FORMAT_ENUMS.get(fmt, 0)))
    else:
        f = req.field
        f.resolution, f.channels, f.depth = (int(init.get(k, 0)) for k in ("resolution", "channels", "depth"))
        f.levels.extend(int(v) for v in init.get("levels", []))
        f.box_size, f.init_std = float(init.get("box_size", 0)), float(init.get("init_std", 0))


def optimizer_to_proto(msg: render_pb2.OptimizerConfig, spec: OptimizerSpec) -> None:
    msg.kind = render_pb2.OptimizerConfig.ADAN if spec.kind == "adan" else render_pb2.OptimizerConfig.ADAM
    interp = {"linear": 1, "exponential": 2, "cosine": 3}
    for name in sorted(set(spec.lrs) | spec.frozen):
        g = msg.groups.add(name=name, frozen=name in spec.frozen)
        if name in spec.lrs:
            s = spec.lrs[name]
            g.lr.CopyFrom(render_pb2.LrSchedule(start_step=s.start_step, start_value=s.start_value,
                                                end_value=s.end_value, end_step=s.end_step,
                                                interpolation=interp[s.interpolation]))
    msg.betas.extend(spec.betas)
    msg.eps, msg.weight_decay, msg.max_grad_norm = spec.eps, spec.weight_decay, spec.max_grad_norm


# RenderLimits fields Describe reports (max_triangles has no proto field); the TTLs travel as whole seconds
DESCRIBED_LIMITS = ("scene_idle_ttl_s", "step_handle_ttl_s", "max_pending_steps_per_scene", "max_scenes_per_tenant",
                    "max_scene_bytes", "max_tenant_bytes", "max_render_pixels", "max_gaussians", "max_asset_bytes",
                    "asset_ttl_s")


def describe_to_proto(d: RenderDescription) -> render_pb2.RenderDescribeResponse:
    limits = {name: int(getattr(d.limits, name)) for name in DESCRIBED_LIMITS}
    resp = render_pb2.RenderDescribeResponse(dmtet_resolutions=d.dmtet_resolutions, device=d.device,
                                             max_message_bytes=d.max_message_bytes, **limits)
    for k in d.kinds:
        resp.kinds.add(kind=KIND_ENUMS[k.kind], backends=k.backends, default_learning_rates=k.default_lrs,
                       outputs=k.outputs, regularizers=k.regularizers,
                       export_formats=[FORMAT_ENUMS[f] for f in k.export_formats], options=k.options)
    return resp


def describe_from_proto(r: render_pb2.RenderDescribeResponse) -> RenderDescription:
    """The server's description; limits it does not report (max_triangles, or unset fields) keep their defaults."""
    limits = RenderLimits(**{name: getattr(r, name) for name in DESCRIBED_LIMITS if getattr(r, name)})
    kinds = [KindDescription(KIND_NAMES[k.kind], list(k.backends), dict(k.default_learning_rates), list(k.outputs),
                             list(k.regularizers), [FORMAT_NAMES[f] for f in k.export_formats], dict(k.options))
             for k in r.kinds]
    return RenderDescription(kinds, list(r.dmtet_resolutions), r.device, limits, r.max_message_bytes)


def densify_from_proto(r: render_pb2.DensifyGaussiansResponse) -> DensifyResult:
    return DensifyResult(r.num_gaussians, r.densified, r.pruned)


def gradient_terms_from_proto(terms, field: str = "terms") -> list[GradientTerm]:
    """GradientTerm messages -> GradientTerm with float32 numpy grads; `field` names the list in errors."""
    return [GradientTerm(t.step_handle, t.output,
                         np.array(tensors.from_proto(t.grad, f"{field}[{i}].grad",
                                                     dtypes=[tensors.DType.FLOAT32, tensors.DType.FLOAT16])
                                  ).astype(np.float32), t.weight, t.name) for i, t in enumerate(terms)]


def gradient_terms_to_proto(msg, terms: list[GradientTerm]) -> None:
    """Append GradientTerm values (numpy or torch grads) to a repeated GradientTerm field, as float32."""
    for t in terms:
        g = t.grad.detach().cpu().numpy() if hasattr(t.grad, "detach") else np.asarray(t.grad)
        msg.add(step_handle=t.step_handle, output=t.output, grad=tensors.to_proto(g.astype(np.float32)),
                weight=t.weight, name=t.name)
