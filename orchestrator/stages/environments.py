"""Environment maps for the optimise stage's "pbr" shading (ID-to-3D: "we sample random environment
illumination maps, augmented with random Y-axis rotations" from a list of 60 HDR maps).

An environment is an equirectangular map of LINEAR radiance (3, H, W), +Y up (render.proto EnvironmentMap).
Two sources:
  "procedural"  ours, for machines without HDR files: a sky-to-ground gradient of random tint and a sun of
                random direction, size and strength, drawn from the step's generator; mean radiance about 1.
  a folder      Radiance .hdr files (e.g. Poly Haven's CC0 HDRIs), read once with OpenCV, area-downsampled
                to at most max_height rows (2:1) so a step's request stays small; one map per step at random.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from orchestrator.stages.params import ShadingParams
from services.common.errors import FailedPrecondition
from services.render.types import EnvironmentMap


def procedural_environment(rng: np.random.Generator, height: int = 32) -> np.ndarray:
    """(3, height, 2 height) linear radiance: sky gradient plus one sun (module docstring)."""
    w = 2 * height
    theta = np.pi * (np.arange(height) + 0.5) / height                  # polar angle from +Y
    phi = 2 * np.pi * ((np.arange(w) + 0.5) / w - 0.5)
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    d = np.stack([np.sin(th) * np.sin(ph), np.cos(th), np.sin(th) * np.cos(ph)], 0)   # (3, H, W)
    sky = rng.uniform(0.5, 1.2) * np.array([0.75, 0.85, 1.0]) * rng.uniform(0.85, 1.15, 3)
    ground = rng.uniform(0.1, 0.4) * np.array([1.0, 0.9, 0.8])
    up = np.clip(d[1], -1, 1)[None]
    radiance = np.where(up > 0, sky[:, None, None] * (0.6 + 0.4 * up), ground[:, None, None] * (1 + 0.5 * up))
    sun_dir = rng.normal(size=3)
    sun_dir[1] = abs(sun_dir[1]) + 0.2                                  # above the horizon
    sun_dir /= np.linalg.norm(sun_dir)
    width = rng.uniform(0.05, 0.3)                                      # radians
    cos_angle = np.tensordot(sun_dir, d, axes=1)
    sun = rng.uniform(2.0, 12.0) * np.exp((cos_angle - 1) / width ** 2)
    radiance = radiance + sun[None] * np.array([1.0, 0.95, 0.85])[:, None, None]
    return (radiance / radiance.mean()).astype(np.float32)


@lru_cache(maxsize=4)
def _load_folder(folder: str, max_height: int) -> tuple[np.ndarray, ...]:
    files = sorted(Path(folder).glob("*.hdr"))
    if not files:
        raise FailedPrecondition(f"no Radiance .hdr environment maps in {folder} (give a folder of .hdr files, "
                                 f"or environments: procedural)", reason="NO_ENVIRONMENT_MAPS")
    maps = []
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        if bgr is None or bgr.ndim != 3 or bgr.dtype != np.float32:
            raise FailedPrecondition(f"{f} is not a readable Radiance HDR image", reason="BAD_ENVIRONMENT_MAP")
        h = min(max_height, bgr.shape[0])
        rgb = cv2.resize(bgr, (2 * h, h), interpolation=cv2.INTER_AREA)[..., ::-1]
        maps.append(np.ascontiguousarray(np.clip(rgb, 0, None).transpose(2, 0, 1), np.float32))
    return tuple(maps)


def environment_for_step(spec: ShadingParams, folder: Path | None, rng: np.random.Generator) -> EnvironmentMap:
    """The step's environment: a procedural or a file map (folder: the resolved `environments` path, None
    for procedural), rotated about +Y by a uniform random angle when spec.random_rotation."""
    if folder is None:
        radiance = procedural_environment(rng, min(spec.max_height, 32))
    else:
        maps = _load_folder(str(folder), spec.max_height)
        radiance = maps[int(rng.integers(len(maps)))]
    rotation = float(rng.uniform(0, 360)) if spec.random_rotation else 0.0
    return EnvironmentMap(radiance, rotation)
