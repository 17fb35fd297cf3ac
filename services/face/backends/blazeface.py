"""BlazeFace face detection (MediaPipe's face_detection_front / _back models): SSD anchors, box
decoding and weighted non-maximum suppression, as MediaPipe's face-detection graphs configure them
(mediapipe/modules/face_detection: 4 layers; front 128 px input, strides 8/16/16/16; back 256 px,
strides 16/32/32/32; anchor offset 0.5, fixed anchor size, 2 anchors per cell on the first layer and
6 on the shared-stride layers; input scaled to [-1, 1]; sigmoid scores; weighted NMS at IoU 0.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from services.face.backends.tflite_models import TFLiteModel

IOU_THRESHOLD = 0.3
CANDIDATE_MIN_SCORE = 0.25   # kept for NMS; the service drops what is below the request's min_score
RAW_SCORE_CLIP = 80.0        # logits are clipped before the sigmoid (MediaPipe clips at 100)


@dataclass(frozen=True)
class BlazeFaceSpec:
    file: str
    strides: tuple[int, ...]


FRONT = BlazeFaceSpec("face_detection_front.tflite", (8, 16, 16, 16))
BACK = BlazeFaceSpec("face_detection_back.tflite", (16, 32, 32, 32))


def ssd_anchors(size: int, strides: tuple[int, ...]) -> np.ndarray:
    """(A, 2) anchor centres in [0, 1] (x, y), in the order of the model's outputs: layers that share a
    stride are one grid with 2 anchors per layer per cell."""
    out, i = [], 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        cells = size // strides[i]
        ys, xs = np.mgrid[:cells, :cells]
        centres = (np.stack([xs, ys], -1).reshape(-1, 2) + 0.5) / cells
        out.append(np.repeat(centres, 2 * (j - i), axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


@dataclass
class Candidate:
    box: np.ndarray        # (4,) x0, y0, x1, y1 in image pixels
    keypoints: np.ndarray  # (6, 2) pixels: two eyes, nose tip, mouth, two ear tragions
    score: float


class BlazeFace:
    def __init__(self, spec: BlazeFaceSpec):
        self.model = TFLiteModel(spec.file, "detector")
        self.size = self.model.input_size
        self.anchors = ssd_anchors(self.size, spec.strides)

    def candidates(self, image: np.ndarray) -> list[Candidate]:
        """Scored faces of a uint8 (H, W, 3) image before NMS, score >= CANDIDATE_MIN_SCORE."""
        h, w = image.shape[:2]
        scale = self.size / max(h, w)
        rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = cv2.resize(image, (rw, rh), interpolation=interp)
        pad_x, pad_y = (self.size - rw) // 2, (self.size - rh) // 2  # letterbox, centred
        x = np.zeros((self.size, self.size, 3), np.float32)
        x[pad_y:pad_y + rh, pad_x:pad_x + rw] = small.astype(np.float32) / 127.5 - 1.0
        raw_boxes, raw_scores = self.model(x)
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1), -RAW_SCORE_CLIP, RAW_SCORE_CLIP)))
        keep = np.flatnonzero(scores >= CANDIDATE_MIN_SCORE)
        pts = raw_boxes.reshape(-1, 8, 2)[keep] / self.size
        pts[:, 0] += self.anchors[keep]
        pts[:, 2:] += self.anchors[keep, None]
        # letterbox [0, 1] -> image pixels
        to_px = lambda p: (p * self.size - (pad_x, pad_y)) / scale  # noqa: E731
        out = []
        for p, s in zip(pts, scores[keep]):
            centre, wh = to_px(p[0]), p[1] * self.size / scale
            if (wh > 0).all():
                out.append(Candidate(np.r_[centre - wh / 2, centre + wh / 2], to_px(p[2:]), float(s)))
        return out


def weighted_nms(cands: list[Candidate], iou_threshold: float = IOU_THRESHOLD) -> list[Candidate]:
    """MediaPipe's weighted NMS: each kept face is the score-weighted mean of the candidates that overlap
    the best remaining one by more than iou_threshold, with the best one's score."""
    rest = sorted(cands, key=lambda c: -c.score)
    out = []
    while rest:
        best = rest[0]
        group = [c for c in rest if iou(best.box, c.box) > iou_threshold]
        group_ids = {id(c) for c in group}
        wts = np.array([c.score for c in group])[:, None]
        box = (np.stack([c.box for c in group]) * wts).sum(0) / wts.sum()
        kps = (np.stack([c.keypoints for c in group]) * wts[:, :, None]).sum(0) / wts.sum()
        out.append(Candidate(box, kps, best.score))
        rest = [c for c in rest if id(c) not in group_ids]
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (4,) x0, y0, x1, y1 boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
