"""The standard 3DGS PLY file (what the 3DGS reference code writes and splat viewers read).

One `vertex` element, binary little-endian float32 properties in this order:
  x, y, z                     mean (world units)
  nx, ny, nz                  zeros (unused, kept for compatibility)
  f_dc_0, f_dc_1, f_dc_2      SH degree-0 coefficient per colour channel (r, g, b)
  f_rest_0 .. f_rest_{3(K-1)-1}  higher SH coefficients, channel-major: f_rest_{c (K-1) + k} is
                              coefficient k + 1 of channel c (absent for degree 0)
  opacity                     logit of the opacity
  scale_0, scale_1, scale_2   log standard deviations (world units)
  rot_0 .. rot_3              quaternion (w, x, y, z), not necessarily normalised

Written with numpy (no plyfile dependency). The reader also accepts ascii and big-endian files, other
property types and extra properties or elements, as long as no list property precedes the vertex data.
"""

from __future__ import annotations

import re

import numpy as np

_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
          "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
          "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def property_names(sh_degree: int) -> list[str]:
    """Vertex property names, in file order, for SH degree 0..3."""
    rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def write_ply(means: np.ndarray, scales: np.ndarray, quats: np.ndarray, opacities: np.ndarray,
              sh0: np.ndarray, shN: np.ndarray) -> bytes:
    """PLY bytes from raw parameters: means (P, 3), log scales (P, 3), quats (P, 4) wxyz, opacity logits
    (P,), sh0 (P, 1, 3), shN (P, K - 1, 3)."""
    P = means.shape[0]
    degree = int(round(np.sqrt(shN.shape[1] + 1))) - 1
    columns = [means, np.zeros((P, 3)), sh0.reshape(P, 3),
               np.transpose(shN, (0, 2, 1)).reshape(P, -1),  # (P, 3, K-1): channel-major
               opacities.reshape(P, 1), scales, quats]
    data = np.concatenate([np.asarray(c, dtype=np.float64).reshape(P, -1) for c in columns], 1)
    names = property_names(degree)
    assert data.shape[1] == len(names)
    header = "\n".join(["ply", "format binary_little_endian 1.0", f"element vertex {P}"]
                       + [f"property float {n}" for n in names] + ["end_header"]) + "\n"
    return header.encode("ascii") + data.astype("<f4").tobytes()


def _parse_header(data: bytes) -> tuple[str, list[tuple[str, int, list]], int]:
    """(format, elements [(name, count, [(prop, numpy type) or (prop, None) for lists])], body offset)."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError("not a PLY file (no 'ply' magic or no end_header)")
    body = data.index(b"\n", end) + 1
    fmt, elements = "", []
    for line in data[:end].decode("ascii", errors="replace").splitlines()[1:]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property" and elements:
            if parts[1] == "list":
                elements[-1][2].append((parts[-1], None))
            elif parts[1] in _TYPES:
                elements[-1][2].append((parts[2], _TYPES[parts[1]]))
            else:
                raise ValueError(f"unknown PLY property type {parts[1]!r}")
    if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
        raise ValueError(f"unsupported PLY format {fmt!r}")
    return fmt, elements, body


def _vertex_table(data: bytes) -> np.ndarray:
    """The vertex element as a numpy structured array."""
    fmt, elements, offset = _parse_header(data)
    lines = data[offset:].decode("ascii", errors="replace").splitlines() if fmt == "ascii" else None
    line = 0
    for name, count, props in elements:
        if any(t is None for _, t in props):
            if name == "vertex":
                raise ValueError("list properties in the vertex element are not supported")
            raise ValueError(f"element {name!r} with list properties precedes the vertices")
        order = ">" if fmt == "binary_big_endian" else "<"
        dtype = np.dtype([(p, order + t) for p, t in props])
        if name == "vertex":
            if fmt == "ascii":
                rows = [tuple(r.split()[:len(props)]) for r in lines[line:line + count]]
                return np.array(rows, dtype=[(p, t) for p, t in props])
            if len(data) < offset + count * dtype.itemsize:
                raise ValueError("PLY file is truncated")
            return np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        offset += count * dtype.itemsize
        line += count
    raise ValueError("PLY file has no vertex element")


def read_ply(data: bytes) -> dict[str, np.ndarray]:
    """Raw float32 parameters {means, scales, quats, opacities, sh0, shN} from 3DGS PLY bytes; ValueError
    when a required property is missing or the f_rest count is not 3 (K - 1) for degree <= 3."""
    v = _vertex_table(data)
    names = set(v.dtype.names)
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [n for n in required if n not in names]
    if missing:
        raise ValueError(f"not a 3DGS PLY: missing vertex properties {missing}")
    rest = sorted((n for n in names if re.fullmatch(r"f_rest_\d+", n)), key=lambda n: int(n[7:]))
    if len(rest) % 3 or (len(rest) // 3 + 1) not in (1, 4, 9, 16) or \
            [int(n[7:]) for n in rest] != list(range(len(rest))):
        raise ValueError(f"{len(rest)} f_rest properties do not make an SH degree 0..3")
    P, k1 = len(v), len(rest) // 3

    def cols(keys) -> np.ndarray:
        return np.stack([np.asarray(v[k], dtype=np.float32) for k in keys], -1).reshape(P, len(keys))

    shN = cols(rest).reshape(P, 3, k1).transpose(0, 2, 1) if k1 else np.zeros((P, 0, 3), np.float32)
    out = {"means": cols(["x", "y", "z"]), "scales": cols(["scale_0", "scale_1", "scale_2"]),
           "quats": cols(["rot_0", "rot_1", "rot_2", "rot_3"]), "opacities": cols(["opacity"])[:, 0],
           "sh0": cols(["f_dc_0", "f_dc_1", "f_dc_2"]).reshape(P, 1, 3),
           "shN": np.ascontiguousarray(shN, dtype=np.float32)}
    for k, a in out.items():
        if not np.isfinite(a).all():
            raise ValueError(f"PLY {k} contains NaN or infinite values")
    return out
