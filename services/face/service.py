"""The face service's logic, transport-free: numpy/torch in, services.face.types out; and at the end
InProcessFaceClient, the FaceClient interface (client.py) as plain calls on it.

The gRPC servicer converts protos and calls the same FaceService, so both transports share validation
and behaviour.
"""

from __future__ import annotations

import math

import numpy as np

from services.common.errors import FailedPrecondition, require
from services.common.images import any_to_rgb8
from services.face.backends import load_detector, load_recognizer
from services.face.config import FaceConfig
from services.face.geometry import alignment, masks
from services.core.face_mesh import five_from_478, ibug68_from_478
from services.core.landmarks import five_from_68
from services.face.geometry.dense import head_frame_478
from services.face.geometry.pose import assumed_intrinsics, fit_head_pose, rotation_from_bfm, rotation_from_shape
from services.face.geometry.shape3d import head_frame_shape
from services.face.types import (AnalyzeOptions, AnalyzeResult, CompareResult, Description, Face, HeadPose,
                                 IdentityLossResult)


class FaceService:
    def __init__(self, config: FaceConfig | None = None):
        self.config = config or FaceConfig()
        self.detector = load_detector(self.config)
        self.recognizer = load_recognizer(self.config, self.detector)
        self.tddfa = None   # landmarks_3d "tddfa_v2": 3DDFA-V2 gives the 3D landmarks and the rotation
        if self.config.landmarks_3d == "tddfa_v2":
            from services.face.backends.tddfa import load_tddfa

            self.tddfa = load_tddfa(self.config)

    # Analyze ---------------------------------------------------------------------------------------
    def analyze(self, image, options: AnalyzeOptions | None = None) -> AnalyzeResult:
        """Every face in `image` (bytes, path, uint8 (H, W, 3) or float (3, H, W)), largest first."""
        options = self._check_options(options or AnalyzeOptions())
        rgb = any_to_rgb8(image, max_pixels=self.config.max_image_pixels)
        h, w = rgb.shape[:2]
        upsample = self.config.default_upsample if options.upsample < 0 else options.upsample
        min_size = options.min_face_size or self.config.default_min_face_size
        min_score = self.detector.default_min_score if options.min_score is None else options.min_score
        detections = [d for d in self.detector.detect(rgb, upsample)
                      if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= min_size and d.score >= min_score]
        detections.sort(key=lambda d: -(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
        if options.max_faces:
            detections = detections[:options.max_faces]
        faces = [self._analyze_one(rgb, d, options) for d in detections]
        return AnalyzeResult(faces, w, h, self._models())

    def _analyze_one(self, rgb: np.ndarray, det, options: AnalyzeOptions) -> Face:
        h, w = rgb.shape[:2]
        dense = getattr(self.detector, "landmarks_478", None)  # a DenseDetector (backends.base)
        lm478 = None if dense is None else dense(rgb, det)
        lm68 = self.detector.landmarks_68(rgb, det) if lm478 is None else ibug68_from_478(lm478[:, :2])
        lm5 = det.landmarks_5 if det.landmarks_5 is not None else (
            five_from_68(lm68) if lm478 is None else five_from_478(lm478))
        # a 3D shape gives the rotation (2D points alone halve a turned head's yaw: geometry.pose): 3DDFA-V2's
        # when configured, else MediaPipe's; the PnP fit to the 68 2D points then places the head
        tddfa = None if self.tddfa is None else self.tddfa.predict(rgb, det.box)
        if tddfa is not None:
            rotation = rotation_from_bfm(tddfa.rotation, tddfa.landmarks_image[:, :2].mean(0), assumed_intrinsics(w, h))
        else:
            rotation = None if lm478 is None else rotation_from_shape(lm478, assumed_intrinsics(w, h))
        fit = fit_head_pose(lm68, w, h, rotation=rotation)
        if tddfa is not None:
            fit.landmarks_3d = head_frame_shape(tddfa.shape_model, fit)
        transform = alignment.crop_transform(lm68, options.crop_size, options.crop_style)
        crop_cam, label = alignment.crop_camera(fit.yaw, fit.pitch, options.crop_size, options.crop_style)
        face = Face(box=det.box, score=det.score, landmarks_5=lm5, landmarks_68=lm68,
                    landmarks_3d_68=fit.landmarks_3d, pose=HeadPose(fit.yaw, fit.pitch, fit.roll),
                    camera=fit.camera, crop_transform=transform, crop_camera=crop_cam, eg3d_label=label)
        if lm478 is not None:
            face.landmarks_478 = lm478[:, :2].copy()
            face.landmarks_3d_478 = head_frame_478(lm478, fit)
        if not options.skip_embedding:
            own = getattr(self.detector, "identity_landmarks_68", None)   # the auto detector: dlib's own points
            raw = self.recognizer.embed(rgb, lm68 if own is None else own(rgb, det, lm68, self.recognizer), lm5)
            norm = float(np.linalg.norm(raw))
            face.embedding = (raw / max(norm, 1e-12)).astype(np.float32)
            face.embedding_norm = norm
        if not options.skip_crop:
            face.aligned_crop = alignment.warp(rgb, transform, options.crop_size)
        if not options.skip_masks:
            face.face_mask = masks.face_mask(lm68, (h, w))
            face.head_mask = masks.head_mask(rgb, lm68, face.face_mask)
            import cv2
            face.crop_head_mask = alignment.warp(face.head_mask, transform, options.crop_size,
                                                 interpolation=cv2.INTER_NEAREST, border=cv2.BORDER_CONSTANT)
        return face

    @staticmethod
    def _check_options(o: AnalyzeOptions) -> AnalyzeOptions:
        require(o.max_faces >= 0, "options.max_faces", f"must be >= 0, got {o.max_faces}")
        require(math.isfinite(o.min_face_size) and o.min_face_size >= 0, "options.min_face_size",
                f"must be a finite number >= 0, got {o.min_face_size}")
        require(-1 <= o.upsample <= 2, "options.upsample", f"must be -1 (default) or 0..2, got {o.upsample}")
        require(o.min_score is None or math.isfinite(o.min_score), "options.min_score", "must be finite")
        require(64 <= o.crop_size <= 2048, "options.crop_size", f"must be 64..2048, got {o.crop_size}")
        require(o.crop_style in ("ffhq", "head"), "options.crop_style", f"unknown style {o.crop_style!r}")
        return o

    # Compare ---------------------------------------------------------------------------------------
    def compare(self, a, b, *, face_index_a: int = 0, face_index_b: int = 0,
                norm_a: float = 0.0, norm_b: float = 0.0) -> CompareResult:
        """Similarity of two faces. Each side is an image (bytes, path, (H, W, 3) or (3, H, W) array)
        or a (D,) embedding from analyze (with its embedding_norm, 0 = typical)."""
        ea, na = self._embedding_of(a, face_index_a, norm_a, "a")
        eb, nb = self._embedding_of(b, face_index_b, norm_b, "b")
        cos = float(np.clip(np.dot(ea, eb), -1.0, 1.0))
        rec = self.recognizer
        if rec.metric == "euclidean":
            distance = float(np.linalg.norm(ea * na - eb * nb))
        else:
            distance = 1.0 - cos
        return CompareResult(cos, distance, rec.threshold, distance < rec.threshold, rec.metric)

    def _embedding_of(self, side, face_index: int, norm: float, name: str) -> tuple[np.ndarray, float]:
        arr = None if isinstance(side, (bytes, bytearray, memoryview, str)) or hasattr(side, "__fspath__") \
            else np.asarray(side.detach().cpu().numpy() if hasattr(side, "detach") else side)
        if arr is not None and arr.ndim == 1:
            dim = self.recognizer.embedding_dim
            require(arr.shape[0] == dim, f"{name}.embedding.shape",
                    f"expected ({dim},) for the {self.recognizer.name} recognizer, got {list(arr.shape)}")
            require(bool(np.isfinite(arr).all()), f"{name}.embedding", "contains NaN or infinite values")
            n = float(np.linalg.norm(arr))
            require(n > 1e-6, f"{name}.embedding", "is all zeros")
            require(math.isfinite(norm) and norm >= 0, f"{name}.embedding_norm", "must be a finite number >= 0")
            return (arr / n).astype(np.float32), (norm or self.recognizer.typical_norm)
        require(face_index >= 0, f"{name}.face_index", f"must be >= 0, got {face_index}")
        result = self.analyze(any_to_rgb8(side, max_pixels=self.config.max_image_pixels, field=f"{name}.image"),
                              AnalyzeOptions(max_faces=face_index + 1, skip_crop=True, skip_masks=True))
        if len(result.faces) <= face_index:
            raise FailedPrecondition(f"{name}: image has {len(result.faces)} face(s), face_index {face_index} "
                                     "asked for", reason="NO_FACE")
        face = result.faces[face_index]
        return face.embedding, face.embedding_norm

    # IdentityLoss ----------------------------------------------------------------------------------
    def identity_loss(self, images, reference, landmarks=None) -> IdentityLossResult:
        """loss_i = 1 - cos(embed(images_i), ref_i) and d(sum loss)/d(images).

        images: float (N, 3, H, W) in [0, 1] (numpy or torch); reference: (D,) or (N, D);
        landmarks: None or a list of N (5, 2) pixel arrays (None entries = detect).
        """
        rec = self.recognizer
        if not getattr(rec, "differentiable", False):
            raise FailedPrecondition(
                f"IdentityLoss needs a differentiable face recogniser, and the configured recognizer "
                f"'{rec.name}' is not. Configure an InsightFace pack with an ArcFace recognition model: "
                "`headforge serve face --recognizer insightface --insightface-dir DIR` (DIR in the "
                "buffalo_l or antelopev2 layout, e.g. containing w600k_r50.onnx).",
                reason="BACKEND_NOT_DIFFERENTIABLE")
        import torch

        x = torch.as_tensor(images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images))
        require(x.ndim == 4 and x.shape[1] == 3, "images.shape", f"expected (N, 3, H, W), got {list(x.shape)}")
        n, _, h, w = x.shape
        require(1 <= n <= self.config.max_identity_batch, "images.shape",
                f"N must be 1..{self.config.max_identity_batch}, got {n}")
        require(h >= 32 and w >= 32, "images.shape", f"H and W must be >= 32, got {h}x{w}")
        require(h * w <= self.config.max_image_pixels, "images.shape", "image larger than the pixel limit")
        require(x.is_floating_point(), "images.dtype", f"must be float, got {x.dtype}")
        x = x.float()
        require(bool(torch.isfinite(x).all()), "images", "contains NaN or infinite values")
        require(float(x.min()) >= -1e-3 and float(x.max()) <= 1 + 1e-3, "images",
                f"values must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]")
        ref = np.asarray(reference, dtype=np.float32)
        dim = rec.embedding_dim
        require(ref.shape in ((dim,), (n, dim)), "reference_embedding.shape",
                f"expected ({dim},) or ({n}, {dim}), got {list(ref.shape)}")
        require(bool(np.isfinite(ref).all()), "reference_embedding", "contains NaN or infinite values")
        ref = np.broadcast_to(ref, (n, dim))
        norms = np.linalg.norm(ref, axis=1, keepdims=True)
        require(bool((norms > 1e-6).all()), "reference_embedding", "is all zeros")
        ref = torch.as_tensor(ref / norms)

        lms = self._loss_landmarks(x, landmarks)
        found = [lm is not None for lm in lms]
        loss = torch.zeros(n)
        grad = torch.zeros_like(x)
        idx = [i for i in range(n) if found[i]]
        if idx:
            xi = x[idx].clone().requires_grad_(True)
            emb = rec.embed_torch(xi, torch.as_tensor(np.stack([lms[i] for i in idx]), dtype=torch.float32))
            li = 1.0 - (emb * ref[idx]).sum(1)
            li.sum().backward()
            loss[idx] = li.detach()
            grad[idx] = xi.grad
        return IdentityLossResult(loss.numpy().astype(np.float32), grad.numpy().astype(np.float32), found)

    def _loss_landmarks(self, x, landmarks) -> list[np.ndarray | None]:
        n = x.shape[0]
        if landmarks is not None:
            require(len(landmarks) in (0, n), "landmarks", f"give none or one entry per image ({n}), got {len(landmarks)}")
        out: list[np.ndarray | None] = []
        for i in range(n):
            given = landmarks[i] if landmarks else None
            if given is not None and len(given):
                lm = np.asarray(given, dtype=np.float64)
                require(lm.shape == (5, 2), f"landmarks[{i}].points", f"need 5 points, got {lm.shape[0] if lm.ndim else 0}")
                require(bool(np.isfinite(lm).all()), f"landmarks[{i}].points", "contains NaN or infinite values")
                out.append(lm)
                continue
            rgb = (x[i].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
            dets = [d for d in self.detector.detect(rgb, self.config.default_upsample)
                    if d.score >= self.detector.default_min_score]
            if not dets:
                out.append(None)
                continue
            d = max(dets, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
            out.append(d.landmarks_5 if d.landmarks_5 is not None else self._five(rgb, d))
        return out

    def _five(self, rgb: np.ndarray, det) -> np.ndarray:
        dense = getattr(self.detector, "landmarks_478", None)
        lm478 = None if dense is None else dense(rgb, det)   # None: the auto detector's dlib fallback
        return five_from_478(lm478) if lm478 is not None else five_from_68(self.detector.landmarks_68(rgb, det))

    # Describe --------------------------------------------------------------------------------------
    def describe(self) -> Description:
        rec = self.recognizer
        return Description(self._models(), rec.name, rec.embedding_dim, bool(getattr(rec, "differentiable", False)),
                           rec.metric, rec.threshold, self.config.max_image_pixels, self.config.max_message_bytes)

    def _models(self):
        seen, out = set(), []
        for m in [*self.detector.models(), *self.recognizer.models(), *(self.tddfa.models() if self.tddfa else [])]:
            if (m.role, m.name) not in seen:
                seen.add((m.role, m.name))
                out.append(m)
        return out


class InProcessFaceClient:
    """The FaceClient interface as plain function calls on a FaceService in this process: no
    serialisation. Without a service, one is built from config (default FaceConfig(): dlib)."""

    def __init__(self, service: FaceService | None = None, config: FaceConfig | None = None):
        self.service = service or FaceService(config)

    def analyze(self, image, options: AnalyzeOptions | None = None) -> AnalyzeResult:
        return self.service.analyze(image, options)

    def compare(self, a, b, **kw) -> CompareResult:
        return self.service.compare(a, b, **kw)

    def identity_loss(self, images, reference, landmarks=None) -> IdentityLossResult:
        return self.service.identity_loss(images, reference, landmarks)

    def describe(self) -> Description:
        return self.service.describe()

    def close(self) -> None:
        pass
