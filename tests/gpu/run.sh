#!/usr/bin/env bash
# The GPU half of issue 3 (and the GPU figures of the guidance and inversion benchmarks), in one command
# on a lent GPU machine, from the repository root, with `.whl` carried (tests/gpu/fetch_wheels.sh):
#   - pytest -m gpu tests/render (the only gpu-marked tests): gsplat vs the torch Gaussian rasteriser,
#     nvdiffrast vs the torch mesh rasteriser, DMTet at resolution 512;
#   - the render, guidance and inversion benchmarks (JSON) with CUDA present;
#   - the Portrait3D-Text recipe at full size with random weights (tests/bench/portrait3d_text.py): seconds per
#     step of inversion, SDS and refinement extrapolated to the recipe's counts, peak GPU memory, SDS throughput
#     with K = 1, 2, 4 subjects per GPU, next to the paper's wall time (portrait3d_text_gpu.json); a few
#     steps per stage, sized for well under 8 minutes on an H100 (pure torch + diffusers: nothing to compile;
#     not yet run on a device);
#   - the Portrait3D-ID recipe at full size with random weights (tests/bench/portrait3d_id.py): seconds per step
#     of geometry targets, PanoHead inversion + PTI, GAN-normal fitting and ISD sculpting on a DMTet at grid 512,
#     15-view texture inpainting and refinement, extrapolated to the recipe's counts, peak GPU memory per phase,
#     next to the paper's ~1 h on a V100 (portrait3d_id_gpu.json); 2-6 steps per phase, sized for well under
#     8 minutes on an H100 (not yet run on a device);
#   - the ID-to-3D recipe at full size with random weights (tests/bench/id_to_3d.py): seconds per step of the
#     geometry, texture_diffuse, texture_full and texture_photoreal stages (optimise on an expression DMTet at grid
#     256, SD1.5 + FaceID + expression adapter + normal / albedo LoRAs, procedural environment maps), extrapolated
#     to the recipe's counts, peak GPU memory per phase, steps/s with K = 1, 2, 4 subjects' geometry loops on one
#     GPU, next to the paper's ~30 min geometry / ~15 min texture on a V100 (id_to_3d_gpu.json); 3-5 steps per
#     phase, sized for well under 8 minutes on an H100 (not yet run on a device).
# Logs and JSON go to $OUT (the device tool's folder) or out/gpu.
# gsplat and nvdiffrast compile their CUDA code on first use (minutes): only for the GPU at hand
# (Hopper: 9.0) with every core. PART=tests, PART=bench, PART=portrait3d_text, PART=portrait3d_id or PART=id_to_3d
# runs one part (all: every part), so that each device call stays well inside its 10-minute limit; the compiled
# kernels stay in ~/.cache/torch_extensions while the machine is warm.
set -uo pipefail
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
part="${PART:-all}"
out="${OUT:-out/gpu}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH="$PWD:$PWD/protos:/tmp/site" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, gsplat, nvdiffrast.torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'gsplat', gsplat.__version__)" | tee -a "$out/gpu.txt"
status=0
case "$part" in all|tests|bench|portrait3d_text|portrait3d_id|id_to_3d) ;;
  *) echo "PART must be all, tests, bench, portrait3d_text, portrait3d_id or id_to_3d"; exit 2;; esac
if [ "$part" = all ] || [ "$part" = tests ]; then
  python3 -m pytest -q -m gpu -p no:cacheprovider tests/render 2>&1 | tee "$out/pytest_gpu.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
if [ "$part" = all ] || [ "$part" = bench ]; then
  python3 -m tests.bench.run --only "${BENCH:-render,guidance,inversion}" --out "$out/bench_gpu.json" 2>&1 \
    | tail -n 80 > "$out/bench_gpu.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  cat "$out/bench_gpu.log"
fi
if [ "$part" = all ] || [ "$part" = portrait3d_text ]; then
  python3 -m tests.bench.run --only portrait3d_text --out "$out/portrait3d_text_gpu.json" 2>&1 \
    | tail -n 200 > "$out/portrait3d_text_gpu.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  tail -n 80 "$out/portrait3d_text_gpu.log"
fi
if [ "$part" = all ] || [ "$part" = portrait3d_id ]; then
  python3 -m tests.bench.run --only portrait3d_id --out "$out/portrait3d_id_gpu.json" 2>&1 \
    | tail -n 200 > "$out/portrait3d_id_gpu.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  tail -n 80 "$out/portrait3d_id_gpu.log"
fi
if [ "$part" = all ] || [ "$part" = id_to_3d ]; then
  python3 -m tests.bench.run --only id_to_3d --out "$out/id_to_3d_gpu.json" 2>&1 \
    | tail -n 200 > "$out/id_to_3d_gpu.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  tail -n 80 "$out/id_to_3d_gpu.log"
fi
exit $status
