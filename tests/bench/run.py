"""`make bench`: throughput figures as JSON (no pass/fail; targets are read from the numbers).

Face Analyze on a 512x512 portrait (scikit-image's astronaut), in-process and over gRPC on loopback
(a real `headforge serve face` process), sequential and with concurrent callers; render + backward per
representation (tests/bench/render.py); guidance Distill throughput with dynamic batching
(tests/bench/guidance.py); inversion and PTI steps/s (tests/bench/inversion.py: the tiny generator on CPU, a
full-size PanoHead-architecture generator with random weights on CUDA); subjects/hour on Ray
(tests/bench/orchestrator.py); the closed loop on the oracle prior (orchestrator/closed_loop.py: held-out
PSNR, normal error, Chamfer and marking side before/after for Gaussians, DMTet and a tri-plane field); the
Portrait3D-Text recipe stage by stage with random weights (tests/bench/portrait3d_text.py: full size on CUDA,
with K = 1, 2, 4 subjects per GPU; the tiny models on CPU, K = 1, 2); the Portrait3D-ID recipe phase by phase
with random weights (tests/bench/portrait3d_id.py: full size on CUDA, the tiny models on CPU); the ID-to-3D
recipe phase by phase with random weights (tests/bench/id_to_3d.py: full size on CUDA with K = 1, 2, 4 geometry
loops per GPU; the tiny models on CPU, K = 1, 2).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from services.common.images import encode_png
from services.common.process import ServiceProcess

SECTIONS = ("face", "render", "guidance", "orchestrator", "inversion", "closed_loop", "portrait3d_text",
            "portrait3d_id", "id_to_3d")


def _time_calls(fn, n: int, concurrency: int = 1) -> dict:
    fn()  # warm-up
    latencies: list[float] = []

    def one(_):
        t = time.perf_counter()
        faces = fn()
        latencies.append(time.perf_counter() - t)
        return faces

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        faces = sum(pool.map(one, range(n)))
    wall = time.perf_counter() - start
    return {"calls": n, "concurrency": concurrency, "faces_per_s": round(faces / wall, 2),
            "ms_p50": round(statistics.median(latencies) * 1e3, 1),
            "ms_max": round(max(latencies) * 1e3, 1)}


def bench_face(n: int) -> dict:
    from skimage import data

    from services.face.client import GrpcFaceClient
    from services.face.service import InProcessFaceClient
    from services.face.types import AnalyzeOptions

    image = encode_png(data.astronaut())
    results = {}
    options = {"full": AnalyzeOptions(),
               "no_masks_no_crop": AnalyzeOptions(skip_masks=True, skip_crop=True)}
    local = InProcessFaceClient()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServiceProcess(["face", "--port", "0", "--max-workers", "4"], Path(tmp) / "face.log")
        remote = GrpcFaceClient(server.address)
        remote.wait_ready()
        try:
            for name, opts in options.items():
                row = {
                    "inprocess": _time_calls(lambda: len(local.analyze(image, opts).faces), n),
                    "grpc": _time_calls(lambda: len(remote.analyze(image, opts).faces), n),
                    "grpc_2_callers": _time_calls(lambda: len(remote.analyze(image, opts).faces), n, 2),
                }
                row["grpc_over_inprocess_time_ratio"] = round(
                    row["inprocess"]["faces_per_s"] / row["grpc"]["faces_per_s"], 3)
                results[name] = row
        finally:
            remote.close()
            server.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="out/bench.json")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of {', '.join(SECTIONS)} (default: all)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if not only <= set(SECTIONS):
        parser.error(f"--only: unknown section(s) {sorted(only - set(SECTIONS))}; known: {', '.join(SECTIONS)}")
    report = {"machine": {"cpu_count": __import__("os").cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()}}
    if "face" in only:
        report["face_analyze_512"] = bench_face(args.calls)
    if "render" in only:
        from tests.bench.render import bench_render

        report["render_plus_backward"] = bench_render()
    if "guidance" in only:
        from tests.bench.guidance import bench_guidance

        report["guidance_distill"] = bench_guidance()
    if "orchestrator" in only:
        from tests.bench.orchestrator import bench_orchestrator

        report["orchestrator"] = bench_orchestrator()
    if "inversion" in only:
        from tests.bench.inversion import bench_inversion

        report["inversion"] = bench_inversion()
    if "closed_loop" in only:   # the oracle prior's closed loop (a test of the pipeline, not a result)
        from orchestrator.closed_loop import KINDS, run_on_ray

        with tempfile.TemporaryDirectory() as tmp:
            report["closed_loop_oracle"] = run_on_ray(KINDS, Path(tmp))
    if "portrait3d_text" in only:   # random weights: the architectures' cost, not a result
        import torch

        from tests.bench.portrait3d_text import bench_portrait3d_text

        cuda = torch.cuda.is_available()
        report["portrait3d_text"] = bench_portrait3d_text(size="full" if cuda else "tiny",
                                                          k_subjects=(1, 2, 4) if cuda else (1, 2))
    if "portrait3d_id" in only:   # random weights: the architectures' cost, not a result
        import torch

        from tests.bench.portrait3d_id import bench_portrait3d_id

        report["portrait3d_id"] = bench_portrait3d_id(size="full" if torch.cuda.is_available() else "tiny")
    if "id_to_3d" in only:   # random weights: the architecture's cost, not a result
        import torch

        from tests.bench.id_to_3d import bench_id_to_3d

        report["id_to_3d"] = bench_id_to_3d(size="full" if torch.cuda.is_available() else "tiny")
    text = json.dumps(report, indent=1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
