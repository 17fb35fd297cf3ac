#!/usr/bin/env bash
# Download the wheels of tests/gpu/requirements.txt for the lent GPU machine (x86-64, CPython 3.12,
# no network there) into .whl/ at the repository root (git-ignored). Run here, then carry `.whl` in the
# device call that runs tests/gpu/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
platforms=()
for tag in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
           manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
grep -v '^#' tests/gpu/requirements.txt | grep . | while read -r req; do
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$req"
done
du -sh .whl
