"""The field file: render.proto's NPZ layout of a feature-field scene. The inversion service writes it
(ExportField), the render service reads it (CreateScene from an asset) and writes it (Export).

Arrays (never pickles):
  "kind"              uint8 bytes of "triplane" | "trigrid" | "pyramid_trigrid"
  "meta"              uint8 bytes of a JSON object: rendering settings (META_KEYS; others are ignored)
  "planes"            (3, C, R, R) for a tri-plane, (3, D, C, R, R) for a tri-grid
  "level_<R>"         (3, D, C, R, R) per pyramid level instead of "planes"
  "decoder.<i>.weight" (out, in) and "decoder.<i>.bias" (out,), i = 0..L-1, L >= 2: the OSG decoder
                      (planes.decode_osg); the last layer's out = 1 + rgb_channels.
Grids may be float16 or float32; the decoder float32.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np

from services.common.errors import InvalidArgument
from services.core.planes import FIELD_KINDS

# the rendering settings a field file carries (the render service's field options of the same names)
META_KEYS = ("box_size", "ray_start", "ray_end", "samples_per_ray", "importance_samples", "plane_reduction",
             "density_activation", "density_scale", "plane_axes", "rgb_channels", "colour_activation")


@dataclass
class FieldArrays:
    """A field file's content. grids: "planes" or "level_<R>" -> the file layout above; decoder:
    [(weight (out, in), bias (out,))]; meta: settings (META_KEYS)."""

    kind: str
    grids: dict[str, np.ndarray]
    decoder: list[tuple[np.ndarray, np.ndarray]]
    meta: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return next(iter(self.grids.values())).shape[-3]

    @property
    def depth(self) -> int:
        return 1 if self.kind == "triplane" else next(iter(self.grids.values())).shape[1]

    @property
    def resolution(self) -> int:
        return max(g.shape[-1] for g in self.grids.values())

    @property
    def levels(self) -> list[int]:
        return [int(k[6:]) for k in self.grids] if self.kind == "pyramid_trigrid" else []

    @property
    def hidden(self) -> list[int]:
        return [w.shape[0] for w, _ in self.decoder[:-1]]

    @property
    def rgb_channels(self) -> int:
        return self.decoder[-1][0].shape[0] - 1


def write_field_npz(f: FieldArrays, *, grid_dtype: str = "float32") -> bytes:
    """The NPZ bytes of a field; grid_dtype "float32" | "float16" (the decoder stays float32)."""
    arrays = {"kind": np.frombuffer(f.kind.encode(), dtype=np.uint8)}
    for name, g in f.grids.items():
        arrays[name] = np.asarray(g, dtype=grid_dtype)
    for i, (w, b) in enumerate(f.decoder):
        arrays[f"decoder.{i}.weight"] = np.asarray(w, np.float32)
        arrays[f"decoder.{i}.bias"] = np.asarray(b, np.float32)
    meta = {k: v for k, v in f.meta.items() if k in META_KEYS}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def read_field_npz(data: bytes) -> FieldArrays:
    """Parse and check a field file; InvalidArgument("asset", reason ASSET_UNDECODABLE) naming what is wrong."""
    def bad(why: str):
        raise InvalidArgument("asset", why, reason="ASSET_UNDECODABLE")

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as e:  # zipfile, numpy format and pickle errors alike
        bad(f"not a readable .npz: {e}")
    try:
        kind = arrays.pop("kind").tobytes().decode()
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except KeyError as e:
        bad(f"missing {e.args[0]!r}")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        bad(f"undecodable kind/meta: {e}")
    if kind not in FIELD_KINDS:
        bad(f"unknown field kind {kind!r}")
    if not isinstance(meta, dict):
        bad("meta must be a JSON object")

    grid_keys = sorted((k for k in arrays if k == "planes" or k.startswith("level_")),
                       key=lambda k: int(k[6:]) if k.startswith("level_") and k[6:].isdigit() else -1)
    dec_keys = [k for k in arrays if k.startswith("decoder.")]
    extra = set(arrays) - set(grid_keys) - set(dec_keys)
    if extra:
        bad(f"unexpected arrays {sorted(extra)}")
    if kind != "pyramid_trigrid" and grid_keys != ["planes"]:
        bad(f"a {kind} file needs exactly 'planes', got {grid_keys}")
    if kind == "pyramid_trigrid" and (not grid_keys or "planes" in grid_keys
                                      or any(not k[6:].isdigit() for k in grid_keys)):
        bad(f"a pyramid_trigrid file needs level_<R> arrays, got {grid_keys}")
    ndim = 4 if kind == "triplane" else 5
    shapes = {k: arrays[k].shape for k in grid_keys}
    for k, s in shapes.items():
        if len(s) != ndim or s[0] != 3 or s[-1] != s[-2]:
            bad(f"{k} must be {'(3, C, R, R)' if ndim == 4 else '(3, D, C, R, R)'}, got {s}")
        if k.startswith("level_") and s[-1] != int(k[6:]):
            bad(f"{k} has side {s[-1]}")
    if len({s[1:-2] for s in shapes.values()}) != 1:
        bad(f"levels differ in depth/channels: {shapes}")
    channels = next(iter(shapes.values()))[-3]

    n_layers = len(dec_keys) // 2
    want = {f"decoder.{i}.{p}" for i in range(n_layers) for p in ("weight", "bias")}
    if n_layers < 2 or set(dec_keys) != want:
        bad(f"decoder needs decoder.<i>.weight/bias for i = 0..L-1 (L >= 2), got {sorted(dec_keys)}")
    widths = [channels]
    for i in range(n_layers):
        w, b = arrays[f"decoder.{i}.weight"].shape, arrays[f"decoder.{i}.bias"].shape
        if len(w) != 2 or w[1] != widths[-1] or b != (w[0],):
            bad(f"decoder.{i} has weight {w} and bias {b}; expected (out, {widths[-1]}) and (out,)")
        widths.append(w[0])
    rgb_channels = widths[-1] - 1
    if int(meta.get("rgb_channels", rgb_channels)) != rgb_channels:
        bad(f"meta rgb_channels {meta['rgb_channels']} but the decoder outputs {widths[-1]} = 1 + {rgb_channels}")
    for k, a in arrays.items():
        if a.dtype.kind != "f":
            bad(f"{k} must be floating point, got {a.dtype}")
        if not np.isfinite(a).all():
            bad(f"{k} has NaN or infinite values")
    return FieldArrays(kind, {k: arrays[k] for k in grid_keys},
                       [(arrays[f"decoder.{i}.weight"], arrays[f"decoder.{i}.bias"]) for i in range(n_layers)],
                       {k: meta[k] for k in META_KEYS if k in meta})
