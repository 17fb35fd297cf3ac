"""The expression adapter (ID-to-3D's second decoupled cross-attention, lambda_exp): its file format, the checks a
file must pass at config load, and a random one for tests. ID-to-3D's own adapters are unreleased; this is
HeadForge's format, built so that diffusers' IP-Adapter loader loads it beside the FaceID identity adapter.

What it computes: the expression text ("smiling", "angry", ...) is encoded by the backbone's OWN CLIP text encoder
(no extra model): its pooled output `text_encoder(ids).pooler_output`, the final-layer-normed hidden state at the
EOS token, shape (D_text,) (SD1.5: 768, SD2.x: 1024, the tiny SD: 32). A projection maps it to N tokens of the
UNet's cross-attention dim C, and every cross-attention layer attends to them with its own to_k_ip / to_v_ip
(IP-Adapter's decoupled cross-attention): out = attn(text) + lambda_exp * attn_ip(expression tokens).

File: one `.safetensors` with the metadata header
    {"headforge_adapter": "expression", "num_tokens": "<N>", "embedding": "text_encoder_pooled"}
(safetensors metadata values are strings) and exactly these tensors (float32 or float16):
    image_proj.proj.0.weight  (M * D_text, D_text)  first MLP layer, M an integer multiplier (GELU follows)
    image_proj.proj.0.bias    (M * D_text,)
    image_proj.proj.2.weight  (N * C, M * D_text)   second MLP layer -> N tokens of C
    image_proj.proj.2.bias    (N * C,)
    image_proj.norm.weight    (C,)                  LayerNorm over each token
    image_proj.norm.bias      (C,)
    ip_adapter.{k}.to_k_ip.weight  (H_k, C)         for every cross-attention processor k, numbered by its
    ip_adapter.{k}.to_v_ip.weight  (H_k, C)         position in `unet.attn_processors` (SD: the odd k = 1, 3, ...)
                                                    with H_k that block's hidden size
The image_proj part is the IP-Adapter-FaceID projection layout (diffusers builds an
IPAdapterFaceIDImageProjection from it: N = proj.2 rows / C, any N) and the ip_adapter part is the key layout
of diffusers' IPAdapterAttnProcessor weights, so `load_ip_adapter` loads it as one more adapter in its list.
There is no LoRA part. The unconditional (classifier-free guidance) rows get a zero embedding, as the FaceID
adapter's do.
"""

from __future__ import annotations

from pathlib import Path

import torch

from services.guidance.backbones.base import ModelFilesError

FORMAT_MARKER = "expression"
EMBEDDING = "text_encoder_pooled"
PROJ_KEYS = ("proj.0.weight", "proj.0.bias", "proj.2.weight", "proj.2.bias", "norm.weight", "norm.bias")
LAYOUT = ("a safetensors file with metadata {\"headforge_adapter\": \"expression\", \"num_tokens\": N, "
          "\"embedding\": \"text_encoder_pooled\"} and tensors image_proj.{proj.0,proj.2,norm}.{weight,bias} and "
          "ip_adapter.<k>.to_k_ip.weight / to_v_ip.weight per cross-attention processor "
          "(services/guidance/backbones/expression_adapter.py)")


def attention_processor_dims(unet) -> list[tuple[str, int, int | None]]:
    """(processor name, hidden size, cross-attention dim or None for self-attention) in attn_processors order."""
    out = []
    blocks = list(unet.config.block_out_channels)
    for name in unet.attn_processors:
        if name.startswith("mid_block"):
            hidden = blocks[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(blocks))[int(name.split(".")[1])]
        else:
            hidden = blocks[int(name.split(".")[1])]
        cross = None if name.endswith("attn1.processor") else unet.config.cross_attention_dim
        out.append((name, hidden, cross))
    return out


def cross_attention_processors(unet) -> list[tuple[int, int]]:
    """(k, hidden size H_k) of every cross-attention processor, k its index in unet.attn_processors."""
    return [(k, hidden) for k, (_, hidden, cross) in enumerate(attention_processor_dims(unet)) if cross is not None]


def read_expression_adapter(path: Path, unet, text_dim: int) -> tuple[dict, int]:
    """Read and check one expression adapter file for this UNet and a text encoder of pooled dim `text_dim`.
    Returns ({"image_proj": {...}, "ip_adapter": {...}} as diffusers' load_ip_adapter takes it, N tokens);
    ModelFilesError naming the file and what is wrong (header, missing / unexpected keys, shapes)."""
    def bad(what: str) -> ModelFilesError:
        return ModelFilesError(f"expression adapter {path}: {what}; expected {LAYOUT}")

    if path.suffix != ".safetensors":
        raise bad("not a .safetensors file")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise bad(f"unreadable ({type(e).__name__}: {e})") from e
    if meta.get("headforge_adapter") != FORMAT_MARKER:
        raise bad(f"metadata headforge_adapter is {meta.get('headforge_adapter')!r}, not 'expression'")
    if meta.get("embedding") != EMBEDDING:
        raise bad(f"metadata embedding is {meta.get('embedding')!r}; only {EMBEDDING!r} is supported")
    try:
        tokens = int(meta.get("num_tokens", ""))
    except ValueError:
        raise bad(f"metadata num_tokens {meta.get('num_tokens')!r} is not an integer") from None
    if tokens < 1:
        raise bad(f"metadata num_tokens {tokens} must be >= 1")

    c = int(unet.config.cross_attention_dim)
    procs = cross_attention_processors(unet)
    expected = {f"image_proj.{k}" for k in PROJ_KEYS}
    expected |= {f"ip_adapter.{k}.{p}.weight" for k, _ in procs for p in ("to_k_ip", "to_v_ip")}
    missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing:
        raise bad(f"missing tensors {missing[:6]}{' ...' if len(missing) > 6 else ''}")
    if extra:
        raise bad(f"unexpected tensors {extra[:6]}{' ...' if len(extra) > 6 else ''}")

    def shape(key: str, want: tuple[int, ...]) -> None:
        got = tuple(tensors[key].shape)
        if got != want:
            raise bad(f"{key} has shape {got}, expected {want}")

    hidden = int(tensors["image_proj.proj.0.weight"].shape[0])
    if hidden % max(text_dim, 1) or tensors["image_proj.proj.0.weight"].ndim != 2:
        raise bad(f"image_proj.proj.0.weight has shape {tuple(tensors['image_proj.proj.0.weight'].shape)}, "
                  f"expected (M * {text_dim}, {text_dim}) for the text encoder's pooled dim {text_dim}")
    shape("image_proj.proj.0.weight", (hidden, text_dim))
    shape("image_proj.proj.0.bias", (hidden,))
    shape("image_proj.proj.2.weight", (tokens * c, hidden))
    shape("image_proj.proj.2.bias", (tokens * c,))
    shape("image_proj.norm.weight", (c,))
    shape("image_proj.norm.bias", (c,))
    for k, h in procs:
        for p in ("to_k_ip", "to_v_ip"):
            shape(f"ip_adapter.{k}.{p}.weight", (h, c))
    state = {"image_proj": {}, "ip_adapter": {}}
    for key, value in tensors.items():
        head, _, rest = key.partition(".")
        state[head][rest] = value.float()
    return state, tokens


def expression_state(unet, text_dim: int, *, tokens: int = 2, mult: int = 2, seed: int = 6) -> dict[str, torch.Tensor]:
    """A random expression adapter for `unet` in the file's flat key layout (tests: the tiny models)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std):
        return torch.randn(shape, generator=g) * std

    c, hidden = int(unet.config.cross_attention_dim), text_dim * mult
    out = {"image_proj.proj.0.weight": rnd(hidden, text_dim, std=text_dim ** -0.5),
           "image_proj.proj.0.bias": rnd(hidden, std=0.01),
           "image_proj.proj.2.weight": rnd(c * tokens, hidden, std=hidden ** -0.5),
           "image_proj.proj.2.bias": rnd(c * tokens, std=0.01),
           "image_proj.norm.weight": 1.0 + rnd(c, std=0.05), "image_proj.norm.bias": rnd(c, std=0.05)}
    for k, h in cross_attention_processors(unet):
        out[f"ip_adapter.{k}.to_k_ip.weight"] = rnd(h, c, std=c ** -0.5)
        out[f"ip_adapter.{k}.to_v_ip.weight"] = rnd(h, c, std=c ** -0.5)
    return out


def write_expression_adapter(path: Path, tensors: dict[str, torch.Tensor], tokens: int) -> None:
    """Write `tensors` (the flat layout above) with the format's metadata header, byte-for-byte deterministic
    (safetensors' own writer orders the metadata at random: the header is re-serialised with sorted keys)."""
    import json
    import struct

    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"headforge_adapter": FORMAT_MARKER, "num_tokens": str(tokens), "embedding": EMBEDDING}
    blob = save({k: v.contiguous() for k, v in sorted(tensors.items())}, metadata=meta)
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + n:])
