"""Cameras in HeadForge's one convention (see protos/headforge/v1/common.proto).

World: right-handed, +Y up, head at the origin looking along +Z. Cameras: OpenCV pinhole (x right,
y down, z forward), world-to-camera 4x4. Orbit angles: azimuth 0 = camera on +Z, +90 = camera on +X;
elevation positive above. All angles in degrees, distances in world units, intrinsics in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from headforge.v1 import common_pb2
from services.common.errors import InvalidArgument


@dataclass
class PinholeCamera:
    """Intrinsics K (3, 3) in pixels, world_to_camera (4, 4), image size in pixels."""

    K: np.ndarray
    world_to_camera: np.ndarray
    width: int
    height: int

    @property
    def camera_to_world(self) -> np.ndarray:
        return np.linalg.inv(self.world_to_camera)

    @property
    def position(self) -> np.ndarray:
        """Camera centre in world coordinates, (3,)."""
        return self.camera_to_world[:3, 3]

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> pixel coordinates (N, 2)."""
        cam = points @ self.world_to_camera[:3, :3].T + self.world_to_camera[:3, 3]
        uvw = cam @ self.K.T
        return uvw[:, :2] / uvw[:, 2:3]

    def to_proto(self) -> common_pb2.Camera:
        return common_pb2.Camera(fx=float(self.K[0, 0]), fy=float(self.K[1, 1]), cx=float(self.K[0, 2]),
                                 cy=float(self.K[1, 2]), width=int(self.width), height=int(self.height),
                                 world_to_camera=[float(v) for v in self.world_to_camera.reshape(-1)])

    def validate(self, field: str = "camera") -> "PinholeCamera":
        """InvalidArgument for NaN/inf, non-positive focal lengths or size, or a non-rigid extrinsic."""
        K, m = np.asarray(self.K, dtype=np.float64), np.asarray(self.world_to_camera, dtype=np.float64)
        if K.shape != (3, 3) or m.shape != (4, 4):
            raise InvalidArgument(field, f"K must be 3x3 and world_to_camera 4x4, got {K.shape} and {m.shape}")
        if not np.isfinite(K).all() or not np.isfinite(m).all():
            raise InvalidArgument(field, "camera has NaN or infinite values")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise InvalidArgument(f"{field}.fx", f"focal lengths must be > 0, got fx={K[0, 0]}, fy={K[1, 1]}")
        if self.width <= 0 or self.height <= 0:
            raise InvalidArgument(f"{field}.width", f"image size must be > 0, got {self.width}x{self.height}")
        R = m[:3, :3]
        if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-5) or not np.allclose(R @ R.T, np.eye(3), atol=1e-3) \
                or np.linalg.det(R) < 0:
            raise InvalidArgument(f"{field}.world_to_camera", "must be a rigid transform (rotation + translation)")
        return self

    @classmethod
    def from_proto(cls, msg: common_pb2.Camera, field: str = "camera") -> "PinholeCamera":
        """Validate and convert (see validate)."""
        if len(msg.world_to_camera) != 16:
            raise InvalidArgument(f"{field}.world_to_camera", f"needs 16 values, got {len(msg.world_to_camera)}")
        m = np.asarray(msg.world_to_camera, dtype=np.float64).reshape(4, 4)
        return cls(intrinsics(msg.fx, msg.fy, msg.cx, msg.cy), m, msg.width, msg.height).validate(field)


def camera_for_box(camera: PinholeCamera, box: tuple[float, float, float, float], size: int) -> PinholeCamera:
    """The camera that sees the square pixel box (x0, y0, x1, y1) of `camera`'s image at size x size
    (crop then resize: the extrinsics are unchanged)."""
    x0, y0, x1, _ = box
    s = size / (x1 - x0)
    K = np.asarray(camera.K, np.float64).copy()
    K[0, 0] *= s
    K[1, 1] *= s
    K[0, 2] = (K[0, 2] - x0) * s
    K[1, 2] = (K[1, 2] - y0) * s
    return PinholeCamera(K, np.asarray(camera.world_to_camera, np.float64).copy(), size, size)


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)


def focal_from_fov(fov_deg: float, size_px: float) -> float:
    """Focal length in pixels for a field of view of fov_deg across size_px pixels."""
    return 0.5 * size_px / math.tan(math.radians(fov_deg) / 2)


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """World-to-camera (4, 4) for an OpenCV camera at `eye` looking at `target`, world `up` on screen up."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-8:  # looking straight up/down: any right vector perpendicular to forward
        right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, eye
    return np.linalg.inv(c2w)


def orbit_position(azimuth_deg: float, elevation_deg: float, radius: float, target=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Camera centre on a sphere around target: azimuth 0 -> +Z, 90 -> +X; elevation > 0 above."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    offset = radius * np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    return np.asarray(target, dtype=np.float64) + offset


def orbit_camera(azimuth_deg: float, elevation_deg: float, radius: float, *, fov_deg: float,
                 width: int, height: int, target=(0.0, 0.0, 0.0)) -> PinholeCamera:
    """An orbit camera looking at target with vertical field of view fov_deg, principal point centred."""
    f = focal_from_fov(fov_deg, height)
    w2c = look_at(orbit_position(azimuth_deg, elevation_deg, radius, target), target)
    return PinholeCamera(intrinsics(f, f, width / 2, height / 2), w2c, width, height)


def opencv_to_opengl(world_to_camera: np.ndarray) -> np.ndarray:
    """OpenCV (y down, z forward) world-to-camera -> OpenGL view matrix (y up, z backward)."""
    return np.diag([1.0, -1.0, -1.0, 1.0]) @ world_to_camera


def rotation_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def rotation_x(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


def rotation_z(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def sample_orbit_cameras(n: int, rng: np.random.Generator, *, azimuth=(-180.0, 180.0), elevation=(-10.0, 30.0),
                         radius=(2.5, 3.5), fov=(30.0, 45.0), width: int = 128, height: int = 128,
                         target=(0.0, 0.0, 0.0)) -> list[PinholeCamera]:
    """n orbit cameras with azimuth/elevation (degrees), radius (world units) and vertical field of view
    (degrees) drawn uniformly from the given [low, high] ranges. Elevation is sampled uniformly in
    angle; a paper's polar range [p0, p1] is elevation (90 - p1, 90 - p0)."""
    out = []
    for _ in range(n):
        out.append(orbit_camera(rng.uniform(*azimuth), rng.uniform(*elevation), rng.uniform(*radius),
                                fov_deg=rng.uniform(*fov), width=width, height=height, target=target))
    return out


def orbit_sweep(n: int, *, elevation: float = 0.0, radius: float = 3.0, fov_deg: float = 40.0,
                width: int = 128, height: int = 128, start_azimuth: float = 0.0, end_azimuth: float = 360.0,
                include_end: bool = False, target=(0.0, 0.0, 0.0)) -> list[PinholeCamera]:
    """n cameras ordered in azimuth from start to end (a turntable, a video-SDS clip, or the ordered
    views of progressive texture inpainting). include_end=False suits full 360-degree loops."""
    azimuths = np.linspace(start_azimuth, end_azimuth, n, endpoint=include_end)
    return [orbit_camera(float(a), elevation, radius, fov_deg=fov_deg, width=width, height=height,
                         target=target) for a in azimuths]
