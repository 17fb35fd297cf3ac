"""A request's Conditions -> PreparedConditions for its n images: prompts (view-dependent when asked), text
states (memoised per backbone and prompt), the identity embedding (averaged, L2-normalised), LoRAs, control
pictures (landmark points drawn here) and the cameras for backbones that encode them, with the caller-keyed
per-tenant cache of guidance.proto Conditions. Field errors name the request field (conditions.*)."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np
import torch

from services.common.auth import current_tenant
from services.common.errors import FailedPrecondition, InvalidArgument, require
from services.common.tensors import require_finite
from services.guidance.backbones.base import Backbone
from services.guidance.cache import ConditionsCache
from services.guidance.conditioning import PreparedConditions
from services.guidance.controls import draw_landmarks
from services.guidance.types import CONTROL_KINDS, Conditions, ControlInput, ControlSpec
from services.guidance import validate
from services.guidance.validate import MAX_SIDE, MIN_SIDE

TEXT_MEMO_SIZE = 512   # (backbone, prompt) text states kept


def view_suffix(camera) -> str:
    """", front view" / ", side view" / ", back view" / ", overhead view" from a camera's orbit position."""
    x, y, z = camera.position
    elevation = math.degrees(math.atan2(y, math.hypot(x, z)))
    azimuth = abs(math.degrees(math.atan2(x, z)))
    if elevation > 60:
        return ", overhead view"
    if azimuth <= 45:
        return ", front view"
    return ", back view" if azimuth >= 135 else ", side view"


class ConditionsEncoder:
    """Encodes requests' conditions; one per service (it holds the text memo and the conditions cache)."""

    def __init__(self, cache: ConditionsCache):
        self.cache = cache
        self._text_memo: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._text_lock = threading.Lock()   # tokenizers are not thread-safe

    def encode(self, name: str, bb: Backbone, c: Conditions, n: int, cameras: list, resolution: int,
               image_size: tuple[int, int], background: np.ndarray | None = None) -> PreparedConditions:
        """Encode a request's conditions for n images; control pictures are prepared at the working
        resolution, landmark points are drawn at image_size (H, W) of the request's images; background
        (n, 3) or None (white) reaches a backbone's encode_cameras."""
        info = bb.info
        tenant = current_tenant()
        prompt = validate.text(c.prompt, "conditions.prompt")
        negative = validate.text(c.negative_prompt, "conditions.negative_prompt")
        expression = validate.text(c.expression, "conditions.expression")
        for key in ("text_cache_key", "identity_cache_key"):
            validate.text(getattr(c, key), f"conditions.{key}", validate.MAX_CACHE_KEY_CHARS)
        if c.text_cache_key:
            scope = (tenant, name, "text")
            if prompt or negative or expression:
                self.cache.put(scope, c.text_cache_key, (prompt, negative, expression))
            else:
                prompt, negative, expression = self.cache.get(scope, c.text_cache_key, "conditions.text_cache_key")
        if expression and not info.expression_adapter:
            raise FailedPrecondition(f"backbone {name!r} has no expression adapter", reason="ADAPTER_UNSUPPORTED")
        if c.view_dependent_prompt:
            require(len(cameras) == n, "cameras", "view_dependent_prompt needs one camera per image")
            prompts = [prompt + view_suffix(cam) for cam in cameras]
        else:
            prompts = [prompt] * n
        text = self._encode_text(name, bb, prompts)
        uncond = self._encode_text(name, bb, [negative or info.default_negative_prompt]).expand(n, *text.shape[1:])

        expr_scale = c.expression_scale or 1.0
        require(0 <= expr_scale <= 2, "conditions.expression_scale", f"must be 0..2, got {c.expression_scale}")
        expression_emb = None
        encode_expression = getattr(bb, "encode_expression", None)   # backbones with a real expression adapter
        if expression and encode_expression is not None:
            expression_emb = self._encode_expression(name, bb, expression).to(bb.device).expand(n, -1)

        identity = self._identity(name, bb, c, tenant)
        if identity is not None:
            identity = identity.to(bb.device).expand(n, -1)
        id_scale = c.identity_scale or 1.0
        require(0 <= id_scale <= 2, "conditions.identity_scale", f"must be 0..2, got {c.identity_scale}")

        loras = []
        known = {s.name for s in info.loras}
        for i, (lora, scale) in enumerate(c.loras):
            require(lora in known, f"conditions.loras[{i}].name", f"unknown LoRA {lora!r}; loaded: {sorted(known)}")
            scale = scale or 1.0
            require(-2 <= scale <= 2, f"conditions.loras[{i}].scale", f"must be -2..2, got {scale}")
            loras.append((lora, float(scale)))

        controls = [self._control(name, bb, ctrl, n, resolution, image_size, f"conditions.controls[{i}]")
                    for i, ctrl in enumerate(c.controls)]
        encode_cameras = getattr(bb, "encode_cameras", None)   # optional (backbones.base docstring)
        encoded_cameras = None if encode_cameras is None else \
            encode_cameras(cameras, image_size, resolution, [lora for lora, _ in loras], background, expression=expression)
        return PreparedConditions(text=text.to(bb.device), uncond=uncond.to(bb.device), identity=identity,
                                  identity_adapter=c.identity_adapter, identity_scale=float(id_scale),
                                  expression=expression_emb, expression_scale=float(expr_scale),
                                  controls=controls, loras=tuple(loras), cameras=encoded_cameras)

    def _encode_text(self, name: str, bb: Backbone, prompts: list[str]) -> torch.Tensor:
        out = []
        with self._text_lock:
            for p in prompts:
                key = (name, p)
                if key not in self._text_memo:
                    self._text_memo[key] = bb.encode_text([p])[0]
                    while len(self._text_memo) > TEXT_MEMO_SIZE:
                        self._text_memo.popitem(last=False)
                self._text_memo.move_to_end(key)
                out.append(self._text_memo[key])
        return torch.stack(out)

    def _encode_expression(self, name: str, bb: Backbone, text: str) -> torch.Tensor:
        """(1, D_text) pooled text embedding of an expression, memoised per (backbone, text) like text states."""
        key = (name, "\x00expression", text)
        with self._text_lock:
            if key not in self._text_memo:
                self._text_memo[key] = bb.encode_expression([text])[0]
                while len(self._text_memo) > TEXT_MEMO_SIZE:
                    self._text_memo.popitem(last=False)
            self._text_memo.move_to_end(key)
            return self._text_memo[key][None]

    def _identity(self, name: str, bb: Backbone, c: Conditions, tenant: str) -> torch.Tensor | None:
        emb = c.identity_embedding
        scope = (tenant, name, "identity")
        if emb is None:
            if not c.identity_cache_key:
                return None
            return self.cache.get(scope, c.identity_cache_key, "conditions.identity_cache_key")
        info = bb.info
        if not info.identity_embedding_dim:
            raise FailedPrecondition(f"backbone {name!r} has no identity adapter", reason="ADAPTER_UNSUPPORTED")
        if c.identity_adapter and c.identity_adapter not in info.identity_adapters:
            raise InvalidArgument("conditions.identity_adapter",
                                  f"unknown adapter {c.identity_adapter!r}; loaded: {list(info.identity_adapters)}")
        d = info.identity_embedding_dim
        emb = np.asarray(emb, dtype=np.float32)
        require(emb.ndim in (1, 2) and emb.shape[-1] == d, "conditions.identity_embedding",
                f"must be ({d},) or (K, {d}), got {emb.shape}")
        require_finite(emb, "conditions.identity_embedding")
        mean = emb.reshape(-1, d).mean(0)
        norm = float(np.linalg.norm(mean))
        require(norm > 1e-6, "conditions.identity_embedding", "is zero")
        value = torch.from_numpy(mean / norm)[None]
        if c.identity_cache_key:
            self.cache.put(scope, c.identity_cache_key, value)
        return value

    def _control(self, name: str, bb: Backbone, ctrl: ControlInput, n: int, resolution: int,
                 image_size: tuple[int, int], field: str) -> tuple[str, torch.Tensor, float]:
        info = bb.info
        if ctrl.kind:
            spec = info.control_for_kind(ctrl.kind)
            if ctrl.kind not in CONTROL_KINDS:
                raise InvalidArgument(f"{field}.kind", f"unknown control kind {ctrl.kind!r}")
            if spec is None:
                raise FailedPrecondition(f"backbone {name!r} has no {ctrl.kind} ControlNet "
                                         f"(loaded: {[c.name for c in info.controls]})", reason="CONTROL_UNSUPPORTED")
        else:
            spec = info.control(ctrl.name)
            if spec is None:
                raise InvalidArgument(f"{field}.name", f"unknown ControlNet {ctrl.name!r}; loaded: "
                                      f"{[c.name for c in info.controls]}")
        scale = ctrl.scale or 1.0
        require(0 <= scale <= 2, f"{field}.scale", f"must be 0..2, got {ctrl.scale}")
        pictures = _control_pictures(spec, ctrl, n, image_size, field)
        prepared = torch.cat([bb.prepare_control(spec, p, resolution) for p in pictures])
        return spec.name, prepared.expand(n, -1, -1, -1) if len(pictures) == 1 else prepared, float(scale)


def _control_pictures(spec: ControlSpec, ctrl: ControlInput, n: int, image_size: tuple[int, int],
                      field: str) -> list[np.ndarray]:
    """1 or n checked (C, H, W) pictures in the service's convention; landmark points drawn at image_size."""
    if ctrl.landmarks is not None:
        require(spec.kind == "landmarks", f"{field}.landmarks", "points are only for a LANDMARKS control")
        pts = np.asarray(ctrl.landmarks, dtype=np.float32)
        require(pts.ndim in (2, 3) and pts.shape[-2:] in ((68, 2), (478, 2)), f"{field}.landmarks",
                f"must be (P, 2) or (N, P, 2) pixel points with P = 68 (iBUG order) or 478 (MediaPipe "
                f"order), got {pts.shape}")
        require(pts.ndim == 2 or pts.shape[0] == n, f"{field}.landmarks", f"give 1 or {n} point sets")
        require_finite(pts, f"{field}.landmarks")
        h, w = image_size
        return [draw_landmarks(p, h, w) for p in pts.reshape(-1, *pts.shape[-2:])]
    pic = ctrl.image
    require(pic is not None, f"{field}.image", "a control needs an image (or landmarks)")
    require(pic.ndim in (3, 4), f"{field}.image", f"must be (C, H, W) or (N, C, H, W), got {pic.shape}")
    require(pic.ndim == 3 or pic.shape[0] == n, f"{field}.image", f"give 1 or {n} pictures, got {pic.shape[0]}")
    channels = {"landmarks": (3,), "canny": (1, 3), "normal": (3,), "depth": (1,)}.get(spec.kind, (1, 3))
    require(pic.shape[-3] in channels, f"{field}.image", f"a {spec.kind or spec.name} control takes "
            f"{' or '.join(map(str, channels))} channels, got {pic.shape[-3]}")
    require(MIN_SIDE <= min(pic.shape[-2:]) and max(pic.shape[-2:]) <= MAX_SIDE, f"{field}.image",
            f"H and W must be {MIN_SIDE}..{MAX_SIDE}")
    pic = pic.astype(np.float32) / (255.0 if pic.dtype == np.uint8 else 1.0)
    require_finite(pic, f"{field}.image")
    if spec.kind == "normal":
        require(pic.min() >= -1.001 and pic.max() <= 1.001, f"{field}.image", "normals must be in [-1, 1]")
    elif spec.kind != "depth":
        require(pic.min() >= -1e-3 and pic.max() <= 1.001, f"{field}.image", "values must be in [0, 1]")
    return list(pic.reshape(-1, *pic.shape[-3:]))
