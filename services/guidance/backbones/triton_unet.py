"""A Stable Diffusion UNet served by NVIDIA Triton Inference Server, called like the in-process diffusers model.

`TritonUNet(url, unet_dir)` stands in for a diffusers `UNet2DConditionModel` in the guidance process (the text
encoder and the VAE stay local): `unet(sample, timestep, encoder_hidden_states, return_dict=False)` returns
`(noise_pred,)` computed by the Triton model that `services.guidance.triton_repo.write_triton_repository`
wrote for the same UNet folder, and `unet.config` is that folder's config.json (so `unet.config.in_channels`,
`.sample_size`, `.cross_attention_dim` work as usual). What crosses the wire per call: sample (B, C, h, w)
FP32, timestep (B, 1) INT64, encoder_hidden_states (B, L, D) FP32 -> noise_pred (B, C', h, w) FP32 (see
triton_repo's docstring). Results come back on the sample's device in the sample's dtype.

Only the plain text-conditioned forward is served. ControlNet residuals, IP-adapter / identity embeddings
(added_cond_kwargs), LoRA scales (cross_attention_kwargs), class labels and attention masks raise
FailedPrecondition (reason "TRITON_UNSUPPORTED"): use the diffusers backend for those.

Construction checks, in order, and fails fast with a message naming the url and the model:
- the server answers liveness within connect_timeout_s, else `Unavailable`;
- the model exists (`ModelFilesError` otherwise) and is ready (`Unavailable`, after waiting up to
  ready_timeout_s);
- its metadata has exactly the expected inputs/outputs with the expected datatypes and shapes for this
  UNet's config (in_channels, out_channels, cross_attention_dim), else `ModelFilesError` naming the tensor.
Calls: rows above the model's max_batch_size are split into several requests (sent concurrently, so Triton's
dynamic batcher and its instances can work on them together); each request is bounded by client_timeout_s.
Triton/gRPC errors map to services.common.errors: UNAVAILABLE -> Unavailable, DEADLINE_EXCEEDED ->
DeadlineExceeded, RESOURCE_EXHAUSTED -> ResourceExhausted, INVALID_ARGUMENT -> InvalidArgument, others below.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.common.errors import (DeadlineExceeded, FailedPrecondition, HeadForgeError, Internal, InvalidArgument,
                                    PermissionDenied, ResourceExhausted, Unauthenticated, Unavailable,
                                    Unimplemented)
from services.guidance.backbones.base import ModelFilesError
from services.guidance.triton_repo import INPUT_SAMPLE, INPUT_TEXT, INPUT_TIMESTEP, OUTPUT_NOISE, read_unet_config

# diffusers UNet2DConditionModel.forward keyword arguments that Triton cannot serve, and why.
_UNSUPPORTED = {
    "down_block_additional_residuals": "ControlNet residuals",
    "mid_block_additional_residual": "ControlNet residuals",
    "down_intrablock_additional_residuals": "T2I-Adapter residuals",
    "added_cond_kwargs": "added conditions (IP-adapter / identity image embeddings, SDXL text/time ids)",
    "cross_attention_kwargs": "cross-attention kwargs (LoRA scale, IP-adapter masks)",
    "class_labels": "class labels",
    "timestep_cond": "timestep conditioning",
    "attention_mask": "attention masks",
    "encoder_attention_mask": "attention masks",
}

_ERRORS: dict[str, type[HeadForgeError]] = {
    "StatusCode.UNAVAILABLE": Unavailable,
    "StatusCode.DEADLINE_EXCEEDED": DeadlineExceeded,
    "StatusCode.RESOURCE_EXHAUSTED": ResourceExhausted,
    "StatusCode.CANCELLED": Unavailable,
    "StatusCode.NOT_FOUND": Unavailable,          # the model was unloaded from Triton after we checked it
    "StatusCode.FAILED_PRECONDITION": FailedPrecondition,
    "StatusCode.UNIMPLEMENTED": Unimplemented,
    "StatusCode.PERMISSION_DENIED": PermissionDenied,
    "StatusCode.UNAUTHENTICATED": Unauthenticated,
}


class UNetConfig(dict):
    """The UNet's config.json as a dict that also reads as attributes (like diffusers' FrozenDict)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class UNetOutput:
    """What return_dict=True gives: `.sample`, and `[0]` like diffusers' UNet2DConditionOutput."""

    def __init__(self, sample: torch.Tensor):
        self.sample = sample

    def __getitem__(self, index):
        return (self.sample,)[index]

    def to_tuple(self) -> tuple[torch.Tensor]:
        return (self.sample,)


def _load_config(unet_dir: Path | str | None, config: dict | None) -> tuple[UNetConfig, str]:
    """The UNet's config (the given dict, else unet_dir/config.json, checked by read_unet_config) and where it
    came from, for messages."""
    if config is not None:
        return UNetConfig(config), "the given config"
    if unet_dir is None:
        raise ValueError("TritonUNet needs unet_dir (the diffusers unet folder) or config")
    path = Path(unet_dir)
    path = path.parent if path.name.endswith(".json") else path
    return UNetConfig(read_unet_config(path)), str(path / "config.json")


def _dims(shape) -> list[int]:
    return [int(d) for d in shape]


class TritonUNet:
    """Drop-in for a diffusers UNet2DConditionModel's forward, served by Triton over gRPC (module docstring)."""

    dtype = torch.float32
    device = torch.device("cpu")
    attn_processors: dict = {}     # no attention processors to swap: adapters cannot run over Triton

    def __init__(
        self,
        url: str,
        unet_dir: Path | str | None = None,
        *,
        model_name: str = "unet",
        model_version: str = "",
        config: dict | None = None,
        client_timeout_s: float | None = 120.0,
        connect_timeout_s: float = 10.0,
        ready_timeout_s: float = 0.0,
        max_concurrent_requests: int = 8,
        ssl: bool = False,
        headers: dict[str, str] | None = None,
    ):
        try:
            import tritonclient.grpc as grpcclient
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise FailedPrecondition("the Triton backbone needs tritonclient: pip install tritonclient grpcio "
                                     "(not the [grpc] extra, which pins protobuf<7)",
                                     reason="TRITON_CLIENT_MISSING") from exc
        self._grpcclient = grpcclient
        self.url = url
        self.model_name = model_name
        self.model_version = model_version
        self.client_timeout_s = client_timeout_s
        self.headers = dict(headers or {})
        self.config, config_source = _load_config(unet_dir, config)
        self._where = f"Triton model {model_name!r} at {url}"
        self._client = grpcclient.InferenceServerClient(url, ssl=ssl)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._max_concurrent = max(1, int(max_concurrent_requests))
        try:
            self._check_server(connect_timeout_s)
            metadata, model_config = self._fetch_model(connect_timeout_s)
            self._wait_model_ready(connect_timeout_s, ready_timeout_s)
            self._check_metadata(metadata, model_config, config_source)
        except BaseException:
            self._client.close()
            raise

    # --- construction checks -------------------------------------------------------------------------------

    def _status(self, exc) -> str:
        return exc.status() if hasattr(exc, "status") and exc.status() else ""

    def _check_server(self, timeout_s: float) -> None:
        try:
            live = self._client.is_server_live(headers=self.headers, client_timeout=timeout_s)
        except self._exc_type() as exc:
            raise Unavailable(f"Triton server at {self.url} cannot be reached ({self._status(exc) or 'error'}: "
                              f"{exc.message() if hasattr(exc, 'message') else exc})", reason="TRITON_UNREACHABLE")
        if not live:
            raise Unavailable(f"Triton server at {self.url} is not live", reason="TRITON_UNREACHABLE")

    def _exc_type(self):
        from tritonclient.utils import InferenceServerException

        return InferenceServerException

    def _fetch_model(self, timeout_s: float) -> tuple[dict, dict]:
        try:
            metadata = self._client.get_model_metadata(self.model_name, self.model_version, headers=self.headers,
                                                       as_json=True, client_timeout=timeout_s)
            model_config = self._client.get_model_config(self.model_name, self.model_version,
                                                         headers=self.headers, as_json=True,
                                                         client_timeout=timeout_s)
        except self._exc_type() as exc:
            status = self._status(exc)
            if status in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"):
                raise Unavailable(f"{self._where}: {exc.message()}", reason="TRITON_UNREACHABLE") from None
            raise ModelFilesError(f"{self._where}: the server has no such model "
                                  f"(version {self.model_version or 'latest'}): {exc.message()}") from None
        return metadata, model_config.get("config", model_config)

    def _wait_model_ready(self, timeout_s: float, ready_timeout_s: float) -> None:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            try:
                ready = self._client.is_model_ready(self.model_name, self.model_version, headers=self.headers,
                                                    client_timeout=timeout_s)
            except self._exc_type() as exc:
                raise Unavailable(f"{self._where}: readiness check failed: {exc}", reason="TRITON_UNREACHABLE")
            if ready:
                return
            if time.monotonic() >= deadline:
                raise Unavailable(f"{self._where} is not ready (still loading, or failed to load: see the Triton "
                                  f"server's log)", reason="TRITON_MODEL_NOT_READY")
            time.sleep(0.25)

    def _check_metadata(self, metadata: dict, model_config: dict, config_source: str) -> None:
        cfg = self.config
        c_in = int(cfg["in_channels"])
        c_out = int(cfg.get("out_channels", c_in))
        d = int(cfg["cross_attention_dim"])
        self.max_batch_size = int(model_config.get("max_batch_size", 0) or 0)
        # None = any size there (-1 in the model); the batch dimension always comes first.
        expected_inputs = {
            INPUT_SAMPLE: ("FP32", [None, c_in, None, None], f"[-1, {c_in}, h, w] (in_channels={c_in})"),
            INPUT_TIMESTEP: ("INT64", [None, 1], "[-1, 1]"),
            INPUT_TEXT: ("FP32", [None, None, d], f"[-1, L, {d}] (cross_attention_dim={d})"),
        }
        expected_outputs = {
            OUTPUT_NOISE: ("FP32", [None, c_out, None, None], f"[-1, {c_out}, h, w] (out_channels={c_out})"),
        }
        problems: list[str] = []
        shapes: dict[str, list[int]] = {}
        for kind, expected, actual in (("input", expected_inputs, metadata.get("inputs", [])),
                                       ("output", expected_outputs, metadata.get("outputs", []))):
            by_name = {t.get("name"): t for t in actual}
            for name, (dtype, dims, text) in expected.items():
                tensor = by_name.get(name)
                if tensor is None:
                    problems.append(f"{kind} {name!r} is missing (the model's {kind}s: "
                                    f"{', '.join(sorted(map(str, by_name))) or 'none'})")
                    continue
                if tensor.get("datatype") != dtype:
                    problems.append(f"{kind} {name!r} has datatype {tensor.get('datatype')}, expected {dtype}")
                shape = _dims(tensor.get("shape", []))
                shapes[name] = shape
                ok = len(shape) == len(dims) and all(
                    (got == -1 or got > 0) if want is None else got == want for got, want in zip(shape, dims))
                if not ok:
                    problems.append(f"{kind} {name!r} has shape {shape}, expected {text}")
            if kind == "input":
                extra = sorted(set(by_name) - set(expected))
                if extra:
                    problems.append(f"unexpected inputs {extra} (this client sends only {sorted(expected)})")
        if problems:
            raise ModelFilesError(f"{self._where} does not match the UNet of {config_source}: "
                                  + "; ".join(problems))
        batch_dim = shapes[INPUT_SAMPLE][0]
        self._row_limit = self.max_batch_size if self.max_batch_size > 0 else (batch_dim if batch_dim > 0 else 0)
        self._fixed_hw = tuple(shapes[INPUT_SAMPLE][2:])
        self._fixed_len = shapes[INPUT_TEXT][1]

    # --- torch-module-like surface --------------------------------------------------------------------------

    def to(self, *args, **kwargs) -> "TritonUNet":
        """No-op (the weights live on the Triton server); results follow the sample's device and dtype."""
        return self

    def eval(self) -> "TritonUNet":
        return self

    def train(self, mode: bool = True) -> "TritonUNet":
        if mode:
            raise FailedPrecondition("a Triton-served UNet cannot be trained", reason="TRITON_UNSUPPORTED")
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "TritonUNet":
        return self

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        self._client.close()

    def __enter__(self) -> "TritonUNet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TritonUNet(url={self.url!r}, model={self.model_name!r})"

    def statistics(self) -> dict:
        """Triton's inference statistics for this model (get_inference_statistics, as JSON)."""
        try:
            return self._client.get_inference_statistics(self.model_name, self.model_version, headers=self.headers,
                                                         as_json=True, client_timeout=self.client_timeout_s)
        except self._exc_type() as exc:
            raise self._map_error(exc) from None

    # --- forward ---------------------------------------------------------------------------------------------

    def __call__(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor | None = None,
                 return_dict: bool = False, **kwargs):
        self._reject_unsupported(kwargs)
        if encoder_hidden_states is None:
            raise ValueError("encoder_hidden_states is required (the Triton UNet is text-conditioned)")
        out = self.forward_numpy(*self._prepare(sample, timestep, encoder_hidden_states))
        noise = torch.from_numpy(out).to(device=sample.device, dtype=sample.dtype)
        return UNetOutput(noise) if return_dict else (noise,)

    forward = __call__

    def _reject_unsupported(self, kwargs: dict) -> None:
        for name, value in kwargs.items():
            if name not in _UNSUPPORTED:
                raise TypeError(f"TritonUNet got an unexpected keyword argument {name!r}")
            if value is None or (isinstance(value, dict) and not value):
                continue
            raise FailedPrecondition(
                f"{_UNSUPPORTED[name]} ({name}) are not supported by a UNet served over Triton "
                f"({self._where} takes only sample, timestep and encoder_hidden_states); use the diffusers "
                f"backend for ControlNets, identity adapters and LoRAs", reason="TRITON_UNSUPPORTED")

    def _prepare(self, sample, timestep, text) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not isinstance(sample, torch.Tensor) or sample.ndim != 4:
            raise ValueError(f"sample must be a (B, C, h, w) tensor, got {getattr(sample, 'shape', type(sample))}")
        b = sample.shape[0]
        if sample.shape[1] != self.config["in_channels"]:
            raise ValueError(f"sample has {sample.shape[1]} channels, the UNet takes {self.config['in_channels']}")
        if not isinstance(text, torch.Tensor) or text.ndim != 3 or text.shape[0] != b \
                or text.shape[2] != self.config["cross_attention_dim"]:
            raise ValueError(f"encoder_hidden_states must be (B={b}, L, {self.config['cross_attention_dim']}), "
                             f"got {tuple(getattr(text, 'shape', ()))}")
        t = torch.as_tensor(timestep).detach().reshape(-1).cpu()
        if t.numel() == 1:
            t = t.expand(b)
        if t.numel() != b:
            raise ValueError(f"timestep must be a scalar or have B={b} values, got {t.numel()}")
        if t.is_floating_point():
            if not torch.equal(t, t.round()):
                raise ValueError(f"timesteps must be integers for the Triton UNet (INT64 on the wire), got "
                                 f"{t.tolist()}")
        h, w = sample.shape[2:]
        fh, fw = self._fixed_hw
        if (fh > 0 and fh != h) or (fw > 0 and fw != w):
            raise InvalidArgument("resolution", f"{self._where} serves only {fh}x{fw} latents, got {h}x{w}")
        if self._fixed_len > 0 and text.shape[1] != self._fixed_len:
            raise ValueError(f"{self._where} takes text states of length {self._fixed_len}, got {text.shape[1]}")
        sample_np = sample.detach().to("cpu", torch.float32).contiguous().numpy()
        t_np = t.to(torch.int64).reshape(b, 1).contiguous().numpy()
        text_np = text.detach().to("cpu", torch.float32).contiguous().numpy()
        return sample_np, t_np, text_np

    def forward_numpy(self, sample: np.ndarray, timestep: np.ndarray, text: np.ndarray) -> np.ndarray:
        """noise_pred for float32 sample (B, C, h, w), int64 timestep (B, 1), float32 text (B, L, D)."""
        b = sample.shape[0]
        step = self._row_limit or b
        chunks = [(sample[i:i + step], timestep[i:i + step], text[i:i + step]) for i in range(0, b, step)]
        if len(chunks) == 1:
            return self._infer(*chunks[0])
        pool = self._get_pool()
        return np.concatenate(list(pool.map(lambda c: self._infer(*c), chunks)))

    def _get_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_concurrent, thread_name_prefix="triton-unet")
            return self._pool

    def _infer(self, sample: np.ndarray, timestep: np.ndarray, text: np.ndarray) -> np.ndarray:
        g = self._grpcclient
        inputs = []
        for name, array, dtype in ((INPUT_SAMPLE, sample, "FP32"), (INPUT_TIMESTEP, timestep, "INT64"),
                                   (INPUT_TEXT, text, "FP32")):
            tensor = g.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            inputs.append(tensor)
        try:
            result = self._client.infer(self.model_name, inputs, model_version=self.model_version,
                                        outputs=[g.InferRequestedOutput(OUTPUT_NOISE)], headers=self.headers,
                                        client_timeout=self.client_timeout_s)
        except self._exc_type() as exc:
            raise self._map_error(exc) from None
        out = result.as_numpy(OUTPUT_NOISE)
        expected = (sample.shape[0], int(self.config.get("out_channels", self.config["in_channels"])),
                    *sample.shape[2:])
        if out is None or tuple(out.shape) != expected:
            raise Internal(f"{self._where} returned {OUTPUT_NOISE} of shape "
                           f"{None if out is None else tuple(out.shape)}, expected {expected}")
        # tritonclient returns a read-only view of the response bytes; torch wants a writable array.
        return np.array(out, dtype=np.float32, copy=not out.flags.writeable or out.dtype != np.float32)

    def _map_error(self, exc) -> HeadForgeError:
        status = self._status(exc)
        message = f"{self._where}: {exc.message() if hasattr(exc, 'message') else exc}"
        if status == "StatusCode.INVALID_ARGUMENT":
            return InvalidArgument("triton", message, reason="TRITON_INVALID_ARGUMENT")
        cls = _ERRORS.get(status, Internal)
        return cls(message, reason="TRITON_" + (status.split(".")[-1] if status else "ERROR"))


__all__ = ["TritonUNet", "UNetConfig", "UNetOutput"]
