"""The on-disk generator format and loading.

A generator is a directory:

    <dir>/config.json         {"format": "headforge.gan", "version": 1,
                               "generator": {GeneratorConfig fields}, "source": "free text"}
    <dir>/model.safetensors   every parameter and buffer of TriplaneGenerator by its state_dict name
                               (the official EG3D names: backbone.mapping.fc0.weight,
                               backbone.synthesis.b4.const, decoder.net.0.weight,
                               superresolution.block0.conv0.weight, ...), float32 (float16 / bfloat16
                               are widened on load); equalised-lr parameters as stored by the
                               official code (the gains are applied at run time).

or, for an official pickle that has not been converted yet:

    <dir>/network.pkl         (EG3D / PanoHead network pickle; loads only with the trust flag)
    <dir>/config.json         optional: {"generator": {overrides}} applied after conversion

Loading checks the tensors against the configuration and fails with FailedPrecondition reason
CHECKPOINT_MISMATCH listing what was expected ("backbone.synthesis.b4.const: config expects
[512, 4, 4], the file has [256, 4, 4]"), GENERATOR_NOT_FOUND for missing files and
PICKLE_NOT_TRUSTED for a pickle without the trust flag.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from services.common.errors import FailedPrecondition
from services.core.models import file_sha256, folder_provenance
from services.inversion.generators.config import GeneratorConfig
from services.inversion.generators.triplane_generator import TriplaneGenerator

FORMAT = "headforge.gan"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PICKLE = "network.pkl"


@dataclass
class LoadedGenerator:
    generator: TriplaneGenerator
    weights_format: str      # "safetensors" or "pickle"
    path: str
    sha256: str              # first 16 hex chars of the weights file's sha256
    provenance: str = ""     # services.core.models: "random_weights" when the folder has the marker file


def _fail(message: str, reason: str, **meta) -> FailedPrecondition:
    return FailedPrecondition(message, reason=reason, metadata={k: str(v) for k, v in meta.items()})


def save_generator(generator: TriplaneGenerator, directory: str | Path, source: str = "") -> Path:
    """Write config.json + model.safetensors; returns the directory."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in generator.state_dict().items()}
    save_file(tensors, str(d / WEIGHTS), metadata={"format": FORMAT, "version": str(VERSION)})
    (d / CONFIG).write_text(json.dumps({"format": FORMAT, "version": VERSION, "source": source,
                                        "generator": generator.cfg.as_dict()}, indent=1, sort_keys=True))
    return d


def weights_format(directory: str | Path) -> str:
    """"safetensors", "pickle", or "" when the directory holds neither."""
    d = Path(directory)
    if (d / WEIGHTS).is_file():
        return "safetensors"
    if (d / PICKLE).is_file():
        return "pickle"
    return ""


def read_config(directory: str | Path) -> dict:
    """The parsed config.json ({} when absent); FailedPrecondition when unreadable."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(f"{path}: unreadable config.json: {e}", "GENERATOR_CONFIG_INVALID", path=path) from None
    if not isinstance(data, dict):
        raise _fail(f"{path}: config.json must hold a JSON object", "GENERATOR_CONFIG_INVALID", path=path)
    return data


def parse_config(data: dict, where: str) -> GeneratorConfig:
    if data.get("format", FORMAT) != FORMAT or int(data.get("version", VERSION)) != VERSION:
        raise _fail(f"{where}: format {data.get('format')!r} version {data.get('version')!r}; expected "
                    f"{FORMAT!r} version {VERSION}", "GENERATOR_CONFIG_INVALID")
    try:
        return GeneratorConfig.from_dict(data.get("generator") or {})
    except (TypeError, ValueError) as e:
        raise _fail(f"{where}: bad generator config: {e}", "GENERATOR_CONFIG_INVALID") from None


def load_state(generator: TriplaneGenerator, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copy tensors into the generator after checking names and shapes (CHECKPOINT_MISMATCH)."""
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    wrong = [f"{k}: config expects {list(expected[k].shape)}, the file has {list(tensors[k].shape)}"
             for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    if missing or extra or wrong:
        parts = []
        if wrong:
            parts.append("shape mismatch: " + "; ".join(wrong[:5]) + (f" (+{len(wrong) - 5} more)" if len(wrong) > 5 else ""))
        if missing:
            parts.append(f"missing {len(missing)} tensors, e.g. {missing[:5]}")
        if extra:
            parts.append(f"{len(extra)} unexpected tensors, e.g. {extra[:5]}")
        raise _fail(f"{where} does not match its config ({generator.cfg.kind}, planes {generator.cfg.plane_resolution}, "
                    f"w_dim {generator.cfg.w_dim}): " + "; ".join(parts), "CHECKPOINT_MISMATCH",
                    missing=len(missing), unexpected=len(extra), mismatched=len(wrong))
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise _fail(f"{where}: non-finite values in {bad[:5]}", "CHECKPOINT_MISMATCH")
    generator.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})


def load_generator(directory: str | Path, *, trust_pickles: bool = False, device: str | torch.device = "cpu"
                   ) -> LoadedGenerator:
    """Load a generator directory (see the module docstring); eval mode, no gradients enabled."""
    d = Path(directory)
    if not d.is_dir():
        raise _fail(f"generator directory {d} does not exist; expected {CONFIG} + {WEIGHTS} (or {PICKLE})",
                    "GENERATOR_NOT_FOUND", path=d)
    fmt = weights_format(d)
    data = read_config(d)
    if fmt == "safetensors":
        if not data:
            raise _fail(f"{d}: {WEIGHTS} without {CONFIG}; expected both (write them with "
                        "`headforge models convert-gan` or services.inversion.generators.checkpoint.save_generator)",
                        "GENERATOR_NOT_FOUND", path=d)
        cfg = parse_config(data, str(d / CONFIG))
        try:
            tensors = load_file(str(d / WEIGHTS))
        except Exception as e:  # safetensors raises its own error types on corrupt headers
            raise _fail(f"{d / WEIGHTS}: unreadable safetensors file: {e}", "CHECKPOINT_MISMATCH") from None
        gen = TriplaneGenerator(cfg)
        load_state(gen, tensors, str(d / WEIGHTS))
        sha = file_sha256(d / WEIGHTS)
    elif fmt == "pickle":
        from services.inversion.generators.convert_pickle import convert_network_pickle

        overrides = (data.get("generator") or {}) if data else {}
        gen = convert_network_pickle(d / PICKLE, trust=trust_pickles, overrides=overrides)
        sha = file_sha256(d / PICKLE)
    else:
        raise _fail(f"{d} holds no weights; expected {WEIGHTS} + {CONFIG} (HeadForge format) or {PICKLE} "
                    "(official EG3D/PanoHead pickle, needs --trust-pickles)", "GENERATOR_NOT_FOUND", path=d)
    gen.eval().requires_grad_(False)
    return LoadedGenerator(gen.to(device), fmt, str(d), sha, folder_provenance(d))
