"""The inversion service's logic, transport-free (the gRPC servicer converts protos and calls it), and
at the end InProcessInversionClient, the client interface as plain calls on it.

Generators are configured by name -> directory (checkpoint.py's format) and load lazily on first use;
a generator that fails to load (missing files, mismatched tensors, a pickle without the trust flag)
fails every call that needs it with FAILED_PRECONDITION and is reported unavailable by Describe.

Cameras: GanCamera says which of the API's three forms a camera is in (world units, generator units,
or an EG3D label); GeneratorConfig.world_camera turns each into a world-unit PinholeCamera.

Pose range, as documented in the README: Invert REFUSES an input camera outside the generator's
training range (Describe's azimuth/elevation range widened by pose_margin_deg) with INVALID_ARGUMENT
reason CAMERA_OUTSIDE_POSE_RANGE, because such an inversion fits the image with an unseen view and
gives a broken head; Render only WARNS (a server log line): rendering outside the range is how callers
look at the back of an EG3D head, which is legitimate if unreliable.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from services.common.auth import current_tenant
from services.common.errors import FailedPrecondition, HeadForgeError, InvalidArgument, ResourceExhausted, require
from services.core.camera_batch import CameraBatch
from services.core.cameras import PinholeCamera
from services.inversion.generators import checkpoint
from services.inversion.generators.triplane_generator import TriplaneGenerator
from services.inversion.invert import InversionOutcome, invert, offset_camera
from services.core.lpips import LpipsStatus, load_lpips
from services.inversion.mesh import extract_mesh
from services.inversion.sessions import SessionStore, session_bytes
from services.inversion.types import (Description, GanCamera, GeneratorInfo, InversionConfig, InvertResult,
                                      InvertSettings, Latent, MeshOutput, MeshResult, ProgressCallback, ProgressEvent,
                                      as_gan_camera)

log = logging.getLogger("headforge.inversion")

RENDER_OUTPUTS = ("rgb", "rgb_raw", "alpha", "depth", "normal_camera", "normal_world")


@dataclass
class _Entry:
    name: str
    path: str
    loaded: checkpoint.LoadedGenerator | None = None
    error: HeadForgeError | None = None
    w_stats: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class InversionService:
    def __init__(self, config: InversionConfig | None = None):
        self.config = config or InversionConfig()
        self.limits = self.config.limits
        self.device = torch.device(self.config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.store = SessionStore(self.limits)
        self._entries = {name: _Entry(name, path) for name, path in self.config.generators.items()}
        self._lpips: LpipsStatus | None = None
        self._lpips_lock = threading.Lock()
        self._busy = threading.BoundedSemaphore(self.limits.max_concurrent_inversions)

    # generators ------------------------------------------------------------------------------------

    def _entry(self, name: str, field_name: str = "generator") -> _Entry:
        if not self._entries:
            raise FailedPrecondition("no generator configured; start the server with --generator NAME=DIR or "
                                     "--models-dir (see `headforge models make-tiny`)", reason="NO_GENERATOR")
        name = name or self.config.default_generator or next(iter(self._entries))
        entry = self._entries.get(name)
        if entry is None:
            raise InvalidArgument(field_name, f"unknown generator {name!r}; configured: {sorted(self._entries)}",
                                  reason="UNKNOWN_GENERATOR")
        return entry

    def _load(self, entry: _Entry) -> TriplaneGenerator:
        with entry.lock:
            if entry.loaded is None and entry.error is None:
                try:
                    entry.loaded = checkpoint.load_generator(entry.path, trust_pickles=self.config.trust_pickles,
                                                             device=self.device)
                    log.info("generator loaded", extra={"generator": entry.name, "path": entry.path,
                                                        "format": entry.loaded.weights_format})
                except HeadForgeError as e:
                    # a pickle refused for trust stays refused until restart (the flag is a server setting)
                    entry.error = e
                    log.error("generator failed to load", extra={"generator": entry.name, "error": e.message})
            if entry.error is not None:
                raise entry.error
            return entry.loaded.generator

    def generator(self, name: str = "") -> TriplaneGenerator:
        """The loaded base generator (FailedPrecondition when it cannot load)."""
        return self._load(self._entry(name))

    def _w_stats(self, entry: _Entry, gen: TriplaneGenerator, label: np.ndarray):
        key = tuple(np.round(label, 3).tolist())
        with entry.lock:
            if key not in entry.w_stats:
                if len(entry.w_stats) > 64:
                    entry.w_stats.clear()
                entry.w_stats[key] = gen.w_stats(label, samples=self.config.w_stats_samples)
            return entry.w_stats[key]

    def lpips(self) -> LpipsStatus:
        with self._lpips_lock:
            if self._lpips is None:
                status = load_lpips(self.config.lpips_vgg, self.config.lpips_lin)
                if status.model is not None:
                    status.model.to(self.device)
                self._lpips = status
            return self._lpips

    # describe --------------------------------------------------------------------------------------

    def describe(self) -> Description:
        gens = []
        default = self.config.default_generator or next(iter(self._entries), "")
        for name, e in self._entries.items():
            fmt = checkpoint.weights_format(e.path)
            cfg, reason, sha, provenance = None, "", "", ""
            if fmt == "pickle" and not self.config.trust_pickles:
                reason = "PICKLE_NOT_TRUSTED"  # never unpickled without the flag, not even to describe it
            else:
                try:  # loads on first Describe (it would load on first use anyway): the answer is the truth
                    gen = self._load(e)
                    cfg, sha, provenance = gen.cfg, e.loaded.sha256, e.loaded.provenance
                except HeadForgeError as err:
                    reason = err.reason or "GENERATOR_LOAD_FAILED"
            gens.append(GeneratorInfo(name, name == default, cfg.kind if cfg else "", fmt, not reason, reason,
                                      e.path, sha, cfg, cfg.crop_style if cfg else "", provenance))
        st = self.lpips() if (self.config.lpips_vgg or self._lpips) else LpipsStatus(None, "none",
                                                                                     "no VGG16 backbone weights configured")
        return Description(gens, self.limits, self.config.max_message_bytes, _device_name(self.device), st.name,
                           st.reason)

    # invert ----------------------------------------------------------------------------------------

    def invert(self, image: np.ndarray, camera: GanCamera, *, generator: str = "",
               conditioning_camera: GanCamera | None = None, mask: np.ndarray | None = None,
               settings: InvertSettings | None = None, cancelled: Callable[[], bool] = lambda: False
               ) -> Iterator[ProgressEvent | InvertResult]:
        """image (H, W, 3) uint8 square aligned crop; mask (H, W) (uint8 0/255 or float in [0, 1]) or
        None. Validates everything, then yields ProgressEvents and finally one InvertResult."""
        entry = self._entry(generator)
        require(image.ndim == 3 and image.shape[2] == 3, "image", f"expected (H, W, 3) pixels, got {list(image.shape)}")
        h, w = image.shape[:2]
        require(h == w, "image", f"the aligned crop must be square, got {w}x{h}")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.ndim == 3:
                mask = mask[..., 0]
            require(mask.shape == (h, w), "mask", f"mask is {mask.shape[1]}x{mask.shape[0]}, the image {w}x{h}")
        gen = self._load(entry)
        cfg = gen.cfg
        settings = (settings or InvertSettings()).validate(gen.num_ws, cfg.w_dim)
        cam = cfg.world_camera(camera, "camera", cfg.neural_resolution)
        if not cfg.pose_in_range(cam):
            az, el = cfg.camera_angles(cam)
            raise InvalidArgument("camera", f"view azimuth {az:.0f} deg, elevation {el:.0f} deg is outside the "
                                  f"generator's range (azimuth {cfg.azimuth_min:g}..{cfg.azimuth_max:g}, elevation "
                                  f"{cfg.elevation_min:g}..{cfg.elevation_max:g}, +-{cfg.pose_margin_deg:g} deg)",
                                  reason="CAMERA_OUTSIDE_POSE_RANGE")
        cond = cam if conditioning_camera is None else cfg.world_camera(conditioning_camera, "conditioning_camera",
                                                                        cfg.neural_resolution)
        label = cfg.label(cond)
        tenant = current_tenant()
        noise_bytes = sum(v.numel() * v.element_size() for v in gen.noise_buffers().values())
        estimate = session_bytes(torch.empty(gen.num_ws, cfg.w_dim), {}, gen.tuned_bytes() if settings.pti else 0)
        self.store.reserve(tenant, estimate + noise_bytes)
        if not self._busy.acquire(blocking=False):
            raise ResourceExhausted(f"{self.limits.max_concurrent_inversions} inversions already running; retry later",
                                    reason="INVERSION_BUSY", metadata={"limit": "max_concurrent_inversions"})
        try:
            S = cfg.output_resolution
            target = _to_tensor(image, S).to(self.device)
            mask_t = None
            if mask is not None:
                m = torch.as_tensor(mask.astype(np.float32) / (255.0 if mask.dtype == np.uint8 else 1.0))
                require(bool(torch.isfinite(m).all()) and float(m.min()) >= 0 and float(m.max()) <= 1, "mask",
                        "values must lie in [0, 1] (or 0..255 for uint8)")
                mask_t = F.interpolate(m[None, None], size=(S, S), mode="area").to(self.device)
                require(float(mask_t.sum()) > 0, "mask", "the mask selects no pixel")
            lp = self.lpips()
            lpips_model = lp.model if settings.lpips_weight > 0 or settings.pti_lpips_weight > 0 else None
            w_avg, w_std = self._w_stats(entry, gen, label)
            outcome = None
            batch = CameraBatch.from_pinholes([cam])
            for ev in invert(gen, target, batch, label, settings, mask=mask_t, lpips=lpips_model, cancelled=cancelled,
                             w_stats=(w_avg, w_std)):
                if isinstance(ev, InversionOutcome):
                    outcome = ev
                else:
                    yield ev
        finally:
            self._busy.release()
        nbytes = session_bytes(outcome.ws, outcome.noise, outcome.tuned.tuned_bytes() if outcome.tuned else 0)
        session = self.store.add_session(tenant, entry.name, outcome.ws, outcome.noise, outcome.tuned, label, nbytes)
        optimised = None
        if outcome.camera_offsets is not None:   # the input camera's intrinsics and size, rotated (float64)
            given = cfg.world_camera(camera, "camera")
            off = outcome.camera_offsets
            rotated = offset_camera(CameraBatch.from_pinholes([given], dtype=torch.float64),
                                    torch.tensor([math.radians(off.yaw_deg), math.radians(off.pitch_deg),
                                                  math.radians(off.roll_deg)], dtype=torch.float64),
                                    torch.tensor(np.asarray(cfg.camera_target) * cfg.world_scale, dtype=torch.float64))
            optimised = PinholeCamera(np.array(given.K, np.float64), rotated.world_to_camera[0].numpy(),
                                      given.width, given.height)
        yield InvertResult(session.id, self.store.expires_in(session), outcome.ws[0].cpu().numpy().astype(np.float32),
                           outcome.latent_metrics, outcome.pti_metrics, outcome.reconstruction, entry.name, nbytes,
                           outcome.steps_per_s, outcome.pti_steps_per_s, optimised, outcome.camera_offsets)

    # sources ---------------------------------------------------------------------------------------

    def _source(self, source, field_name: str = "source"):
        """(generator module, ws (1, num_ws, w_dim), noise, config, session or None) of a session id or Latent."""
        if isinstance(source, str):
            require(bool(source), f"{field_name}.session_id", "is empty")
            s = self.store.get(current_tenant(), source)
            gen = s.tuned if s.tuned is not None else self._load(self._entry(s.generator))
            return gen, s.ws, s.noise, s
        if isinstance(source, Latent):
            entry = self._entry(source.generator, f"{field_name}.latent.generator")
            gen = self._load(entry)
            n, d = gen.num_ws, gen.cfg.w_dim
            if source.w is None:
                return gen, self._sample(gen, source, field_name), None, None
            w = np.asarray(source.w, dtype=np.float32)
            require(w.shape in ((n, d), (d,)), f"{field_name}.latent.w",
                    f"shape {list(w.shape)}; this generator takes ({n}, {d}) or ({d},)")
            require(bool(np.isfinite(w).all()), f"{field_name}.latent.w", "contains NaN or infinite values")
            if source.conditioning_camera is not None:
                gen.cfg.world_camera(source.conditioning_camera, f"{field_name}.latent.conditioning_camera")
            ws = torch.as_tensor(w, device=self.device)
            ws = (ws.expand(n, d) if ws.ndim == 1 else ws)[None].contiguous()
            return gen, ws, None, None
        raise InvalidArgument(field_name, "give a session_id or a latent")

    def _sample(self, gen, source: Latent, field_name: str) -> torch.Tensor:
        """ws (1, num_ws, w_dim) of the sample source.z_seed, truncated towards w_avg (module docstring)."""
        require(source.z_seed > 0, f"{field_name}.latent.z_seed", "must be > 0")
        psi = float(source.truncation_psi)
        require(0.0 <= psi <= 1.0, f"{field_name}.latent.truncation_psi", f"must be in [0, 1], got {psi}")
        label = None
        if source.conditioning_camera is not None:
            label = gen.cfg.label(gen.cfg.world_camera(source.conditioning_camera,
                                                       f"{field_name}.latent.conditioning_camera"))
        z = torch.randn(1, gen.cfg.z_dim, generator=torch.Generator().manual_seed(int(source.z_seed) % (1 << 63)))
        with torch.no_grad():
            ws = gen.map(z.to(self.device), label)
            if psi < 1.0:
                w_avg, _ = gen.w_stats(label)
                ws = w_avg.to(ws) + psi * (ws - w_avg.to(ws))
        return ws

    # render ----------------------------------------------------------------------------------------

    def render(self, source, cameras: list, outputs=("rgb",), *, neural_resolution: int = 0,
               conditioning_camera: GanCamera | None = None) -> dict[str, np.ndarray]:
        """Images by output name (inversion.proto's shapes), float32 numpy. The conditioning camera is
        validated but changes nothing: these generators condition only the mapping network, and a
        latent or session is already past it."""
        outputs = list(outputs) or ["rgb"]
        bad = [o for o in outputs if o not in RENDER_OUTPUTS]
        require(not bad, "outputs", f"unknown outputs {bad}; known: {list(RENDER_OUTPUTS)}")
        require(len(set(outputs)) == len(outputs), "outputs", "duplicate output names")
        require(len(cameras) > 0, "cameras", "at least one camera is needed")
        gen, ws, noise, _ = self._source(source)
        cfg = gen.cfg
        if conditioning_camera is not None:
            cfg.world_camera(conditioning_camera, "conditioning_camera")
        r = neural_resolution or cfg.neural_resolution
        require(8 <= r <= 2048, "neural_resolution", f"must be in 8..2048, got {r}")
        if "rgb" in outputs and cfg.super_resolution:
            require(r == cfg.neural_resolution, "neural_resolution",
                    f"'rgb' on a super-resolution generator renders at the neural resolution {cfg.neural_resolution}; "
                    "ask for 'rgb_raw' at other resolutions")
        cams = [cfg.world_camera(c, f"cameras[{i}]", r) for i, c in enumerate(cameras)]
        for i, c in enumerate(cams):
            if not cfg.pose_in_range(c):
                az, el = cfg.camera_angles(c)
                log.warning("render camera outside the generator's pose range",
                            extra={"camera": i, "azimuth": round(az, 1), "elevation": round(el, 1)})
        side = cfg.output_resolution if "rgb" in outputs and cfg.super_resolution else r
        pixels = len(cams) * side * side
        if pixels > self.limits.max_render_pixels:
            raise ResourceExhausted(f"{len(cams)} x {side} x {side} = {pixels} pixels exceeds "
                                    f"{self.limits.max_render_pixels}", reason="RENDER_TOO_LARGE",
                                    metadata={"limit": "max_render_pixels"})
        batch = CameraBatch.from_pinholes(cams)
        with torch.no_grad():
            grids = gen.synthesize(ws, noise)
            out = {}
            # rgb (super-resolved) is rendered per camera batch of the neural resolution
            res = gen.render(ws, batch, outputs, grids=grids, noise=noise)
            for k in outputs:
                out[k] = res[k].clamp(0, 1) if k in ("rgb", "rgb_raw") else res[k]
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    # mesh ------------------------------------------------------------------------------------------

    def extract_mesh(self, source, resolution: int = 0, density_threshold: float = 0.0, *,
                     largest_component_only: bool = False, max_faces: int = 0, vertex_colors: bool = False,
                     fmt: str = "tensors") -> tuple[MeshResult, bytes]:
        """(mesh, file bytes for fmt "glb" / "ply", else b"")."""
        res = resolution or 256
        require(32 <= res <= 1024, "resolution", f"must be in 32..1024, got {res}")
        require(max_faces >= 0, "max_faces", "must be >= 0")
        require(math.isfinite(density_threshold), "density_threshold", "must be finite")
        require(fmt in ("tensors", "glb", "ply"), "format", "TENSORS, GLB or PLY")
        if res > self.limits.max_mesh_resolution:
            raise ResourceExhausted(f"resolution {res} exceeds this server's max_mesh_resolution "
                                    f"{self.limits.max_mesh_resolution}", reason="MESH_TOO_LARGE",
                                    metadata={"limit": "max_mesh_resolution"})
        gen, ws, noise, _ = self._source(source)
        threshold = density_threshold or gen.cfg.default_density_threshold
        with torch.no_grad():
            grids = gen.synthesize(ws, noise)
            mesh = extract_mesh(gen.query(grids), gen.settings.box_size, res, threshold, device=self.device,
                                largest_component_only=largest_component_only, max_faces=max_faces,
                                vertex_colors=vertex_colors)
        data = mesh.encode(fmt) if fmt != "tensors" else b""
        size = len(data) or (mesh.vertices.nbytes * (3 if vertex_colors else 2) + mesh.faces.nbytes)
        if size > self.config.max_message_bytes - 4096:
            raise ResourceExhausted(f"the mesh ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces, {size} bytes) "
                                    f"exceeds max_message_bytes {self.config.max_message_bytes}; lower the resolution "
                                    "or set max_faces", reason="MESH_TOO_LARGE", metadata={"limit": "max_message_bytes"})
        return mesh, data

    # export ----------------------------------------------------------------------------------------

    def export_field(self, source, dtype: str = "float32") -> bytes:
        """The NPZ for RenderService.CreateScene (kind = the generator's kind)."""
        require(dtype in ("float32", "float16"), "dtype", "FLOAT32 or FLOAT16")
        gen, ws, noise, _ = self._source(source)
        return gen.export_field(ws, noise, dtype)

    def field_kind(self, source) -> str:
        gen, _, _, _ = self._source(source)
        return gen.cfg.kind

    def close_session(self, session_id: str) -> None:
        require(bool(session_id), "session_id", "is empty")
        self.store.close(current_tenant(), session_id)


def _to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, size, size) float in [0, 1] (area when shrinking, bilinear otherwise)."""
    t = torch.as_tensor(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
    if t.shape[-1] != size:
        if t.shape[-1] > size:
            t = F.interpolate(t, size=(size, size), mode="area")
        else:
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return t


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        idx = device.index or 0
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
    return str(device)



class InProcessInversionClient:
    """The InversionClient interface (client.py) as plain calls on an InversionService in this process
    (no serialisation). Cameras: GanCamera or world-unit PinholeCamera."""

    def __init__(self, service: InversionService):
        self.service = service

    def describe(self) -> Description:
        return self.service.describe()

    def invert(self, image: np.ndarray, camera, *, generator: str = "", conditioning_camera=None, mask=None,
               settings: InvertSettings | None = None, on_progress: ProgressCallback | None = None,
               cancelled: Callable[[], bool] = lambda: False) -> InvertResult:
        """cancelled: polled every step; True stops the inversion (Cancelled) and creates no session."""
        result = None
        cond = None if conditioning_camera is None else as_gan_camera(conditioning_camera)
        for ev in self.service.invert(np.asarray(image), as_gan_camera(camera), generator=generator,
                                      conditioning_camera=cond, mask=mask, settings=settings, cancelled=cancelled):
            if isinstance(ev, InvertResult):
                result = ev
            elif on_progress is not None:
                on_progress(ev)
        return result

    def render(self, source, cameras, outputs=("rgb",), *, neural_resolution: int = 0, conditioning_camera=None,
               dtype: str = "float32") -> dict[str, np.ndarray]:
        cond = None if conditioning_camera is None else as_gan_camera(conditioning_camera)
        out = self.service.render(source, [as_gan_camera(c) for c in cameras], outputs,
                                  neural_resolution=neural_resolution, conditioning_camera=cond)
        return {k: v.astype(np.float16) if dtype == "float16" else v for k, v in out.items()}

    def extract_mesh(self, source, resolution: int = 0, density_threshold: float = 0.0, *,
                     largest_component_only: bool = False, max_faces: int = 0, vertex_colors: bool = False,
                     fmt: str = "tensors") -> MeshOutput:
        mesh, data = self.service.extract_mesh(source, resolution, density_threshold,
                                               largest_component_only=largest_component_only, max_faces=max_faces,
                                               vertex_colors=vertex_colors, fmt=fmt)
        return MeshOutput(mesh if fmt == "tensors" else None, data, len(mesh.vertices), len(mesh.faces))

    def export_field(self, source, dtype: str = "float32") -> bytes:
        return self.service.export_field(source, dtype)

    def close_session(self, session_id: str) -> None:
        self.service.close_session(session_id)

    def close(self) -> None:
        pass
