"""The render service's logic, transport-free: scene sessions, Render -> step handle -> ApplyGradients,
checkpoints, export, texture back-projection. The in-process client calls it directly; the gRPC
servicer converts protos and calls it too."""

from __future__ import annotations

import hashlib
import math
import secrets

import numpy as np
import torch

from services.common.auth import current_tenant
from services.common.errors import FailedPrecondition, HeadForgeError, InvalidArgument, NotFound, ResourceExhausted, require
from services.core.camera_batch import CameraBatch
from services.core.cameras import PinholeCamera
from services.render.checkpoints import (checkpoint_bytes, load_optimizer_state, read_checkpoint, rep_from_checkpoint,
                                         write_checkpoint)
from services.render.optim import SceneOptimizer
from services.render.representations import SCENE_KINDS
from services.render.representations.dmtet import RESOLUTIONS as DMTET_RESOLUTIONS
from services.render.sessions import Scene, SceneStore, StepHandle
from services.render.types import (ENVIRONMENT_SHADINGS, SHADINGS, BackProjection, DensifyResult, EnvironmentMap, GradientCosineResult,
                                   GradientTerm, KindDescription, OptimizerSpec, RegularizerTerm, RenderDescription,
                                   RenderLimits, RenderResult, SceneInfo, StepResult)

NON_DIFFERENTIABLE = {"uv", "triangle_id"}
MAX_COSINE_CANDIDATES = 16   # GradientCosine: one backward per set; render.proto documents the cap


class RenderService:
    def __init__(self, limits: RenderLimits | None = None, device: str | None = None,
                 max_message_bytes: int = 64 * 1024 * 1024):
        self.limits = limits or RenderLimits()
        self.max_message_bytes = max_message_bytes
        self.store = SceneStore(self.limits)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    # scenes ----------------------------------------------------------------------------------------
    def create_scene(self, kind: str, init: dict | None = None, *, asset: tuple[bytes, str] | None = None,
                     optimizer: OptimizerSpec | None = None, options: dict[str, str] | None = None,
                     seed: int = 0, label: str = "") -> SceneInfo:
        """A new scene of `kind` (representations.SCENE_KINDS) from init values or an asset
        (bytes, format "glb" | "obj_zip" | "ply" | "npz" | "checkpoint")."""
        spec = SCENE_KINDS.get(kind, field="kind")
        options = dict(options or {})
        unknown = set(options) - set(spec.options)
        require(not unknown, "options", f"unknown option(s) {sorted(unknown)} for {kind}; known: {sorted(spec.options)}")
        seed = seed or secrets.randbits(31)
        checkpoint = None
        tenant = current_tenant()
        try:
            if asset is not None and asset[1] == "checkpoint":
                checkpoint = read_checkpoint(asset[0])
                require(checkpoint["meta"]["kind"] == kind, "asset", f"checkpoint of kind {checkpoint['meta']['kind']}, not {kind}")
                self.store.reserve(tenant, checkpoint_bytes(spec.cls, checkpoint))
                rep = rep_from_checkpoint(spec.cls, checkpoint)
            elif asset is not None:
                rep = spec.from_asset(asset[0], asset[1], options)
            else:
                # the caps before the allocation: a few request bytes may ask for gigabytes
                self.store.reserve(tenant, spec.init_bytes(init or {}, options, self.limits))
                rep = spec.create(init or {}, seed, options, self.limits)
        except HeadForgeError:
            raise  # already names its field
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidArgument("init" if asset is None else "asset", str(e)) from None
        rep = rep.to(self.device)
        optimizer = optimizer or OptimizerSpec()
        try:
            opt = SceneOptimizer(rep.parameter_groups(), rep.default_lrs, optimizer)
        except KeyError as e:
            raise InvalidArgument("optimizer.groups", str(e.args[0])) from None
        except ValueError as e:  # torch's own checks (in-process callers skip convert.optimizer_from_proto)
            raise InvalidArgument("optimizer", str(e)) from None
        if checkpoint is not None:
            load_optimizer_state(opt, checkpoint)
        scene = self.store.add_scene(tenant, kind, label, rep, opt)
        return self._info(scene)

    def _info(self, scene: Scene) -> SceneInfo:
        counts = {name: sum(p.numel() for p in ps) for name, ps in scene.rep.parameter_groups().items()}
        return SceneInfo(scene.id, scene.kind, scene.rep.backend, counts, scene.step, scene.rep.memory_bytes(),
                         self.store.limits.scene_idle_ttl_s)

    def close_scene(self, scene_id: str) -> None:
        self.store.close(current_tenant(), scene_id)

    # render ----------------------------------------------------------------------------------------
    def render(self, scene_id: str, cameras: list[PinholeCamera], outputs=("rgb", "alpha"), *,
               requires_grad: bool = False, background=None, width: int = 0, height: int = 0,
               seed: int = 0, shading: str = "", light_direction=None,
               environment: EnvironmentMap | None = None, expression: int = 0) -> RenderResult:
        """Render N cameras. background: None (white), (3,) colour, (3, H, W) / (N, 3, H, W) image, or
        "random" (a uniform colour per image). shading "" (the kind's default), "unlit", "diffuse" (with
        light_direction (3,) world, towards the light), "pbr" (with environment, an EnvironmentMap of
        linear radiance; see representations/pbr.py) or "pbr_diffuse" (its diffuse lobe only). expression: index into the scene's expression codes
        (kind dmtet_expression), 0 for other kinds. Outputs as numpy float32 (int32 for triangle_id)."""
        scene = self.store.get(current_tenant(), scene_id)
        shade_kw = self._shading(scene, shading, light_direction, environment)
        shade_kw.update(_expression_kw(scene, expression))
        outputs = list(outputs) or ["rgb", "alpha"]
        bad = [o for o in outputs if o not in scene.rep.outputs]
        require(not bad, "outputs", f"{bad} not produced by {scene.kind}; it renders {sorted(scene.rep.outputs)}")
        require(len(set(outputs)) == len(outputs), "outputs", "duplicate output names")
        cameras = _resize_cameras(cameras, width, height)
        batch = CameraBatch.from_pinholes(cameras)
        pixels = len(batch) * batch.width * batch.height
        if pixels > self.limits.max_render_pixels:
            raise ResourceExhausted(f"{len(batch)} x {batch.width} x {batch.height} = {pixels} pixels exceeds "
                                    f"{self.limits.max_render_pixels}", reason="RENDER_TOO_LARGE",
                                    metadata={"limit": "max_render_pixels"})
        bg = _background(background, len(batch), batch.height, batch.width, seed)
        with scene.lock:
            now = self.store.clock()
            scene.drop_expired_handles(now)
            if requires_grad and len(scene.handles) >= self.limits.max_pending_steps_per_scene:
                raise ResourceExhausted(f"{len(scene.handles)} step handles pending on this scene; apply or let "
                                        "them expire", reason="TOO_MANY_PENDING_STEPS",
                                        metadata={"limit": "max_pending_steps_per_scene"})
            wanted = sorted(set(outputs) | {"alpha"} if "rgb" in outputs else set(outputs))
            with torch.set_grad_enabled(requires_grad):
                raw = scene.rep.render(batch.to(self.device), wanted, background=torch.zeros(3, device=self.device),
                                       **shade_kw)
                result = {name: raw[name] for name in outputs}
                if "rgb" in result:
                    result["rgb"] = raw["rgb"] + (1 - raw["alpha"]) * bg.to(raw["rgb"])
            handle = ""
            expires = 0.0
            if requires_grad:
                handle = secrets.token_hex(16)
                expires = self.limits.step_handle_ttl_s
                scene.handles[handle] = StepHandle(handle, scene.version, result, now + expires)
            arrays = {name: _to_numpy(t) for name, t in result.items()}
            return RenderResult(arrays, handle, scene.step, expires)

    def _shading(self, scene: Scene, shading: str, light_direction, environment) -> dict:
        """The shading keywords for scene.rep.render, validated (InvalidArgument naming the field)."""
        import inspect

        from services.render.representations.pbr import Environment

        if not shading:
            return {}
        require(shading in SHADINGS, "shading", f"unknown shading {shading!r}; one of {list(SHADINGS)}")
        if "shading" not in inspect.signature(scene.rep.render).parameters:
            require(shading == "unlit", "shading", f"{scene.kind} scenes render unlit only")
            return {}
        kw: dict = {"shading": shading}
        if light_direction is not None and shading == "diffuse":
            d = np.asarray(light_direction, dtype=np.float32).reshape(-1)
            require(d.shape == (3,) and bool(np.isfinite(d).all()) and float(np.linalg.norm(d)) > 1e-8,
                    "light_direction", "must be 3 finite values, not all zero")
            kw["light_direction"] = torch.as_tensor(d, device=self.device)
        if shading in ENVIRONMENT_SHADINGS:
            require(environment is not None, "environment", f"shading {shading!r} needs an environment map")
            env = EnvironmentMap.checked(environment.radiance, environment.rotation_y_deg)
            key = hashlib.sha1(env.radiance.tobytes() + str(env.radiance.shape).encode()).hexdigest()
            cache = self.__dict__.setdefault("_env_cache", {})
            if key not in cache:
                if len(cache) >= 4:
                    cache.pop(next(iter(cache)))
                cache[key] = Environment.from_map(torch.as_tensor(env.radiance, device=self.device))
            prepared = cache[key]
            kw["environment"] = Environment(prepared.sh, prepared.levels, env.rotation_y_deg)
        return kw

    # gradients -------------------------------------------------------------------------------------
    def apply_gradients(self, scene_id: str, terms: list[GradientTerm], regularizers: list[RegularizerTerm] = (),
                        accumulate: bool = False) -> StepResult:
        """Back-propagate dLoss/dOutput (and regularisers) and step. Validates everything before touching
        the scene: a failed call leaves parameters, optimiser state and handles as they were."""
        scene = self.store.get(current_tenant(), scene_id)
        require(bool(terms) or bool(regularizers), "terms", "give at least one gradient term or regulariser")
        with scene.lock:
            scene.drop_expired_handles(self.store.clock())
            tensors, grads, term_norms = self._check_terms(scene, terms)
            reg_fns = scene.rep.regularizers()
            for i, r in enumerate(regularizers):
                require(r.name in reg_fns, f"regularizers[{i}].name",
                        f"unknown regulariser {r.name!r} for {scene.kind}; known: {sorted(reg_fns)}")
                require(math.isfinite(r.weight), f"regularizers[{i}].weight", "must be finite")
            reg_values: dict[str, float] = {}
            reg_losses = []
            for i, r in enumerate(regularizers):
                try:
                    value = reg_fns[r.name](**r.params) if r.params else reg_fns[r.name]()
                except (TypeError, ValueError) as e:
                    raise InvalidArgument(f"regularizers[{i}].params", f"{r.name}: {e}") from None
                reg_values[r.name] = float(value.detach())
                reg_losses.append(value * r.weight)
            if reg_losses:
                tensors.append(torch.stack([v.reshape(()) for v in reg_losses]).sum())
                grads.append(torch.ones((), device=tensors[-1].device))
            if tensors:
                torch.autograd.backward(tensors, grads)
            for h in {t.step_handle for t in terms}:
                scene.handles.pop(h, None)
            norms = scene.optimizer.grad_norms()
            if not scene.optimizer.grads_finite():
                scene.optimizer.zero_grad()
                return StepResult(scene.step, True, {}, norms, term_norms, reg_values, _num_gaussians(scene))
            if accumulate:  # the gradients stay in .grad until the next stepping call
                return StepResult(scene.step, False, {}, norms, term_norms, reg_values, _num_gaussians(scene))
            rates = scene.optimizer.step()
            changed = scene.rep.after_step(scene.step, scene.optimizer.torch)
            scene.parameters_changed()
            added = removed = 0
            if changed and hasattr(scene.rep, "last_densify"):
                added, removed = scene.rep.last_densify.densified, scene.rep.last_densify.pruned
            return StepResult(scene.step, False, rates, norms, term_norms, reg_values, _num_gaussians(scene),
                              added, removed)

    def gradient_cosine(self, scene_id: str, reference: list[GradientTerm],
                        candidates: list[list[GradientTerm]]) -> GradientCosineResult:
        """Cosines between each candidate set's parameter gradient and the reference set's, flattened over
        the trainable parameters, without stepping. Read-only: torch.autograd.grad with retain_graph
        leaves .grad (accumulated gradients included), the optimiser state and the step handles as they
        were, so a later ApplyGradients can still use the same handles."""
        scene = self.store.get(current_tenant(), scene_id)
        require(bool(reference), "reference.terms", "give at least one reference gradient term")
        require(bool(candidates), "candidates", "give at least one candidate gradient set")
        require(len(candidates) <= MAX_COSINE_CANDIDATES, "candidates",
                f"at most {MAX_COSINE_CANDIDATES} candidate sets, got {len(candidates)}")
        for k, c in enumerate(candidates):
            require(bool(c), f"candidates[{k}].terms", "give at least one gradient term")
        with scene.lock:
            scene.drop_expired_handles(self.store.clock())
            sets = [self._check_terms(scene, reference, "reference.terms")[:2]]
            sets += [self._check_terms(scene, c, f"candidates[{k}].terms")[:2] for k, c in enumerate(candidates)]
            params = [p for ps in scene.optimizer.group_params().values() for p in ps if p.requires_grad]
            flat = []
            for tensors, grads in sets:
                if not tensors or not params:
                    flat.append(torch.zeros(sum(p.numel() for p in params), dtype=torch.float64))
                    continue
                got = torch.autograd.grad(tensors, params, grads, retain_graph=True, allow_unused=True)
                flat.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double().cpu()
                                       for g, p in zip(got, params)]))
            ref, norms = flat[0], [float(f.norm()) for f in flat]
            cosines = [float(f @ ref) / (n * norms[0]) if n > 0 and norms[0] > 0 else 0.0
                       for f, n in zip(flat[1:], norms[1:])]
            return GradientCosineResult(cosines, norms[0], norms[1:], scene.step)

    def _check_terms(self, scene: Scene, terms: list[GradientTerm], field: str = "terms"):
        """Validate every term; returns (tensors, grads, per-term gradient norms) for one backward.
        `field` names the list in errors ("terms", "candidates[1].terms")."""
        summed: dict[tuple[str, str], torch.Tensor] = {}
        norms: dict[str, float] = {}
        for i, t in enumerate(terms):
            handle = scene.handles.get(t.step_handle)
            if handle is None:
                raise NotFound(f"{field}[{i}]: step handle {t.step_handle!r} is unknown, used, stale or expired; "
                               "render again", reason="STEP_HANDLE_NOT_FOUND")
            if handle.version != scene.version:
                raise NotFound(f"{field}[{i}]: step handle is stale (the parameters changed)", reason="STEP_HANDLE_STALE")
            require(t.output in handle.outputs, f"{field}[{i}].output",
                    f"{t.output!r} was not rendered under this handle ({sorted(handle.outputs)})")
            require(t.output not in NON_DIFFERENTIABLE, f"{field}[{i}].output", f"{t.output!r} is not differentiable")
            out = handle.outputs[t.output]
            g = torch.as_tensor(np.asarray(t.grad) if not isinstance(t.grad, torch.Tensor) else t.grad)
            require(tuple(g.shape) == tuple(out.shape), f"{field}[{i}].grad.shape",
                    f"got {list(g.shape)}, the rendered {t.output!r} is {list(out.shape)}")
            require(bool(torch.isfinite(g).all()), f"{field}[{i}].grad", "contains NaN or infinite values")
            weight = 1.0 if t.weight == 0 else float(t.weight)
            require(math.isfinite(weight), f"{field}[{i}].weight", "must be finite")
            g = g.to(out.device, out.dtype) * weight
            key = (t.step_handle, t.output)
            summed[key] = summed[key] + g if key in summed else g
            norms[t.name or f"{t.output}#{i}"] = float(g.norm())
        tensors, grads = [], []
        for (h, o), g in summed.items():
            out = scene.handles[h].outputs[o]
            if out.requires_grad:
                tensors.append(out)
                grads.append(g)
        return tensors, grads, norms

    # state -----------------------------------------------------------------------------------------
    def get_state(self, scene_id: str, exclude_optimizer: bool = False) -> bytes:
        """A versioned checkpoint: safetensors tensors + JSON metadata (never pickle)."""
        scene = self.store.get(current_tenant(), scene_id)
        with scene.lock:
            return write_checkpoint(scene.kind, scene.rep, scene.step, None if exclude_optimizer else scene.optimizer)

    def set_state(self, scene_id: str, data: bytes) -> SceneInfo:
        scene = self.store.get(current_tenant(), scene_id)
        checkpoint = read_checkpoint(data)
        meta = checkpoint["meta"]
        if meta["kind"] != scene.kind:
            raise FailedPrecondition(f"checkpoint of a {meta['kind']} scene cannot restore a {scene.kind} scene",
                                     reason="CHECKPOINT_KIND")
        nbytes = checkpoint_bytes(scene.rep.__class__, checkpoint)
        self.store.check_replacement(scene, nbytes)
        with scene.lock:
            fresh = rep_from_checkpoint(scene.rep.__class__, checkpoint).to(self.device)
            opt = SceneOptimizer(fresh.parameter_groups(), fresh.default_lrs, scene.optimizer.spec)
            load_optimizer_state(opt, checkpoint)
            scene.rep, scene.optimizer = fresh, opt
            scene.parameters_changed()
            return self._info(scene)

    def export(self, scene_id: str, fmt: str, scale: float = 1.0, texture_size: int = 0, *,
               expression: int = 0) -> bytes:
        """The scene as a file. scale multiplies positions (0 = 1); texture_size resamples the texture
        (0 = as is); expression: which expression's mesh (kind dmtet_expression; 0 elsewhere). Options a
        kind does not support are FAILED_PRECONDITION."""
        import inspect

        require(math.isfinite(scale) and scale >= 0, "scale", "must be a finite number >= 0")
        require(0 <= texture_size <= 8192, "texture_size", "must be 0..8192")
        scene = self.store.get(current_tenant(), scene_id)
        accepted = inspect.signature(scene.rep.export).parameters
        kwargs = _expression_kw(scene, expression)
        for name, value, unset in (("scale", scale or 1.0, 1.0), ("texture_size", texture_size, 0)):
            if value != unset:
                if name not in accepted:
                    raise FailedPrecondition(f"{scene.kind} export does not support {name}", reason="EXPORT_OPTION")
                kwargs[name] = value
        with scene.lock:
            try:
                return scene.rep.export(fmt, **kwargs)
            except ValueError as e:
                raise FailedPrecondition(str(e), reason="EXPORT_FORMAT") from None

    def back_project(self, scene_id: str, image: np.ndarray, camera: PinholeCamera, mask: np.ndarray | None = None,
                     min_cosine: float = 0.2, write: str = "none") -> "BackProjection":
        """Project a picture (uint8 (H, W, 3) or float (3, H, W)) onto the scene's UV texture."""
        from services.render.representations.texture import back_project

        scene = self.store.get(current_tenant(), scene_id)
        img = np.asarray(image)
        img = img.transpose(2, 0, 1) / 255.0 if img.dtype == np.uint8 else img
        require(img.shape[1:] == (camera.height, camera.width), "image",
                f"image is {img.shape[2]}x{img.shape[1]}, the camera {camera.width}x{camera.height}")
        with scene.lock:
            if getattr(scene.rep, "texture", None) is None:
                raise FailedPrecondition(f"a {scene.kind} scene has no UV texture to project onto",
                                         reason="NO_TEXTURE")
            batch = CameraBatch.from_pinholes([camera]).to(self.device)
            m = None if mask is None else torch.as_tensor(np.asarray(mask, np.float32), device=self.device)
            try:
                tex, vis, written = back_project(scene.rep, torch.as_tensor(img, dtype=torch.float32, device=self.device),
                                                 batch, m, min_cosine, write)
            except ValueError as e:
                raise InvalidArgument("image", str(e)) from None
            if written:
                scene.parameters_changed()
            return BackProjection(tex.permute(2, 0, 1).detach().cpu().float().numpy(),
                                  vis[None].detach().cpu().float().numpy(), int(written))

    def densify(self, scene_id: str, grad_threshold: float = 0.0, prune_opacity: float = 0.0,
                prune_max_scale: float = 0.0, reset_opacity: float = 0.0) -> DensifyResult:
        """One explicit densification pass on a Gaussian scene (GaussianScene.densify_now)."""
        scene = self.store.get(current_tenant(), scene_id)
        if scene.kind != "gaussians":
            raise FailedPrecondition(f"DensifyGaussians needs a Gaussian scene, this one is {scene.kind}",
                                     reason="NOT_GAUSSIANS")
        with scene.lock:
            result = scene.rep.densify_now(scene.optimizer.torch, grad_threshold=grad_threshold,
                                           prune_opacity=prune_opacity, prune_max_scale=prune_max_scale,
                                           reset_opacity=reset_opacity)
            scene.parameters_changed()
            return result

    def describe(self) -> "RenderDescription":
        kinds = []
        for kind, spec in SCENE_KINDS.items():
            backends = [spec.accelerated_backend, "torch"] if self.device.type == "cuda" else ["torch"]
            kinds.append(KindDescription(kind, list(dict.fromkeys(backends)), dict(spec.cls.default_lrs),
                                         sorted(spec.cls.outputs), list(spec.regularizers), list(spec.export_formats),
                                         dict(spec.options)))
        device = "cpu" if self.device.type == "cpu" else f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return RenderDescription(kinds, list(DMTET_RESOLUTIONS), device, self.limits, self.max_message_bytes)

    def reserve_upload(self, nbytes: int) -> None:
        """RESOURCE_EXHAUSTED before an upload of nbytes is received when it would break the per-asset or
        the tenant's byte cap (scenes and staged assets share max_tenant_bytes)."""
        self.store.assets.reserve(current_tenant(), nbytes)

    def upload_asset(self, data: bytes, fmt: str, sha256: str = "") -> str:
        if sha256 and hashlib.sha256(data).hexdigest() != sha256.lower():
            raise InvalidArgument("sha256", "does not match the received bytes")
        return self.store.add_asset(current_tenant(), data, fmt).id

    def asset_bytes(self, asset_id: str) -> tuple[bytes, str]:
        a = self.store.get_asset(current_tenant(), asset_id)
        return a.data, a.fmt


def _expression_kw(scene: Scene, expression: int) -> dict:
    """{"expression": e} for scenes with expression codes (0 <= e < E), {} for others (which take only 0);
    InvalidArgument naming "expression" otherwise."""
    count = getattr(scene.rep, "num_expressions", 0)
    if not isinstance(expression, (int, np.integer)) or isinstance(expression, bool):
        raise InvalidArgument("expression", f"must be an integer, got {expression!r}")
    if not count:
        require(expression == 0, "expression", f"{scene.kind} scenes have no expression codes: only 0, got {expression}")
        return {}
    require(0 <= expression < count, "expression",
            f"must be in 0..{count - 1} (this scene's expression codes), got {expression}")
    return {"expression": int(expression)}


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return t.numpy().astype(np.int32) if not t.is_floating_point() else t.float().numpy()


def _num_gaussians(scene: Scene) -> int:
    means = dict(scene.rep.parameter_groups()).get("means")
    return int(means[0].shape[0]) if means else 0


def _resize_cameras(cameras: list[PinholeCamera], width: int, height: int) -> list[PinholeCamera]:
    require(width >= 0 and height >= 0, "width", "must be >= 0")
    if not width and not height:
        return cameras
    out = []
    for c in cameras:
        w, h = width or c.width, height or c.height
        K = c.K.copy()
        K[0] *= w / c.width
        K[1] *= h / c.height
        out.append(PinholeCamera(K, c.world_to_camera, w, h))
    return out


def _background(background, n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """(N, 3, H, W) or broadcastable background in [0, 1]."""
    if background is None:
        return torch.ones(1, 3, 1, 1)
    if isinstance(background, str):
        require(background == "random", "background", f"unknown background {background!r}")
        g = torch.Generator().manual_seed(seed or secrets.randbits(31))
        return torch.rand(n, 3, 1, 1, generator=g)
    bg = torch.as_tensor(np.asarray(background, dtype=np.float32))
    require(bool(torch.isfinite(bg).all()) and float(bg.min()) >= 0 and float(bg.max()) <= 1, "background",
            "must be finite and in [0, 1]")
    if bg.shape == (3,):
        return bg.view(1, 3, 1, 1)
    if bg.shape == (3, h, w):
        return bg[None]
    require(tuple(bg.shape) == (n, 3, h, w), "background", f"expected (3,), (3, {h}, {w}) or ({n}, 3, {h}, {w}), "
            f"got {list(bg.shape)}")
    return bg


class InProcessRenderClient:
    """The RenderClient interface (services/render/client.py) as plain calls on a RenderService in this
    process: no serialisation, tensors stay tensors."""

    def __init__(self, service: RenderService | None = None):
        self.service = service or RenderService()

    def create_scene(self, kind, init=None, **kw) -> SceneInfo:
        return self.service.create_scene(kind, init, **kw)

    def render(self, scene_id, cameras, outputs=("rgb", "alpha"), **kw) -> RenderResult:
        return self.service.render(scene_id, cameras, outputs, **kw)

    def apply_gradients(self, scene_id, terms, regularizers=(), accumulate=False) -> StepResult:
        return self.service.apply_gradients(scene_id, list(terms), list(regularizers), accumulate)

    def gradient_cosine(self, scene_id, reference, candidates) -> GradientCosineResult:
        return self.service.gradient_cosine(scene_id, list(reference), [list(c) for c in candidates])

    def get_state(self, scene_id, exclude_optimizer=False) -> bytes:
        return self.service.get_state(scene_id, exclude_optimizer)

    def set_state(self, scene_id, checkpoint: bytes) -> SceneInfo:
        return self.service.set_state(scene_id, checkpoint)

    def export(self, scene_id, fmt: str, scale: float = 1.0, texture_size: int = 0, expression: int = 0) -> bytes:
        return self.service.export(scene_id, fmt, scale, texture_size, expression=expression)

    def close_scene(self, scene_id) -> None:
        self.service.close_scene(scene_id)

    def back_project(self, scene_id, image, camera, mask=None, min_cosine=0.2, write="none") -> BackProjection:
        return self.service.back_project(scene_id, image, camera, mask, min_cosine, write)

    def densify(self, scene_id, **kw) -> DensifyResult:
        return self.service.densify(scene_id, **kw)

    def upload_asset(self, data: bytes, fmt: str) -> str:
        return self.service.upload_asset(data, fmt)

    def describe(self) -> RenderDescription:
        return self.service.describe()

    def close(self) -> None:
        pass
