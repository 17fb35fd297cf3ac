"""Fit a Gaussian scene and a coarse textured mesh to the procedural head through the render service's
Render -> ApplyGradients loop, and write a picture: target (top), Gaussians, mesh, on held-out views.

    python -m tests.bench.render_fits --out docs/render_fits.png
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from services.core.cameras import orbit_camera, sample_orbit_cameras
from services.core.camera_batch import CameraBatch
from services.render.types import LrSchedule, OptimizerSpec
from services.core.procedural_head import head_mesh, render_head
from services.render.service import RenderService
from services.render.types import GradientTerm

# short-run learning rates (the kinds' defaults are 3DGS's, tuned for 30k steps)
GAUSSIAN_LRS = {"means": 1e-3, "scales": 1e-2, "quats": 5e-3, "opacities": 5e-2, "sh0": 3e-2, "shN": 1e-3}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="out/render_fits.png")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    svc = RenderService()
    rng = np.random.default_rng(0)
    train = sample_orbit_cameras(24, rng, azimuth=(-180, 180), elevation=(-10, 30), radius=(3, 3), fov=(40, 40),
                                 width=96, height=96)
    targets = [render_head(CameraBatch.from_pinholes([c]))["rgb"].numpy() for c in train]
    held = [orbit_camera(a, 10, 3.0, fov_deg=40, width=128, height=128) for a in (30, 150, -100)]
    held_target = render_head(CameraBatch.from_pinholes(held))["rgb"].numpy()
    v, _, _ = head_mesh(48)
    idx = rng.integers(0, len(v), 6000)
    coarse_v, coarse_f, _ = head_mesh(28)
    scenes = {
        "gaussians": svc.create_scene(
            "gaussians", {"points": v[idx], "colors": np.full((6000, 3), 0.5, np.float32), "opacity": 0.5,
                          "strategy": {"disabled": True}}, options={"tile_size": "8"}, seed=1,
            optimizer=OptimizerSpec(lrs={k: LrSchedule.constant(x) for k, x in GAUSSIAN_LRS.items()})),
        "mesh": svc.create_scene(
            "mesh", {"vertices": coarse_v, "faces": coarse_f, "texture_size": 256}, seed=1,
            optimizer=OptimizerSpec(lrs={"texture": LrSchedule.constant(0.03), "vertices": LrSchedule.constant(2e-4)})),
    }
    strip = lambda a: np.concatenate(list((a.clip(0, 1).transpose(0, 2, 3, 1) * 255).astype(np.uint8)), 1)  # noqa: E731
    rows = [strip(held_target)]
    for name, info in scenes.items():
        start = time.time()
        for step in range(args.steps):
            i, j = step % len(train), (step * 7 + 3) % len(train)
            out = svc.render(info.scene_id, [train[i], train[j]], ["rgb"], requires_grad=True)
            diff = out.outputs["rgb"] - np.concatenate([targets[i], targets[j]])
            svc.apply_gradients(info.scene_id, [GradientTerm(out.step_handle, "rgb", 2 * diff / diff.size)])
        rendered = svc.render(info.scene_id, held, ["rgb"]).outputs["rgb"]
        psnr = -10 * np.log10(((rendered - held_target) ** 2).mean())
        print(f"{name}: {args.steps} steps in {time.time() - start:.1f} s, held-out PSNR {psnr:.2f} dB")
        rows.append(strip(rendered))
    Image.fromarray(np.concatenate(rows, 0)).save(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
