"""3DDFA-V2 (cleardusk/3DDFA_V2, MIT) 68 3D landmarks and head rotation from its published ONNX model.

Files (the 3DDFA_V2 repository layout; each is also found directly in the folder or under weights/ or
configs/, so a checkout or a flat folder both work):
    weights/mb1_120x120.onnx                 MobileNetV1: float32 (1, 3, 120, 120) BGR, (x - 127.5) / 128
                                             -> (1, 62) normalised 3DMM parameters
    configs/param_mean_std_62d_120x120.pkl   {'mean': (62,), 'std': (62,)}: params = out * std + mean
    configs/bfm_noneck_v3.pkl                the Basel Face Model as 3DDFA_V2 reduces it: 'u' (3N, 1),
                                             'w_shp' (3N, 40), 'w_exp' (3N, 10), 'tri', 'keypoints' (204,)
                                             indices into the 3N vector (x, y, z of each of the 68 points)
The .pkl files are pickles: they are read (with an unpickler that admits only numpy arrays) only when the
user says they trust them (FaceConfig.trust_pickles / --trust-pickles); otherwise the .npz conversions
that `python -m services.face.backends.tddfa convert DIR --trust-pickles` writes beside them are required
(bfm_noneck_v3.npz, param_mean_std_62d_120x120.npz; they are preferred whenever present).

The computation follows 3DDFA_V2's TDDFA_ONNX.py, utils/functions.py and utils/tddfa_util.py (read at
cleardusk/3DDFA_V2 for this module):
  - roi box from a face box (parse_roi_box_from_bbox): side int(1.58 * mean(width, height)), centred on
    the box centre moved down by 0.14 of that mean;
  - crop (crop_img: the roi rounded to whole pixels, zero outside the image), resized to 120 (bilinear);
  - params: 12 pose = the 3x4 [sR | t] row-major, 40 shape, 10 expression;
  - 68 points in the crop = sR @ (u + W_shp a_shp + W_exp a_exp) (3, 68) + t, the 204-vector read as
    (3, 68) column-major (x0, y0, z0, x1, ...); the crop frame has y up;
  - to the image (similar_transform): x -= 1, z -= 1, y = 120 - y, then x, y scaled by the roi side / 120
    and shifted to the roi's corner, z scaled by the mean scale and shifted so that its minimum is 0.
    (The roi used here is the unrounded one, as in 3DDFA_V2.)
  - rotation (utils/pose.py P2sRt): the rows of sR normalised, the third their cross product.

Licences: the 3DDFA_V2 code and its mb1_120x120 weights are MIT; the Basel Face Model that
bfm_noneck_v3.pkl is derived from is for academic / non-commercial use only (its licence agreement with
the University of Basel).
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.common.errors import FailedPrecondition
from services.core.models import PROVENANCE_KEY, ModelRecord, file_sha256, folder_provenance
from services.face.backends.insightface import onnx_session

SIZE = 120
ONNX_NAME = "mb1_120x120.onnx"
PARAM_STEM = "param_mean_std_62d_120x120"
BFM_STEM = "bfm_noneck_v3"
SUBDIRS = ("", "weights", "configs")
N_PARAMS, N_SHAPE, N_EXP = 62, 40, 10
LICENSE_NET = "MIT (3DDFA_V2, cleardusk)"
LICENSE_BFM = ("Basel Face Model (University of Basel): academic / non-commercial use only; its licence "
               "applies to 3DDFA_V2's bfm_noneck_v3 derived from it")
CONVERT_HINT = "python -m services.face.backends.tddfa convert DIR --trust-pickles"

# the only globals a numpy-array pickle needs (numpy 1.x and 2.x module names; _codecs.encode carries the
# raw bytes of protocol-2 pickles)
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class TddfaFilesError(ValueError):
    """A 3DDFA-V2 folder that cannot be used (missing file, pickle not trusted, bad array shapes)."""


@dataclass
class TddfaFiles:
    folder: Path
    onnx: Path
    params: Path   # .npz or .pkl
    bfm: Path      # .npz or .pkl


def _find(folder: Path, name: str) -> Path | None:
    for sub in SUBDIRS:
        path = folder / sub / name
        if path.is_file():
            return path
    return None


def _layout() -> str:
    return (f"weights/{ONNX_NAME}, configs/{PARAM_STEM}.pkl and configs/{BFM_STEM}.pkl as in cleardusk/3DDFA_V2 "
            f"(or their .npz conversions; the files may also lie directly in the folder)")


def find_files(folder: str | Path, trust_pickles: bool = False) -> TddfaFiles:
    """The model files of a 3DDFA-V2 folder. TddfaFilesError naming what is missing, or that only a pickle
    is there and pickles are not trusted."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise TddfaFilesError(f"tddfa_dir {root} does not exist or is not a folder (expected {_layout()})")
    onnx_path = _find(root, ONNX_NAME)
    if onnx_path is None:
        raise TddfaFilesError(f"tddfa_dir {root} has no {ONNX_NAME} (expected {_layout()})")
    found = []
    for stem in (PARAM_STEM, BFM_STEM):
        npz, pkl = _find(root, stem + ".npz"), _find(root, stem + ".pkl")
        if npz is not None:
            found.append(npz)
        elif pkl is not None and trust_pickles:
            found.append(pkl)
        elif pkl is not None:
            raise TddfaFilesError(
                f"{pkl} is a pickle, and pickles are read only when you trust them: set trust_pickles: true "
                f"(--trust-pickles), or convert them once to .npz: {CONVERT_HINT.replace('DIR', str(root))}")
        else:
            raise TddfaFilesError(f"tddfa_dir {root} has no {stem}.npz or {stem}.pkl (expected {_layout()})")
    return TddfaFiles(root, onnx_path, found[0], found[1])


class _ArrayUnpickler(pickle.Unpickler):
    """Admits only numpy arrays, dtypes and scalars (and plain dicts, lists, numbers, strings)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: a 3DDFA-V2 pickle holds only numpy arrays")
        if module == "_codecs":
            import codecs
            return codecs.encode
        if module.endswith("multiarray"):
            try:
                from numpy._core import multiarray   # numpy 2
            except ImportError:                       # numpy 1
                from numpy.core import multiarray
            return getattr(multiarray, name)
        return getattr(np, name)


def read_pickle(path: str | Path) -> dict:
    """A dict of numpy arrays from a 3DDFA-V2 pickle, read with _ArrayUnpickler (UnpicklingError for any
    other object). Call only for files the user trusts."""
    data = Path(path).read_bytes()
    obj = _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    if not isinstance(obj, dict):
        raise TddfaFilesError(f"{path}: expected a dict, got {type(obj).__name__}")
    return obj


def read_arrays(path: str | Path, trust_pickles: bool = False) -> dict[str, np.ndarray]:
    """The arrays of an .npz, or of a .pkl when trust_pickles (TddfaFilesError otherwise)."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if not trust_pickles:
        raise TddfaFilesError(f"{path} is a pickle and trust_pickles is off ({CONVERT_HINT})")
    return {str(k): np.asarray(v) for k, v in read_pickle(path).items()}


def convert(folder: str | Path, trust_pickles: bool) -> list[Path]:
    """Write <stem>.npz beside each of the folder's two pickles (the same arrays, same keys); returns them."""
    if not trust_pickles:
        raise TddfaFilesError("converting reads the pickles: pass --trust-pickles if you trust them")
    root = Path(folder).expanduser()
    written = []
    for stem in (PARAM_STEM, BFM_STEM):
        pkl = _find(root, stem + ".pkl")
        if pkl is None:
            raise TddfaFilesError(f"{root} has no {stem}.pkl (expected {_layout()})")
        out = pkl.with_suffix(".npz")
        np.savez(out, **read_arrays(pkl, trust_pickles=True))
        written.append(out)
    return written


@dataclass
class SparseBFM:
    """The BFM at the 68 landmarks (3DDFA_V2's u_base, w_shp_base, w_exp_base): u (204,), w_shp (204, 40),
    w_exp (204, 10), BFM units (about a millimetre), x0, y0, z0, x1, ... per landmark; n_vertices: N."""

    u: np.ndarray
    w_shp: np.ndarray
    w_exp: np.ndarray
    n_vertices: int

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], name: str = BFM_STEM) -> "SparseBFM":
        missing = [k for k in ("u", "w_shp", "w_exp", "keypoints") if k not in arrays]
        if missing:
            raise TddfaFilesError(f"{name}: missing {missing} (has {sorted(arrays)})")
        u = np.asarray(arrays["u"], np.float32).reshape(-1)
        w_shp, w_exp = np.asarray(arrays["w_shp"], np.float32), np.asarray(arrays["w_exp"], np.float32)
        kp = np.asarray(arrays["keypoints"]).reshape(-1).astype(np.int64)
        n3 = u.shape[0]
        if n3 % 3 or w_shp.shape != (n3, N_SHAPE) or w_exp.shape != (n3, N_EXP):
            raise TddfaFilesError(f"{name}: expected u (3N, 1), w_shp (3N, {N_SHAPE}), w_exp (3N, {N_EXP}); got "
                                  f"{list(arrays['u'].shape)}, {list(w_shp.shape)}, {list(w_exp.shape)}")
        if kp.shape != (204,) or kp.min() < 0 or kp.max() >= n3:
            raise TddfaFilesError(f"{name}: keypoints must be 204 indices into the 3N = {n3} vector")
        return cls(u[kp], w_shp[kp], w_exp[kp], n3 // 3)

    def shape(self, alpha_shp: np.ndarray, alpha_exp: np.ndarray) -> np.ndarray:
        """(3, 68) model-frame points u + W_shp a_shp + W_exp a_exp (the 204-vector read column-major)."""
        flat = self.u + self.w_shp @ alpha_shp + self.w_exp @ alpha_exp
        return flat.reshape(3, -1, order="F")


def roi_box_from_bbox(box) -> np.ndarray:
    """(4,) sx, sy, ex, ey: the square crop 3DDFA-V2 takes around a face box (x0, y0, x1, y1) in pixels."""
    left, top, right, bottom = (float(v) for v in box[:4])
    old = (right - left + bottom - top) / 2
    cx, cy = right - (right - left) / 2.0, bottom - (bottom - top) / 2.0 + old * 0.14
    side = int(old * 1.58)
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def crop_roi(image: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """The roi (rounded to whole pixels) of an (H, W, C) uint8 image; zero where it leaves the image."""
    h, w = image.shape[:2]
    sx, sy, ex, ey = (int(round(v)) for v in roi)
    out = np.zeros((max(ey - sy, 1), max(ex - sx, 1), image.shape[2]), np.uint8)
    x0, y0, x1, y1 = max(sx, 0), max(sy, 0), min(ex, w), min(ey, h)
    if x1 > x0 and y1 > y0:
        out[y0 - sy:y1 - sy, x0 - sx:x1 - sx] = image[y0:y1, x0:x1]
    return out


def parse_params(param: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(62,) -> sR (3, 3), t (3, 1), alpha_shp (40,), alpha_exp (10,)."""
    P = np.asarray(param, np.float64)[:12].reshape(3, 4)
    return P[:, :3], P[:, 3:], np.asarray(param[12:52], np.float64), np.asarray(param[52:62], np.float64)


def rotation_from_params(param: np.ndarray) -> tuple[float, np.ndarray]:
    """(scale, R (3, 3)): the rows of sR normalised, the third their cross product (3DDFA_V2's P2sRt).
    R maps the BFM frame (+Y up, face along +Z) to the crop frame (x right, y up, z toward the viewer)."""
    sR = parse_params(param)[0]
    n1, n2 = np.linalg.norm(sR[0]), np.linalg.norm(sR[1])
    r1, r2 = sR[0] / n1, sR[1] / n2
    return float((n1 + n2) / 2), np.stack([r1, r2, np.cross(r1, r2)])


def crop_to_image(pts: np.ndarray, roi: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(3, K) points in the size x size crop frame (y up) -> (K, 3) image points: x, y pixels, z in pixels,
    larger = nearer the camera, minimum 0 (3DDFA_V2's similar_transform)."""
    p = np.array(pts, np.float64)
    p[0] -= 1
    p[2] -= 1
    p[1] = size - p[1]
    sx, sy, ex, ey = roi
    scale_x, scale_y = (ex - sx) / size, (ey - sy) / size
    p[0] = p[0] * scale_x + sx
    p[1] = p[1] * scale_y + sy
    p[2] *= (scale_x + scale_y) / 2
    p[2] -= p[2].min()
    return p.T


@dataclass
class TddfaResult:
    params: np.ndarray          # (62,) de-normalised
    roi_box: np.ndarray         # (4,) sx, sy, ex, ey pixels
    landmarks_image: np.ndarray  # (68, 3) x, y image pixels; z pixels, larger = nearer, min 0
    shape_model: np.ndarray     # (68, 3) BFM frame (+Y up, face along +Z), BFM units, before pose
    rotation: np.ndarray        # (3, 3) BFM frame -> crop frame (x right, y up, z toward the viewer); P2sRt's,
                                # so only as orthonormal as the net's prediction (rows unit, r3 = r1 x r2)
    scale: float                # crop pixels per BFM unit


class Tddfa:
    """3DDFA-V2 on RGB uint8 images: predict(image, box) -> TddfaResult. Thread-safe (onnxruntime Run)."""

    name = "tddfa_v2"

    def __init__(self, folder: str | Path, trust_pickles: bool = False):
        try:
            self.files = find_files(folder, trust_pickles)
            stats = read_arrays(self.files.params, trust_pickles)
            self.bfm = SparseBFM.from_arrays(read_arrays(self.files.bfm, trust_pickles), self.files.bfm.name)
        except (TddfaFilesError, pickle.UnpicklingError, OSError, ValueError) as e:
            raise FailedPrecondition(f"3DDFA-V2 models: {e}", reason="MODELS_MISSING") from e
        self.mean = np.asarray(stats.get("mean"), np.float32).reshape(-1)
        self.std = np.asarray(stats.get("std"), np.float32).reshape(-1)
        if self.mean.shape != (N_PARAMS,) or self.std.shape != (N_PARAMS,):
            raise FailedPrecondition(f"{self.files.params}: expected 'mean' and 'std' of shape (62,)",
                                     reason="MODELS_MISSING")
        self._session = onnx_session(self.files.onnx)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        shape = inputs[0].shape
        if len(inputs) != 1 or len(shape) != 4 or shape[1] != 3 or tuple(shape[2:]) != (SIZE, SIZE) or \
                outputs[0].shape[-1] != N_PARAMS:
            raise FailedPrecondition(f"{self.files.onnx}: expected one (1, 3, {SIZE}, {SIZE}) input and a (1, 62) "
                                     f"output, got {[i.shape for i in inputs]} -> {[o.shape for o in outputs]}",
                                     reason="MODELS_MISSING")
        self._input = inputs[0].name
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(self.files.onnx), load_external_data=False).metadata_props}
        self.provenance = meta.get(PROVENANCE_KEY, "") or folder_provenance(self.files.onnx.parent, self.files.folder)

    def params(self, image: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
        """(62,) de-normalised params and the (4,) roi box for one face box of an RGB uint8 (H, W, 3) image."""
        import cv2

        roi = roi_box_from_bbox(box)
        crop = cv2.resize(crop_roi(image[..., ::-1], roi), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)  # BGR
        x = ((crop.astype(np.float32).transpose(2, 0, 1)[None] - 127.5) / 128.0).copy()
        out = self._session.run(None, {self._input: x})[0].reshape(-1).astype(np.float32)
        return out * self.std + self.mean, roi

    def predict(self, image: np.ndarray, box) -> TddfaResult:
        param, roi = self.params(image, box)
        sR, t, a_shp, a_exp = parse_params(param)
        shape = self.bfm.shape(a_shp, a_exp)
        scale, R = rotation_from_params(param)
        return TddfaResult(param, roi, crop_to_image(sR @ shape + t, roi), shape.T.copy(), R, scale)

    def models(self) -> list[ModelRecord]:
        return [ModelRecord("landmarks_3d", "tddfa_v2", self.files.onnx.name, file_sha256(self.files.onnx),
                            self.provenance, LICENSE_NET),
                ModelRecord("landmarks_3d_bfm", "tddfa_v2", self.files.bfm.name, file_sha256(self.files.bfm),
                            self.provenance, LICENSE_BFM)]


_cache: dict[tuple[Path, bool], Tddfa] = {}
_cache_lock = threading.Lock()


def load_tddfa(config) -> Tddfa:
    """The 3DDFA-V2 model of config.tddfa_dir (cached per folder)."""
    if not config.tddfa_dir:
        raise FailedPrecondition("landmarks_3d is 'tddfa_v2' but no tddfa_dir is configured", reason="MODELS_MISSING")
    key = (Path(config.tddfa_dir).expanduser().resolve(), bool(config.trust_pickles))
    with _cache_lock:
        if key not in _cache:
            _cache[key] = Tddfa(*key)
        return _cache[key]


def main(argv: list[str] | None = None) -> int:
    """python -m services.face.backends.tddfa convert DIR --trust-pickles"""
    parser = argparse.ArgumentParser(prog="python -m services.face.backends.tddfa",
                                     description="3DDFA-V2 model folder tools")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="write .npz beside the folder's two .pkl files (reads the pickles)")
    conv.add_argument("dir")
    conv.add_argument("--trust-pickles", action="store_true", help="required: say you trust the pickles")
    args = parser.parse_args(argv)
    try:
        for path in convert(args.dir, args.trust_pickles):
            print(f"wrote {path}")
    except (TddfaFilesError, pickle.UnpicklingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
