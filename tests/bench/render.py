"""Render + backward time per representation (the render service's inner loop, in-process).

CPU: 128x128, one view, every kind on the torch reference path. With CUDA: 512x512 with 100k
Gaussians / ~100k triangles, on gsplat / nvdiffrast and on the torch reference on the same GPU.
DMTet at its largest grid (512, 135M grid vertices): 256x256 on CPU, 512x512 on CUDA, with the peak
memory (CUDA allocator peak, or the process's peak resident set on CPU).
"""

from __future__ import annotations

import resource
import statistics
import time

import numpy as np
import torch

from services.core.cameras import orbit_camera
from services.render import representations
from services.core.camera_batch import CameraBatch
from services.core.procedural_head import head_mesh
from services.render.types import RenderLimits


def _scene(kind: str, size: str, options: dict):
    spec = representations.SCENE_KINDS.get(kind)
    limits = RenderLimits()
    if kind == "gaussians":
        v, f, c = head_mesh(resolution=64)
        n = 100_000 if size == "large" else 20_000
        idx = np.random.default_rng(0).integers(0, len(v), n)
        init = {"points": v[idx] + np.random.default_rng(1).normal(0, 0.01, (n, 3)).astype(np.float32),
                "colors": c[idx], "opacity": 0.5, "strategy": {"disabled": True}}
    elif kind == "mesh":
        v, f, _ = head_mesh(resolution=160 if size == "large" else 80)
        init = {"vertices": v, "faces": f, "texture_size": 512}
    elif kind == "dmtet":
        init = {"grid_resolution": {"small": 64, "large": 128, "max": 512}[size], "sphere_radius": 0.8}
    else:
        init = {"resolution": 64, "channels": 16} if kind != "pyramid_trigrid" else {"levels": [8, 16, 32, 64]}
    return spec.create(init, 1, options, limits)


def time_kind(kind: str, *, device: str, resolution: int, size: str, options: dict, repeats: int = 5) -> dict:
    rep = _scene(kind, size, options).to(device)
    cam = CameraBatch.from_pinholes([orbit_camera(20, 10, 3.0, fov_deg=40, width=resolution, height=resolution)])
    cam = cam.to(device)
    params = [p for ps in rep.parameter_groups().values() for p in ps]
    times = []
    for i in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = rep.render(cam, ["rgb", "alpha"])
        out["rgb"].mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first run warms up (and compiles CUDA kernels)
            times.append(time.perf_counter() - t)
        for p in params:
            p.grad = None
    counts = {name: sum(p.numel() for p in ps) for name, ps in rep.parameter_groups().items()}
    return {"ms_median": round(statistics.median(times) * 1e3, 1), "resolution": resolution,
            "backend": rep.backend, "param_counts": counts}


def bench_render() -> dict:
    out = {"cpu_128": {}}
    for kind in representations.SCENE_KINDS.names():
        out["cpu_128"][kind] = time_kind(kind, device="cpu", resolution=128, size="small", options={})
    out["dmtet_grid512_cpu_256"] = time_kind("dmtet", device="cpu", resolution=256, size="max", options={},
                                             repeats=1)
    out["dmtet_grid512_cpu_256"]["peak_rss_gib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        out["dmtet_grid512_cuda_512"] = time_kind("dmtet", device="cuda", resolution=512, size="max", options={})
        out["dmtet_grid512_cuda_512"]["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
        out["cuda_512"] = {}
        for kind, fast in (("gaussians", "gsplat"), ("mesh", "nvdiffrast")):
            for backend in (fast, "torch"):
                out["cuda_512"][f"{kind}_{backend}"] = time_kind(kind, device="cuda", resolution=512, size="large",
                                                                 options={"backend": backend})
    return out
