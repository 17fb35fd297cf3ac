"""User-provided InsightFace model packs (buffalo_l / antelopev2 layout): SCRFD face detection with five
keypoints, 1k3d68 68-point landmarks and an ArcFace recogniser, run with onnxruntime; plus a torch copy
of the recogniser (services.face.backends.onnx_torch) for the differentiable identity loss.

Models are identified by their input/output signature, as insightface's model zoo does, with the
usual file names as a tie-break. Pre- and post-processing follow the conventions the models were
trained with (as the insightface package applies them): SCRFD on a 640x640 letterbox with
(x - 127.5) / 128; landmarks on a box-centred crop of 1.5x the box side; ArcFace on the 5-point
similarity-aligned 112x112 crop. All models take RGB (insightface feeds BGR images with swapRB).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from services.common.errors import FailedPrecondition, InvalidArgument
from services.core.models import PROVENANCE_KEY, ModelRecord, file_sha256, folder_provenance
from services.face.backends.base import Detection
from services.core.landmarks import ARCFACE_112

LAYOUTS = {
    "buffalo_l": ("det_10g.onnx", "1k3d68.onnx", "2d106det.onnx", "genderage.onnx", "w600k_r50.onnx"),
    "antelopev2": ("scrfd_10g_bnkps.onnx", "1k3d68.onnx", "2d106det.onnx", "genderage.onnx", "glintr100.onnx"),
}
ROLE_FILES = {
    "detector": ("det_10g.onnx", "scrfd_10g_bnkps.onnx"),
    "landmarks_68": ("1k3d68.onnx",),
    "recognizer": ("w600k_r50.onnx", "glintr100.onnx"),
}
ROLE_SIGNATURES = {
    "detector": "SCRFD: one (1, 3, H, W) image input, H/W dynamic or fixed, 6/9 (or 10/15) outputs",
    "landmarks_68": "one (1, 3, 192, 192) input, one (1, 3309) output (1103 3D points)",
    "recognizer": "ArcFace: one (N, 3, 112, 112) input, one (N, D) output, D = 512 usually",
}
# InsightFace's pretrained packs (buffalo_l, antelopev2) are for non-commercial research use (its README);
# the insightface code is MIT.
LICENSE = "non-commercial research use only (InsightFace pretrained models)"
SCORE_THRESHOLD = 0.5
NMS_THRESHOLD = 0.4
DEFAULT_DET_SIZE = 640   # SCRFD input side when the model's H/W are dynamic
SCRFD_LEVELS = {6: ((8, 16, 32), 2, False), 9: ((8, 16, 32), 2, True),     # n_outputs -> strides,
                10: ((8, 16, 32, 64, 128), 1, False), 15: ((8, 16, 32, 64, 128), 1, True)}  # anchors, kps


def _layout_text() -> str:
    return "; ".join(f"{name}: {', '.join(files)}" for name, files in LAYOUTS.items())


@dataclass
class _ModelFile:
    """An .onnx file of the pack and its signature. Dims are ints, or str/None when dynamic."""

    path: Path
    inputs: list[tuple[str, list]]
    outputs: list[tuple[str, list]]
    head_nodes: list[str] = field(default_factory=list)  # names of the first 8 nodes
    provenance: str = ""  # services.core.models: from the file's metadata, or a marker file in its folder

    @classmethod
    def read(cls, path: Path) -> "_ModelFile":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        graph = model.graph
        inits = {i.name for i in graph.initializer}
        meta = {p.key: p.value for p in model.metadata_props}

        def dims(v) -> list:
            return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in v.type.tensor_type.shape.dim]

        return cls(path, [(v.name, dims(v)) for v in graph.input if v.name not in inits],
                   [(v.name, dims(v)) for v in graph.output], [n.name for n in graph.node[:8]],
                   meta.get(PROVENANCE_KEY, "") or folder_provenance(path.parent))

    def role(self) -> str | None:
        """'detector', 'landmarks_68', 'recognizer' or None (another model of the pack, e.g. genderage)."""
        if len(self.inputs) != 1:
            return None
        shape = self.inputs[0][1]
        if len(shape) != 4 or shape[1] != 3:
            return None
        hw = tuple(shape[2:])
        if len(self.outputs) in SCRFD_LEVELS:
            return "detector"
        if len(self.outputs) != 1:
            return None
        out = self.outputs[0][1]
        if hw == (192, 192) and out and out[-1] == 3309:
            return "landmarks_68"
        if hw == (112, 112) and len(out) == 2 and isinstance(out[1], int) and out[1] > 0:
            return "recognizer"
        return None

    def has_input_normalisation(self, bn_data: bool) -> bool:
        """Whether the graph normalises raw pixels itself (mxnet-era exports start with Sub + Mul nodes,
        or a BatchNormalization called bn_data): insightface's rule for choosing the input mean/std."""
        sub = any(n.startswith(("Sub", "_minus")) for n in self.head_nodes)
        mul = any(n.startswith(("Mul", "_mul")) for n in self.head_nodes)
        return (sub and mul) or (bn_data and "bn_data" in self.head_nodes[:3])

    @cached_property
    def sha256(self) -> str:
        return file_sha256(self.path)

    def record(self, role: str) -> ModelRecord:
        return ModelRecord(role, "insightface", self.path.name, self.sha256, self.provenance, LICENSE)


def onnx_session(path: Path):
    """onnxruntime CPU session; Run is thread-safe, so gRPC worker threads share it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _nchw(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (1, 3, H, W) of (x - mean) / std."""
    return ((image.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None].copy()


class InsightFacePack:
    """The models of one pack folder; `load` caches packs per resolved folder."""

    _packs: ClassVar[dict[Path, "InsightFacePack"]] = {}
    _packs_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, folder: Path):
        self.folder = folder
        if not folder.is_dir():
            raise FailedPrecondition(f"InsightFace pack folder {folder} does not exist or is not a folder "
                                     f"(expected the buffalo_l or antelopev2 layout: {_layout_text()})",
                                     reason="MODELS_MISSING")
        self.problems: list[str] = []
        found: dict[str, list[_ModelFile]] = {}
        for path in sorted(folder.glob("*.onnx")):
            try:
                model = _ModelFile.read(path)
            except Exception as e:  # a truncated download, not an ONNX file, ...
                self.problems.append(f"{path.name} is not a readable ONNX model ({type(e).__name__}: {e})")
                continue
            role = model.role()
            if role is not None:
                found.setdefault(role, []).append(model)
            elif path.name in {n for names in ROLE_FILES.values() for n in names}:
                self.problems.append(f"{path.name} has an unexpected signature: inputs {model.inputs}, "
                                     f"{len(model.outputs)} outputs {model.outputs[:3]}")
        self.files = {role: min(models, key=lambda m: (m.path.name not in ROLE_FILES[role], m.path.name))
                      for role, models in found.items()}
        self._lock = threading.Lock()
        self._detector: InsightFaceDetector | None = None
        self._recognizer: InsightFaceRecognizer | None = None

    @classmethod
    def load(cls, folder: str | Path | None) -> "InsightFacePack":
        if not folder:
            raise FailedPrecondition("no InsightFace pack folder configured (insightface_dir)", reason="MODELS_MISSING")
        path = Path(folder).expanduser().resolve()
        with cls._packs_lock:
            pack = cls._packs.get(path)
            if pack is None:
                pack = cls._packs[path] = cls(path)
            return pack

    def file(self, role: str) -> _ModelFile:
        if role in self.files:
            return self.files[role]
        problems = f" Problems: {'; '.join(self.problems)}." if self.problems else ""
        raise FailedPrecondition(
            f"InsightFace pack {self.folder} has no {role} model: expected {' or '.join(ROLE_FILES[role])} "
            f"({ROLE_SIGNATURES[role]}). A pack folder holds the files of the buffalo_l or antelopev2 "
            f"layout: {_layout_text()}.{problems}", reason="MODELS_MISSING")

    def detector(self) -> "InsightFaceDetector":
        with self._lock:
            if self._detector is None:
                self._detector = InsightFaceDetector(self.file("detector"), self.file("landmarks_68"))
            return self._detector

    def recognizer(self) -> "InsightFaceRecognizer":
        with self._lock:
            if self._recognizer is None:
                self._recognizer = InsightFaceRecognizer(self.file("recognizer"))
            return self._recognizer


@lru_cache(maxsize=32)
def _anchor_centres(rows: int, cols: int, stride: int, anchors: int) -> np.ndarray:
    """(rows * cols * anchors, 2) x, y of each anchor: its cell's top-left corner, anchors fastest."""
    ys, xs = np.mgrid[:rows, :cols]
    centres = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centres, anchors, axis=0)


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy non-maximum suppression: indices kept, best first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        lo = np.maximum(boxes[i, :2], boxes[rest, :2])
        hi = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= threshold]
    return keep


class InsightFaceDetector:
    """SCRFD detection + 1k3d68 landmarks on uint8 (H, W, 3) RGB images (the Detector protocol)."""

    name = "insightface"
    # detect() already drops scores below insightface's 0.5, so a request can raise this but not lower it
    default_min_score = SCORE_THRESHOLD

    def __init__(self, det: _ModelFile, lmk: _ModelFile):
        self._det_file, self._lmk_file = det, lmk
        self._det = onnx_session(det.path)
        h, w = det.inputs[0][1][2:]
        fixed = isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0
        self.input_hw = (h, w) if fixed else (DEFAULT_DET_SIZE, DEFAULT_DET_SIZE)
        self.strides, self.anchors, self.has_kps = SCRFD_LEVELS[len(det.outputs)]
        self._lmk = onnx_session(lmk.path)
        self.lmk_size = int(lmk.inputs[0][1][2])
        self.lmk_mean, self.lmk_std = (0.0, 1.0) if lmk.has_input_normalisation(bn_data=True) else (127.5, 128.0)

    def detect(self, image: np.ndarray, upsample: int) -> list[Detection]:
        """Faces with score >= 0.5 after NMS at IoU 0.4; landmarks_5 from the SCRFD keypoints (None for
        6/10-output models without them). `upsample` is ignored: SCRFD runs on one 640x640 letterbox
        (or the model's fixed size), whose stride-8 level is its small-face pyramid."""
        h, w = image.shape[:2]
        in_h, in_w = self.input_hw
        # letterbox: keep aspect, fill from the top-left, zero padding (as insightface does)
        if h / w > in_h / in_w:
            new_h, new_w = in_h, max(1, int(in_h / (h / w)))
        else:
            new_w, new_h = in_w, max(1, int(in_w * (h / w)))
        scale = new_h / h
        canvas = np.zeros((in_h, in_w, 3), np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
        outs = self._det.run(None, {self._det_file.inputs[0][0]: _nchw(canvas, 127.5, 128.0)})

        n = len(self.strides)
        scores, boxes, kps = [], [], []
        for i, stride in enumerate(self.strides):
            centres = _anchor_centres(in_h // stride, in_w // stride, stride, self.anchors)
            s = outs[i].reshape(-1)
            keep = s >= SCORE_THRESHOLD
            d = outs[i + n].reshape(-1, 4)[keep] * stride
            c = centres[keep]
            scores.append(s[keep])
            boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
            if self.has_kps:
                k = outs[i + 2 * n].reshape(-1, 10)[keep] * stride
                kps.append(np.repeat(c, 5, axis=0).reshape(-1, 10) + k)
        scores_all = np.concatenate(scores)
        boxes_all = np.concatenate(boxes).astype(np.float64) / scale
        kps_all = np.concatenate(kps).astype(np.float64) / scale if self.has_kps else None
        out = []
        for i in _nms(boxes_all, scores_all, NMS_THRESHOLD):
            box = np.clip(boxes_all[i], 0, [w, h, w, h])
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue
            lm5 = kps_all[i].reshape(5, 2) if kps_all is not None else None
            out.append(Detection(box=box, score=float(scores_all[i]), landmarks_5=lm5))
        return out

    def landmarks_68(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """(68, 2) x, y in image pixels: the last 68 of 1k3d68's 1103 3D points (z dropped), predicted on
        a crop centred on the box, 1.5x its longer side, scaled to the model's 192x192 input."""
        x0, y0, x1, y1 = np.asarray(detection.box, dtype=np.float64)
        size = self.lmk_size
        s = size / (max(x1 - x0, y1 - y0, 1e-6) * 1.5)
        t = size / 2 - s * np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        M = np.array([[s, 0, t[0]], [0, s, t[1]]])
        crop = cv2.warpAffine(image, M, (size, size), borderValue=0)
        pred = self._lmk.run(None, {self._lmk_file.inputs[0][0]: _nchw(crop, self.lmk_mean, self.lmk_std)})[0][0]
        pred = pred.reshape(-1, 3 if pred.size >= 3000 else 2)[-68:, :2].astype(np.float64)
        crop_xy = (pred + 1) * (size // 2)        # model output is -1..1 over the crop
        return (crop_xy - t) / s

    def models(self) -> list[ModelRecord]:
        return [self._det_file.record("detector"), self._lmk_file.record("landmarks_68")]


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares similarity (rotation, uniform scale, translation) mapping src (K, 2) points
    onto dst (K, 2) points (Umeyama's closed form)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    sc, dc = src - ms, dst - md
    u, sv, vt = np.linalg.svd(dc.T @ sc / len(src))
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ np.diag(d) @ vt
    var = (sc ** 2).sum() / len(src)
    scale = (sv * d).sum() / var if var > 0 else 1.0
    return np.concatenate([scale * rot, (md - scale * rot @ ms)[:, None]], axis=1)


def arcface_transform(landmarks_5: np.ndarray) -> np.ndarray:
    """(2, 3) image pixels -> 112x112 ArcFace crop pixels, from (5, 2) ArcFace-order points: the alignment
    ArcFace-family recognisers (ArcFace, AdaFace) were trained on."""
    return similarity_transform(landmarks_5, ARCFACE_112)


class InsightFaceRecognizer:
    """ArcFace embeddings (the DifferentiableRecognizer protocol).

    Same person when 1 - cos < 0.7, i.e. cos > 0.3: the usual ArcFace verification operating point.
    typical_norm is 1.0: raw ArcFace norms are model-specific, and the cosine metric ignores norms.
    """

    name = "insightface"
    metric = "cosine_distance"
    threshold = 0.7
    typical_norm = 1.0
    differentiable = True

    def __init__(self, rec: _ModelFile):
        self._file = rec
        self._session = onnx_session(rec.path)
        self.embedding_dim = int(rec.outputs[0][1][1])
        self.input_size = 112
        # graphs without in-graph normalisation (the torch-era w600k_r50 / glintr100) take (x - 127.5) / 127.5
        self.input_mean, self.input_std = (0.0, 1.0) if rec.has_input_normalisation(bn_data=False) else (127.5, 127.5)
        self._modules: dict = {}  # torch copies by (device, dtype), made on first IdentityLoss
        self._modules_lock = threading.Lock()

    def align(self, landmarks_5: np.ndarray) -> np.ndarray:
        """(2, 3) image pixels -> 112x112 ArcFace crop pixels, from (5, 2) ArcFace-order points."""
        return arcface_transform(landmarks_5)

    def embed(self, image: np.ndarray, landmarks_68: np.ndarray, landmarks_5: np.ndarray) -> np.ndarray:
        """Raw (D,) float32 embedding of the face at landmarks_5 (onnxruntime, as insightface computes it)."""
        if landmarks_5 is None:
            from services.core.landmarks import five_from_68

            landmarks_5 = five_from_68(landmarks_68)
        size = self.input_size
        crop = cv2.warpAffine(image, self.align(landmarks_5), (size, size), borderValue=0)
        blob = _nchw(crop, self.input_mean, self.input_std)
        return self._session.run(None, {self._file.inputs[0][0]: blob})[0][0].astype(np.float32)

    def module(self, dtype=None, device="cpu"):
        """The recogniser as a torch OnnxModule in `dtype` (default float32) on `device`."""
        import torch

        dtype = dtype or torch.float32
        key = (str(torch.device(device)), str(dtype))
        base_key = ("cpu", "torch.float32")
        with self._modules_lock:
            if base_key not in self._modules:
                from services.face.backends.onnx_torch import load_onnx_as_torch

                self._modules[base_key] = load_onnx_as_torch(self._file.path)
            if key not in self._modules:
                import copy

                self._modules[key] = copy.deepcopy(self._modules[base_key]).to(device, dtype)
            return self._modules[key]

    def embed_torch(self, images, landmarks_5):
        """images: torch float (N, 3, H, W) in [0, 1]; landmarks_5: (N, 5, 2) pixels (torch or numpy).
        Returns L2-normalised (N, D) embeddings, differentiable w.r.t. images (the alignment itself is
        computed without gradient)."""
        import torch
        import torch.nn.functional as F
        from kornia.geometry.transform import warp_affine

        if images.ndim != 4 or images.shape[1] != 3:
            raise InvalidArgument("images.shape", f"expected (N, 3, H, W), got {list(images.shape)}")
        lm = landmarks_5.detach().cpu().numpy() if hasattr(landmarks_5, "detach") else np.asarray(landmarks_5)
        if lm.shape != (images.shape[0], 5, 2):
            raise InvalidArgument("landmarks_5.shape", f"expected ({images.shape[0]}, 5, 2), got {list(lm.shape)}")
        M = torch.as_tensor(np.stack([self.align(p) for p in lm]), dtype=images.dtype, device=images.device)
        size = self.input_size
        # align_corners=True puts pixel centres at integer coordinates, as cv2.warpAffine does
        crops = warp_affine(images * 255.0, M, (size, size), mode="bilinear", padding_mode="zeros",
                            align_corners=True)
        x = (crops - self.input_mean) / self.input_std
        return F.normalize(self.module(images.dtype, images.device)(x), dim=1)

    def models(self) -> list[ModelRecord]:
        return [self._file.record("recognizer")]


def load_detector(config) -> InsightFaceDetector:
    """The DETECTORS entry "insightface" (services.face.backends): SCRFD + 1k3d68 of config.insightface_dir."""
    return InsightFacePack.load(config.insightface_dir).detector()


def load_recognizer(config, detector) -> InsightFaceRecognizer:
    """The RECOGNIZERS entry "insightface": the ArcFace model of config.insightface_dir."""
    return InsightFacePack.load(config.insightface_dir).recognizer()
