"""The render service's command-line pieces, called by `headforge` (orchestrator/cli):

    headforge serve render [--device cuda] [--max-tenant-bytes N] ...   add_serve_arguments + serve

torch is imported inside serve(), so building the parser stays fast.
"""

from __future__ import annotations

import argparse

from services.common.server import ServerConfig
from services.render.types import RenderLimits


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `headforge serve render` (the common server flags are added by the caller)."""
    defaults = RenderLimits()
    parser.add_argument("--device", default=None, help="torch device; default cuda when available, else cpu")
    parser.add_argument("--scene-idle-ttl-s", type=float, default=defaults.scene_idle_ttl_s)
    parser.add_argument("--max-scenes-per-tenant", type=int, default=defaults.max_scenes_per_tenant)
    parser.add_argument("--max-tenant-bytes", type=int, default=defaults.max_tenant_bytes,
                        help="scene bytes per tenant")
    parser.add_argument("--max-pending-steps", type=int, default=defaults.max_pending_steps_per_scene,
                        help="step handles held per scene")
    parser.add_argument("--max-render-pixels", type=int, default=defaults.max_render_pixels,
                        help="N x H x W per Render call")
    parser.add_argument("--max-gaussians", type=int, default=defaults.max_gaussians)
    parser.add_argument("--max-triangles", type=int, default=defaults.max_triangles)
    parser.add_argument("--max-asset-bytes", type=int, default=defaults.max_asset_bytes)


def limits_from_args(args: argparse.Namespace) -> RenderLimits:
    """The RenderLimits of parsed add_serve_arguments flags (pydantic ValidationError when out of range)."""
    return RenderLimits(scene_idle_ttl_s=args.scene_idle_ttl_s, max_scenes_per_tenant=args.max_scenes_per_tenant,
                        max_tenant_bytes=args.max_tenant_bytes, max_pending_steps_per_scene=args.max_pending_steps,
                        max_render_pixels=args.max_render_pixels, max_gaussians=args.max_gaussians,
                        max_triangles=args.max_triangles, max_asset_bytes=args.max_asset_bytes)


def serve(args: argparse.Namespace, config: ServerConfig) -> int:
    """Run `headforge serve render` until SIGTERM."""
    import torch

    from services.common.server import serve_forever
    from services.render.service import RenderService
    from services.render.servicer import register

    # denormal floats (opaque fields, far-off Gaussians) make CPU kernels an order of magnitude slower;
    # set for the whole server process (process-global state, so not inside RenderService)
    torch.set_flush_denormal(True)
    service = RenderService(limits_from_args(args), device=args.device, max_message_bytes=config.max_message_bytes)
    return serve_forever("render", config, register(service))
