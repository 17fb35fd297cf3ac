"""`headforge face analyze | compare`: the face service from the command line (in-process, or --target)."""

from __future__ import annotations

import json
from pathlib import Path

from services.common.client import INPROCESS


def add_parsers(sub) -> None:
    """`face analyze` and `face compare`, on the top-level subparsers `sub`."""
    from services.face.cli import add_backend_arguments

    face = sub.add_parser("face", help="face analysis").add_subparsers(dest="face_command", required=True)
    for name, func in (("analyze", cmd_face_analyze), ("compare", cmd_face_compare)):
        p = face.add_parser(name)
        if name == "analyze":
            p.add_argument("image")
            p.add_argument("--json", action="store_true")
            p.add_argument("--out", default=None, help="write aligned crops and masks as PNG here")
            p.add_argument("--max-faces", type=int, default=0)
            p.add_argument("--crop-size", type=int, default=512)
            p.add_argument("--crop-style", choices=["head", "ffhq"], default="head")
        else:
            p.add_argument("a")
            p.add_argument("b")
        p.add_argument("--target", default=None, help="HOST:PORT of a face service; default in-process")
        p.add_argument("--token", default=None)
        add_backend_arguments(p)
        p.set_defaults(func=func)


def _face_client(args):
    from services.face.cli import config_from_args
    from services.face.client import connect

    return connect(args.target or INPROCESS, token=args.token, config=config_from_args(args))


def cmd_face_analyze(args) -> int:
    from services.face.types import AnalyzeOptions, face_to_dict

    client = _face_client(args)
    options = AnalyzeOptions(max_faces=args.max_faces, crop_size=args.crop_size, crop_style=args.crop_style,
                             skip_masks=not args.out, skip_crop=not args.out)
    result = client.analyze(Path(args.image).read_bytes(), options)
    if args.out:
        _write_face_images(result, Path(args.out))
    if args.json:
        print(json.dumps({"image_width": result.image_width, "image_height": result.image_height,
                          "faces": [face_to_dict(f) for f in result.faces],
                          "models": [vars(m) for m in result.models]}, indent=1))
        return 0
    print(f"{args.image}: {result.image_width}x{result.image_height}, {len(result.faces)} face(s)")
    for i, f in enumerate(result.faces):
        x0, y0, x1, y1 = f.box
        print(f"  [{i}] box=({x0:.0f},{y0:.0f})-({x1:.0f},{y1:.0f}) score={f.score:.2f} "
              f"yaw={f.pose.yaw:+.1f} pitch={f.pose.pitch:+.1f} roll={f.pose.roll:+.1f}")
    return 0

def _write_face_images(result, out: Path) -> list[Path]:
    from services.common.images import encode_png

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, f in enumerate(result.faces):
        for name in ("aligned_crop", "head_mask", "face_mask", "crop_head_mask"):
            arr = getattr(f, name)
            if arr is not None:
                path = out / f"face{i}_{name}.png"
                path.write_bytes(encode_png(arr))
                written.append(path)
    return written

def cmd_face_compare(args) -> int:
    client = _face_client(args)
    r = client.compare(Path(args.a).read_bytes(), Path(args.b).read_bytes())
    verdict = "same person" if r.same_person else "different people"
    print(f"{verdict}: {r.metric} distance {r.distance:.3f} (threshold {r.threshold}), cosine {r.cosine_similarity:.3f}")
    return 0
