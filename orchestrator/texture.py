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
    background: np.ndarray | None = None   # (3,) the wall round the head, when the photo shows one


def background_tones(img: np.ndarray, head_mask: np.ndarray, ring_px: int, k: int = 4) -> np.ndarray | None:
    """The wall's main colours (k, 3), most common first: k-means of the photo in a ring just outside the
    head mask (None when the ring has under 100 pixels)."""
    m = (head_mask > 0).astype(np.uint8)
    kernel = np.ones((2 * ring_px + 1, 2 * ring_px + 1), np.uint8)
    ring = (cv2.dilate(m, kernel) > 0) & (cv2.dilate(m, np.ones((5, 5), np.uint8)) == 0)
    px = img[ring].astype(np.float32)
    if len(px) < 100:
        return None
    px = px[np.random.default_rng(0).permutation(len(px))[:4000]]
    centres = px[np.linspace(0, len(px) - 1, k).astype(int)]
    for _ in range(12):                       # plain k-means, deterministic
        labels = np.argmin(((px[:, None] - centres[None]) ** 2).sum(-1), 1)
        centres = np.stack([px[labels == i].mean(0) if (labels == i).any() else centres[i] for i in range(k)])
    counts = np.bincount(labels, minlength=k)
    return centres[np.argsort(-counts)].astype(np.float32)


def photo_tones(rgb: np.ndarray, lm68: np.ndarray, head_mask: np.ndarray, face_mask: np.ndarray) -> PhotoTones:
    """Median skin tone over the cheeks (face hull minus eyes, nose and mouth) and median hair tone over
    the head mask above the brows outside the face hull, within 0.25 face heights of the face, leaving out
    pixels within 0.12 of the wall's colours (background_tones: a loose head mask takes in wall). Falls
    back to the skin tone, darkened, when the photo shows no hair."""
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
    # a loose head mask takes in the wall: keep a band round the face (hair grows there) and drop pixels
    # close to any of the wall's colours (k-means of a ring just outside the head mask)
    face_h = float(np.linalg.norm(lm68[27] - lm68[8]))
    d_face = cv2.distanceTransform((face_mask == 0).astype(np.uint8), cv2.DIST_L2, 3)
    hair_region &= d_face < 0.25 * face_h
    walls = background_tones(img, head_mask, max(4, int(0.15 * face_h)))
    background = walls[0] if walls is not None else None
    if walls is not None:
        for c in walls:
            hair_region &= np.linalg.norm(img - c, axis=-1) > 0.12
    hair_px = img[hair_region]
    if len(hair_px) >= 50:
        # hair is darker or differently coloured than skin: keep pixels away from the skin tone
        d = np.linalg.norm(hair_px - skin, axis=1)
        far = hair_px[d >= np.percentile(d, 40)] if len(hair_px) > 200 else hair_px
        hair = np.median(far, 0)
    else:
        hair = skin * 0.55
    return PhotoTones(np.asarray(skin, np.float32), np.asarray(hair, np.float32), int(len(hair_px)),
                      int(len(skin_px)), background)


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


def yaw_mirror_weight(yaw_deg: float, full_deg: float = 10.0, zero_deg: float = 30.0) -> float:
    """How much the mirror may be trusted for a photo whose face is turned yaw_deg: 1 up to |yaw| = 10 deg,
    a smoothstep down to 0 at 30 deg (a turned face's mirror image lands on a wrongly placed far side and
    shows as a second nose / mouth edge)."""
    return float(1 - _smoothstep((abs(float(yaw_deg)) - full_deg) / (zero_deg - full_deg)))


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def mirror_fill(texture: np.ndarray, visibility: np.ndarray, mirror_weight=1.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Complete poorly seen texels from their mirror images (u -> 1 - u). texture (T, T, 3), visibility
    (T, T) (the viewing cosine where the photo coloured the texel, else 0), mirror_weight a scalar or (T, T)
    in [0, 1] (yaw_mirror_weight: 0 turns the mirror off). Returns the texture, the weight of the photo in
    each texel (0..1) and a mask of texels that took mirrored colour. The mirror only contributes where
    its source is seen at a clearly better viewing cosine (by 0.1, fully by 0.35), so asymmetric features
    stay; all weights are smooth in the cosines."""
    vis_m = visibility[:, ::-1]
    tex_m = texture[:, ::-1]
    trust = lambda v: _smoothstep((v - 0.2) / 0.35)          # noqa: E731  grazing views fade out
    better = _smoothstep((vis_m - visibility - 0.1) / 0.25) * np.asarray(mirror_weight, np.float32)
    own = trust(visibility) * (1 - better * (1 - trust(visibility)))   # a well-seen texel keeps its colour
    mir = 0.6 * trust(vis_m) * better
    own = np.where(visibility > 0, np.maximum(own, 1e-6 * (1 - better)), 0.0)
    total = own + mir
    out = np.where(total[..., None] > 0, (texture * own[..., None] + tex_m * mir[..., None])
                   / np.maximum(total, 1e-12)[..., None], 0.0)
    conf = np.clip(np.maximum(trust(visibility), mir), 0, 1)
    conf = np.where(total > 0, conf, 0.0)
    return out.astype(np.float32), conf.astype(np.float32), (mir > own) & (mir > 0)


def feather(conf: np.ndarray, width: float, inset: float = 0.0) -> np.ndarray:
    """conf scaled by smoothstep((d - inset) / width), d the distance (texels) to the nearest texel the
    photo did not colour, wrapping round the u seam: no hard line where the photo stops, and the outermost
    inset texels (the background fringe) give way to colours dilated from inside."""
    T = conf.shape[1]
    pad = int(width + inset) + 2
    known = np.concatenate([conf[:, -pad:], conf, conf[:, :pad]], 1) > 0
    known = np.pad(known, ((1, 1), (0, 0)), constant_values=True)     # the crown / neck rows are no edge
    d = cv2.distanceTransform(known.astype(np.uint8), cv2.DIST_L2, 5)[1:-1, pad:pad + T]
    return (conf * _smoothstep((d - inset) / max(width, 1e-6))).astype(np.float32)


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


def _drop_wall_on_ears(texture: np.ndarray, visibility: np.ndarray, regions: np.ndarray, tones: PhotoTones
                       ) -> np.ndarray:
    """visibility without the ear texels whose photo colour is nearer the wall's than the skin's: the
    template's ears stand out past most photos' ears, and a head mask that took in a pale wall beside
    white hair paints them with the wall."""
    if tones.background is None:
        return visibility
    ears = (regions == REGION_EAR) & (visibility > 0)
    wall = np.linalg.norm(texture - tones.background, axis=-1) < np.linalg.norm(texture - tones.skin, axis=-1)
    return np.where(ears & wall, 0.0, visibility).astype(visibility.dtype)


def complete_texture(texture: np.ndarray, visibility: np.ndarray, template, tones: PhotoTones,
                     yaw_deg: float = 0.0) -> tuple[np.ndarray, dict]:
    """The full texture: photo where seen, mirror where only the other side was seen, then a smooth fill
    that fades into hair / skin tones (by template region) away from everything the photo showed.
    texture (T, T, 3) float, visibility (T, T). Returns the texture and coverage figures."""
    T = texture.shape[0]
    regions = region_map(template, T)
    # the face (skin) mirrors only for a near-frontal photo; hair, ears and neck carry no features that
    # ghost, and mirror up to 50 deg
    w_face = yaw_mirror_weight(yaw_deg)
    w_rest = yaw_mirror_weight(yaw_deg, 25.0, 50.0)
    mirror_weight = np.where(regions == REGION_SKIN, w_face, w_rest).astype(np.float32)
    visibility = _drop_wall_on_ears(texture, visibility, regions, tones)
    mirrored, conf, took_mirror = mirror_fill(texture, visibility, mirror_weight)
    conf = feather(conf, width=T / 48, inset=T / 256)
    known = conf > 0
    fill = push_pull(mirrored, conf)
    # ears and neck are skin: filled from what the photo showed of skin, not from the hair around the ears
    skin_like = np.isin(regions, (REGION_EAR, REGION_NECK))
    fill[skin_like] = push_pull(mirrored, conf * (regions != REGION_SCALP))[skin_like]
    palette = np.stack([tones.skin, tones.hair, tones.skin * 0.92, tones.skin * 0.85]).astype(np.float32)
    prior = _wrap_blur(palette[regions], T / 24)
    # hair is not paint: faint strands running down the scalp (deterministic noise, long in v, short in u)
    rng = np.random.default_rng(7)
    strands = cv2.GaussianBlur(rng.normal(size=(T, T)).astype(np.float32), (0, 0), sigmaX=T / 512, sigmaY=T / 40)
    strands = strands / max(float(strands.std()), 1e-6)
    scalp = _wrap_blur((regions == REGION_SCALP).astype(np.float32), T / 48)
    if not ((conf > 0.95) & (regions == REGION_SCALP)).any():
        prior = prior * (1 + 0.08 * strands * scalp)[..., None]   # no hair seen: faint strands instead
    dist = cv2.distanceTransform((~known).astype(np.uint8), cv2.DIST_L2, 5)
    beta = np.clip(dist / (0.06 * T), 0, 1)[..., None]
    fill = fill * (1 - beta) + prior * beta
    fill = _wrap_blur(fill, T / 256)
    # structure: the seen hair's own detail, tiled over the scalp the photo did not show
    from orchestrator.texture_synthesis import patch_detail

    detail = patch_detail(mirrored, (conf > 0.95) & (regions == REGION_SCALP), max(8, T // 16))
    if detail is not None:
        fill = fill + detail * scalp[..., None]
    out = mirrored * conf[..., None] + fill * (1 - conf[..., None])
    stats = {"mirror_weight_face": round(w_face, 3), "photo_texels": float((visibility > 0).mean()),
             "mirrored_texels": float(took_mirror.mean()),
             "inpainted_texels": float((~known).mean()),
             "skin_rgb": [round(float(c), 3) for c in tones.skin], "hair_rgb": [round(float(c), 3) for c in tones.hair]}
    return np.clip(out, 0, 1).astype(np.float32), stats
