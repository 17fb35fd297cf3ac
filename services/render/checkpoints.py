"""Scene checkpoints (GetState / SetState / CreateScene from a checkpoint asset): safetensors tensors
("rep/<name>" the representation's state, "optim/<group>/<index>/<key>" optimiser state) with a JSON
header {"version", "kind", "config", "step", "optimizer": {"step_count", "scalars"}}; never pickle."""

from __future__ import annotations

import json

import torch

from services.common.errors import FailedPrecondition, InvalidArgument
from services.render.optim import SceneOptimizer

CHECKPOINT_VERSION = 1


def write_checkpoint(kind: str, rep, step: int, optimizer: SceneOptimizer | None) -> bytes:
    """The checkpoint bytes of a scene; optimizer None leaves the optimiser state out."""
    from safetensors.torch import save

    tensors = {f"rep/{k}": v for k, v in rep.state_tensors().items()}
    opt_meta = {}
    if optimizer is not None:
        tensors.update(_optimizer_tensors(optimizer))
        opt_meta = _optimizer_meta(optimizer)
    meta = {"version": CHECKPOINT_VERSION, "kind": kind, "config": rep.config(), "step": step, "optimizer": opt_meta}
    return save({k: v.contiguous() for k, v in tensors.items()}, metadata={"headforge": json.dumps(meta)})


def _optimizer_tensors(opt: SceneOptimizer) -> dict[str, torch.Tensor]:
    out = {}
    for g in opt.torch.param_groups:
        for j, p in enumerate(g["params"]):
            for key, value in opt.torch.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.ndim > 0:
                    out[f"optim/{g['name']}/{j}/{key}"] = value.detach().cpu()
    return out


def _optimizer_meta(opt: SceneOptimizer) -> dict:
    scalars = {}
    for g in opt.torch.param_groups:
        for j, p in enumerate(g["params"]):
            for key, value in opt.torch.state.get(p, {}).items():
                if not isinstance(value, torch.Tensor) or value.ndim == 0:
                    scalars[f"{g['name']}/{j}/{key}"] = float(value)
    return {"step_count": opt.step_count, "scalars": scalars}


def read_checkpoint(data: bytes) -> dict:
    """Parse a checkpoint written by write_checkpoint: {"meta": {...}, "rep": tensors, "optim": tensors}."""
    from safetensors.torch import load

    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8:8 + header_len])["__metadata__"]["headforge"])
    except Exception as e:  # safetensors and json raise assorted errors on garbage
        raise InvalidArgument("checkpoint", f"not a HeadForge checkpoint: {e}", reason="BAD_CHECKPOINT") from None
    if meta.get("version") != CHECKPOINT_VERSION:
        raise FailedPrecondition(f"checkpoint version {meta.get('version')} is not {CHECKPOINT_VERSION}",
                                 reason="CHECKPOINT_VERSION")
    rep = {k[4:]: v for k, v in tensors.items() if k.startswith("rep/")}
    optim = {k[6:]: v for k, v in tensors.items() if k.startswith("optim/")}
    return {"meta": meta, "rep": rep, "optim": optim}


def checkpoint_bytes(cls, checkpoint: dict) -> int:
    """The bytes the checkpoint's representation will hold, found without allocating it: its config is
    built on torch's meta device. InvalidArgument when the config asks for more than the checkpoint's
    tensors hold (placeholders of a forged config would be allocated before the tensors are checked)."""
    tensor_bytes = sum(t.numel() * t.element_size() for t in checkpoint["rep"].values())
    try:
        with torch.device("meta"):
            declared = cls.from_config(checkpoint["meta"]["config"]).memory_bytes()
    except (RuntimeError, KeyError, ValueError, TypeError, NotImplementedError) as e:
        raise InvalidArgument("checkpoint", f"does not fit a {cls.kind} scene: {e}") from None
    if declared > tensor_bytes + (1 << 20):  # slack: small buffers a checkpoint may leave out
        raise InvalidArgument("checkpoint", f"its config declares {declared} bytes of parameters, its tensors "
                              f"hold {tensor_bytes}")
    return max(declared, tensor_bytes)


def rep_from_checkpoint(cls, checkpoint: dict):
    """The representation a checkpoint describes; InvalidArgument when its tensors do not fit its config."""
    try:
        rep = cls.from_config(checkpoint["meta"]["config"])
        rep.load_state_tensors(checkpoint["rep"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise InvalidArgument("checkpoint", f"does not fit a {cls.kind} scene: {e}") from None
    return rep


def load_optimizer_state(opt: SceneOptimizer, checkpoint: dict) -> None:
    meta = checkpoint["meta"].get("optimizer") or {}
    opt.step_count = int(meta.get("step_count", checkpoint["meta"].get("step", 0)))
    scalars = meta.get("scalars", {})
    for g in opt.torch.param_groups:
        for j, p in enumerate(g["params"]):
            state = {}
            prefix = f"{g['name']}/{j}/"
            for key, value in checkpoint["optim"].items():
                if key.startswith(prefix):
                    state[key[len(prefix):]] = value.to(p.device)
            for key, value in scalars.items():
                if key.startswith(prefix):
                    # torch's Adam keeps its step count as a 0-d tensor, Adan as an int
                    adan = opt.spec.kind == "adan"
                    state[key[len(prefix):]] = int(value) if adan else torch.tensor(float(value))
            if state:
                opt.torch.state[p] = state
