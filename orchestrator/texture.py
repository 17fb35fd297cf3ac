"""The fast recipe's texture: the photo back-projected onto the fitted head by the render service, the
unseen side completed from its mirror image, the rest inpainted smoothly in UV space towards hair and
skin tones taken from the photo.

UV layout: the head template's (orchestrator/head_template/build.py): u runs round the head with the
face's midline at u = 0.5 and the seam at the back (u = 0 = 1), v from the crown (0) to the neck cut (1).
Mirroring the head in x is u -> 1 - u, i.e. texel column j -> T - 1 - j.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from services.core.landmarks import JAW, LEFT_EYE, MOUTH, NOSE, RIGHT_EYE

REGION_SKIN, REGION_SCALP, REGION_EAR, REGION_NECK = 0, 1, 2, 3


@dataclass
class PhotoTones:
    skin: np.ndarray        # (3,) float sRGB in [0, 1]
    hair: np.ndarray        # (3,)
    hair_pixels: int        # how many photo pixels the hair tone came from
    skin_pixels: int


def photo_tones(rgb: np.ndarray, lm68: np.ndarray, head_mask: np.ndarray, face_mask: np.ndarray) -> PhotoTones:
    """Median skin tone over the cheeks (face hull minus eyes, nose and mouth) and median hair tone over
    the head mask above the brows outside the face hull. Falls back to the skin tone, darkened, when the
    photo shows no hair."""
    h, w = rgb.shape[:2]
    img = rgb.astype(np.float32) / 255.0
    cheeks = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(cheeks, np.round(cv2.convexHull(lm68[[1, 2, 3, 4, 12, 13, 14, 15, 29]].astype(np.float32))
                                        ).astype(np.int32), 1)
    for part in (LEFT_EYE, RIGHT_EYE, NOSE, MOUTH):
        hull = cv2.convexHull(lm68[part].astype(np.float32))
        grown = (hull - hull.mean(0)) * 1.4 + hull.mean(0)
        cv2.fillConvexPoly(cheeks, np.round(grown).astype(np.int32), 0)
    skin_px = img[cheeks > 0]
    if len(skin_px) < 20:
        skin_px = img[face_mask > 0]
    skin = np.median(skin_px, 0) if len(skin_px) else np.array([0.75, 0.58, 0.48], np.float32)
    up = lm68[27] - lm68[8]
    up = up / max(np.linalg.norm(up), 1e-6)
    ys, xs = np.mgrid[0:h, 0:w]
    brow_level = ((lm68[17:27] - lm68[8]) @ up).max()
    height = (xs - lm68[8][0]) * up[0] + (ys - lm68[8][1]) * up[1]
    hair_region = (head_mask > 0) & (face_mask == 0) & (height > brow_level)
    hair_px = img[hair_region]
    if len(hair_px) >= 50:
        # hair is darker or differently coloured than skin: keep pixels away from the skin tone
        d = np.linalg.norm(hair_px - skin, axis=1)
        far = hair_px[d > np.percentile(d, 40)] if len(hair_px) > 200 else hair_px
        hair = np.median(far, 0)
    else:
        hair = skin * 0.55
    return PhotoTones(np.asarray(skin, np.float32), np.asarray(hair, np.float32), int(len(hair_px)),
                      int(len(skin_px)))


def projection_mask(head_mask: np.ndarray, lm68: np.ndarray, erode_px: int = 2) -> np.ndarray:
    """Where the photo may colour the head: the head mask (slightly eroded, so the background fringe at
    its edge stays out) plus the neck under the jaw (the head mask stops at the jaw line)."""
    h, w = head_mask.shape
    m = (head_mask > 0).astype(np.uint8)
    if erode_px:
        m = cv2.erode(m, np.ones((2 * erode_px + 1, 2 * erode_px + 1), np.uint8))
    up = lm68[27] - lm68[8]
    face_h = float(np.linalg.norm(up))
    up = up / max(face_h, 1e-6)
    jaw = lm68[JAW][4:13]
    neck = np.concatenate([jaw, [jaw[-1] - up * face_h * 0.8, jaw[0] - up * face_h * 0.8]])
    cv2.fillPoly(m, [np.round(neck).astype(np.int32)], 1)
    return m


def mirror_fill(texture: np.ndarray, visibility: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Complete poorly seen texels from their mirror images (u -> 1 - u). texture (T, T, 3), visibility
    (T, T) (the viewing cosine where the photo coloured the texel, else 0). Returns the texture, the
    weight of the photo in each texel (0..1) and a mask of texels that took mirrored colour. The mirror
    only contributes where the texel's own view is grazing or absent, so asymmetric features stay."""
    vis_m = visibility[:, ::-1]
    tex_m = texture[:, ::-1]
    own = visibility ** 2
    trust_own = np.clip((visibility - 0.2) / 0.35, 0, 1)
    mir = 0.6 * vis_m ** 2 * (1 - trust_own)
    total = own + mir
    out = np.where(total[..., None] > 0, (texture * own[..., None] + tex_m * mir[..., None])
                   / np.maximum(total, 1e-12)[..., None], 0.0)
    # grazing texels are stretched samples of the photo: they fade into the smooth fill
    seen = np.maximum(visibility, 0.8 * vis_m * (1 - trust_own))
    conf = np.clip((seen - 0.22) / 0.33, 0, 1)
    conf = np.where(total > 0, conf, 0.0)
    return out.astype(np.float32), conf.astype(np.float32), (mir > own) & (mir > 0)


def _wrap_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur that wraps round in u (columns) and clamps in v (rows)."""
    if sigma <= 0:
        return img
    pad = int(3 * sigma) + 1
    p = np.pad(img, ((pad, pad), (pad, pad)) + ((0, 0),) * (img.ndim - 2), mode="edge")
    p[:, :pad] = np.pad(img, ((pad, pad), (pad, 0)) + ((0, 0),) * (img.ndim - 2), mode="wrap")[:, :pad]
    p[:, -pad:] = np.pad(img, ((pad, pad), (0, pad)) + ((0, 0),) * (img.ndim - 2), mode="wrap")[:, -pad:]
    b = cv2.GaussianBlur(p.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return b[pad:-pad, pad:-pad]


def _upsample_wrap(img: np.ndarray) -> np.ndarray:
    """x2 bilinear upsampling that wraps round in u (columns)."""
    h, w = img.shape[:2]
    p = np.concatenate([img[:, -1:], img, img[:, :1]], 1).astype(np.float32)
    up = cv2.resize(p, (2 * (w + 2), 2 * h), interpolation=cv2.INTER_LINEAR)
    up = up.reshape(2 * h, 2 * (w + 2), -1)
    return up[:, 2:-2]


def push_pull(image: np.ndarray, weight: np.ndarray, min_size: int = 4) -> np.ndarray:
    """Smooth scattered-data fill: every texel takes its own colour where weight is 1 and a blend of
    coarser averages elsewhere (a pull-push pyramid; wraps in u). image (T, T, C), weight (T, T) in [0, 1]."""
    if image.shape[0] <= min_size or image.shape[0] % 2:
        total = weight.sum()
        mean = (image * weight[..., None]).sum((0, 1)) / total if total > 0 else image.mean((0, 1))
        return image * weight[..., None] + mean * (1 - weight[..., None])
    wi = image * weight[..., None]
    h, w = weight.shape
    ws = weight.reshape(h // 2, 2, w // 2, 2).sum((1, 3))
    cs = wi.reshape(h // 2, 2, w // 2, 2, -1).sum((1, 3))
    coarse_img = np.where(ws[..., None] > 0, cs / np.maximum(ws, 1e-12)[..., None], 0.0)
    coarse = push_pull(coarse_img, np.clip(ws, 0, 1), min_size)
    up = _upsample_wrap(coarse)
    return image * weight[..., None] + up * (1 - weight[..., None])


def region_map(template, size: int) -> np.ndarray:
    """(size, size) int8: the template region (skin / scalp / ear / neck) under each texel."""
    R, C = template.rows, template.cols
    v_rows = template.uvs.reshape(R, C + 1, 2)[:, 0, 1]
    centres = (np.arange(size) + 0.5) / size
    rows = np.clip(np.round(np.interp(centres, v_rows, np.arange(R))).astype(int), 0, R - 1)
    cols = np.round(centres * C).astype(int) % C
    vid = np.where(rows[:, None] == 0, 0, 1 + (rows[:, None] - 1) * C + cols[None, :])
    return template.region[vid]


def complete_texture(texture: np.ndarray, visibility: np.ndarray, template, tones: PhotoTones
                     ) -> tuple[np.ndarray, dict]:
    """The full texture: photo where seen, mirror where only the other side was seen, then a smooth fill
    that fades into hair / skin tones (by template region) away from everything the photo showed.
    texture (T, T, 3) float, visibility (T, T). Returns the texture and coverage figures."""
    T = texture.shape[0]
    mirrored, conf, took_mirror = mirror_fill(texture, visibility)
    known = conf > 0
    fill = push_pull(mirrored, conf)
    regions = region_map(template, T)
    palette = np.stack([tones.skin, tones.hair, tones.skin * 0.92, tones.skin * 0.85]).astype(np.float32)
    prior = _wrap_blur(palette[regions], T / 24)
    # hair is not paint: faint strands running down the scalp (deterministic noise, long in v, short in u)
    rng = np.random.default_rng(7)
    strands = cv2.GaussianBlur(rng.normal(size=(T, T)).astype(np.float32), (0, 0), sigmaX=T / 512, sigmaY=T / 40)
    strands = strands / max(float(strands.std()), 1e-6)
    scalp = _wrap_blur((regions == REGION_SCALP).astype(np.float32), T / 48)
    prior = prior * (1 + 0.08 * strands * scalp)[..., None]
    dist = cv2.distanceTransform((~known).astype(np.uint8), cv2.DIST_L2, 5)
    beta = np.clip(dist / (0.06 * T), 0, 1)[..., None]
    fill = fill * (1 - beta) + prior * beta
    fill = _wrap_blur(fill, T / 256)
    out = mirrored * conf[..., None] + fill * (1 - conf[..., None])
    stats = {"photo_texels": float((visibility > 0).mean()), "mirrored_texels": float(took_mirror.mean()),
             "inpainted_texels": float((~known).mean()),
             "skin_rgb": [round(float(c), 3) for c in tones.skin], "hair_rgb": [round(float(c), 3) for c in tones.hair]}
    return np.clip(out, 0, 1).astype(np.float32), stats
