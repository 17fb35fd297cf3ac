"""`headforge generate | eval | demo`: a recipe on one subject in this process, and the papers'
evaluation protocol on its output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from orchestrator.cli.args import pairs
from orchestrator.cli.honesty import print_report_warnings
from services.common.client import INPROCESS


def add_parsers(sub) -> None:
    """`generate`, `eval` and `demo`, on the top-level subparsers `sub`."""
    gen = sub.add_parser("generate", help="portrait -> 3D head in this process (default: the fast recipe)")
    gen.add_argument("image", nargs="?", help="the portrait (text-only recipes take none)")
    gen.add_argument("--out", default="out/head", help="output folder (written only when the run succeeds)")
    gen.add_argument("--recipe", default=None, help="a built-in recipe (default fast); see `headforge recipes`")
    gen.add_argument("--recipe-file", default=None, help="your own recipe YAML")
    gen.add_argument("--option", action="append", metavar="K=V", help="recipe override by dotted path")
    gen.add_argument("--prompt", default="")
    gen.add_argument("--models", default=None, help="model folder (as `headforge models make-tiny` writes it); "
                     "its guidance/guidance.yaml configures in-process guidance")
    gen.add_argument("--guidance-config", default=None, help="guidance model repository YAML (in-process)")
    gen.add_argument("--guidance-target", default=None, help="HOST:PORT of a guidance service")
    gen.add_argument("--texture-size", type=int, default=None,
                     help="texture side in px: sets texture_size in every stage of the recipe that has one "
                          "(an error when none has; the fast recipe's default 1024)")
    gen.add_argument("--no-progress", action="store_true")
    _add_generate_flags(gen)
    gen.set_defaults(func=cmd_generate)

    ev = sub.add_parser("eval", help="the papers' evaluation protocol on a generated head")
    ev.add_argument("out_dir", help="a folder written by `headforge generate` (asset.glb) or fetched by "
                    "`headforge fetch JOB_ID` (export/*.glb, or a Gaussians export/*.ply)")
    ev.add_argument("--reference", required=True, help="the input photo")
    ev.add_argument("--json", action="store_true")
    _add_generate_flags(ev)
    ev.set_defaults(func=cmd_eval)

    demo = sub.add_parser("demo", help="`generate` on a bundled portrait (scikit-image's astronaut)")
    demo.add_argument("--out", default="out/demo")
    demo.add_argument("--threads", type=int, default=1)
    demo.set_defaults(func=cmd_demo)


def _add_generate_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--face-index", type=int, default=None,
                   help="which face when the photo has several (0 = the largest; eval: the one generate used); "
                        "generate: sets face_index in every stage of the recipe that has one (an error when none has)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy 2-core box)")
    p.add_argument("--clip-model", default=None, help="a local Hugging Face CLIP folder: enables CLIP-I "
                   "(generate: sets clip_model in every stage of the recipe that has one)")
    p.add_argument("--target", default=None, help="HOST:PORT of a face service; default in-process")
    p.add_argument("--render-target", default=None, help="HOST:PORT of a render service; default in-process")
    p.add_argument("--token", default=None)
    from services.face.cli import add_backend_arguments

    add_backend_arguments(p)


def _generate_clients(args):
    """Face and render clients: in-process by default, gRPC when a target is given."""
    from services.face.client import connect as connect_face
    from services.render.client import connect as connect_render

    face = connect_face(args.target or INPROCESS, token=args.token, config=_face_config(args))
    render = connect_render(args.render_target or INPROCESS, token=args.token)
    return face, render


def _set_threads(n: int) -> None:
    import logging

    import torch

    # the head template is open at the neck on purpose: the render service's "topology problems" note is noise here
    logging.getLogger("services.render.representations.mesh").setLevel(logging.ERROR)
    # the CPU rasteriser's small ops wait on each other with more threads on a busy 2-core machine
    torch.set_num_threads(max(1, n))
    torch.set_flush_denormal(True)


def _progress_bar(enabled: bool):
    """A rich progress bar over the recipe's stages, as a progress(stage, fraction) callback."""
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    class Bar:
        def __enter__(self):
            self.progress = Progress(TextColumn("{task.description:<10}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                     TimeElapsedColumn(), transient=False)
            self.progress.__enter__()
            self.task = self.progress.add_task("analyse", total=1.0)
            return self

        def __call__(self, stage: str, fraction: float) -> None:
            self.progress.update(self.task, completed=fraction, description=stage)

        def __exit__(self, *exc):
            return self.progress.__exit__(*exc)

    return Bar()


def _print_head_summary(out_dir: Path, total_s: float, metrics: dict) -> None:
    """Where the head went and the evaluation protocol's figures (the fast recipe's report.json metrics);
    the report's warnings follow (print_report_warnings)."""
    fr = metrics["views"]["frontal"]
    print(f"head written in {total_s:.1f} s to {out_dir}")
    for name in ("asset.glb", "turntable.gif", "contact_sheet.png", "report.json"):
        print(f"  {out_dir / name}")
    dist = f"{fr['distance']:.3f}" if fr.get("distance") is not None else "no face found"
    print(f"identity: {same_person_line(metrics)}; frontal render {metrics['face_model']['backend']} distance "
          f"{dist}; PSNR {metrics['psnr_db']:.2f} dB, SSIM {metrics['ssim']:.3f} at the photo's camera")


def same_person_line(metrics: dict) -> str:
    """'same person at N of 5 views (frontal, +-30, +-45 deg; dlib distance < 0.6)' from evaluate's metrics."""
    sp = metrics.get("same_person_views")
    if not sp:
        return f"ID over 4 views {metrics['identity_similarity']:.3f}"
    return (f"same person at {sp['count']} of {sp['of']} views (frontal, +-30, +-45 deg; "
            f"{metrics['face_model']['backend']} distance < {sp['threshold']})")


def _face_config(args):
    """The in-process face service's FaceConfig from the face flags; a bad mix is an InvalidArgument."""
    from pydantic import ValidationError

    from services.common.errors import InvalidArgument
    from services.face.cli import config_from_args

    try:
        return config_from_args(args)
    except ValidationError as e:
        raise InvalidArgument("face flags", "; ".join(err["msg"] for err in e.errors())) from None


def _recipe_options(args) -> dict[str, str]:
    """--option K=V, and the flags that set a stage param by name (stages.*.PARAM)."""
    options = pairs(args.option, "--option")
    for param in ("texture_size", "face_index", "clip_model", "max_image_pixels"):
        value = getattr(args, param)
        if value is not None:
            options[f"stages.*.{param}"] = str(value)
    return options


def _print_recipe_summary(loaded, result) -> None:
    """The artifacts; for a recipe whose report has the evaluation protocol's figures, those too; then the
    report's warnings, and a NOT A RESULT line when a test prior or random weights served the job."""
    report_path = result.out_dir / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    m = report.get("metrics", {})
    if "timings_s" in report and "identity_similarity" in m:
        _print_head_summary(result.out_dir, report["timings_s"]["total"], m)
    else:
        print(f"{loaded.source} finished in {sum(result.stage_seconds.values()):.1f} s; artifacts in {result.out_dir}:")
        for name in result.artifacts:
            print(f"  {name}")
    print_report_warnings(report)


def cmd_generate(args) -> int:
    """Any recipe (default fast), in this process (orchestrator/local.py): the same stages a cluster job runs."""
    from orchestrator.local import run_local
    from orchestrator.recipes import load_recipe, load_recipe_file
    from orchestrator.runtime.endpoints import Endpoints

    options = _recipe_options(args)
    loaded = (load_recipe_file(args.recipe_file, options) if args.recipe_file
              else load_recipe(args.recipe or "fast", options=options))
    if loaded.recipe.inputs.min_images and not args.image:
        raise SystemExit(f"headforge generate: the {loaded.recipe.name} recipe needs a photo")
    guidance_config = args.guidance_config
    if guidance_config is None and args.models and (Path(args.models) / "guidance" / "guidance.yaml").is_file():
        guidance_config = str(Path(args.models) / "guidance" / "guidance.yaml")
    endpoints = Endpoints(face=args.target or INPROCESS, render=args.render_target or INPROCESS,
                          guidance=args.guidance_target or INPROCESS, guidance_config=guidance_config,
                          token=args.token)
    face_config = _face_config(args)
    _set_threads(args.threads)
    images = [Path(args.image).read_bytes()] if args.image else []
    result = run_local(loaded, images, args.prompt, Path(args.out), endpoints=endpoints, face_config=face_config,
                       image_names=[args.image] if args.image else [], show_progress=not args.no_progress)
    if result.state != "succeeded":
        print(f"headforge generate: {result.state}: {result.error_message}", file=sys.stderr)
        return 1
    _print_recipe_summary(loaded, result)
    return 0


def cmd_eval(args) -> int:
    from orchestrator.evaluate_asset import evaluate_asset

    _set_threads(args.threads)
    face, render = _generate_clients(args)
    ev = evaluate_asset(Path(args.out_dir), Path(args.reference), face_client=face, render_client=render,
                        face_index=args.face_index, clip_model=args.clip_model)
    m = ev.metrics
    if args.json:
        print(json.dumps(m, indent=1))
        return 0
    print(f"identity ({m['face_model']['backend']}, mean cosine over left-frontal, left, right-frontal, right; "
          f"0 where no face): {m['identity_similarity']:.4f}")
    for name, v in m["views"].items():
        d = f"distance {v['distance']:.3f}, cosine {v['cosine']:.3f}" if v["face_found"] else "no face found"
        print(f"  {name:<14} az {v['azimuth_deg']:+6.0f}  {d}")
    print(f"PSNR {m['psnr_db']:.2f} dB, SSIM {m['ssim']:.4f} at the reference view (head mask)")
    print(f"LPIPS: {m['lpips']}")
    print(f"CLIP-I: {m['clip_i']}")
    report = Path(args.out_dir) / "report.json"   # the head's own warnings (a test prior made it, ...)
    print_report_warnings(json.loads(report.read_text()) if report.is_file() else {})
    return 0


def cmd_demo(args) -> int:
    from orchestrator.demo import run_demo

    _set_threads(args.threads)
    with _progress_bar(True) as bar:
        result = run_demo(Path(args.out), progress=bar)
    _print_head_summary(result.out_dir, result.timings["total"], result.metrics)
    print_report_warnings(json.loads(result.report.read_text()))
    return 0
