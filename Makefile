# HeadForge: `make demo` and `make test` are the two commands a new machine needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
VIEWER := orchestrator/viewer
VIEWER_STAMP := $(VIEWER)/node_modules/.installed

.PHONY: install demo test fuzz soak bench protos check-protos clean triton-env

$(STAMP): pyproject.toml requirements.lock requirements-nodeps.lock
	$(PYTHON) -m venv $(VENV)
	# torch first, exactly this version: it is the CPU build; anything looser pulls CUDA wheels.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -r requirements.lock
	$(PIP) install --quiet --no-deps -r requirements-nodeps.lock
	$(PIP) install --quiet --no-deps -e .
	touch $(STAMP)

# `headforge view`'s front-end packages (three.js, gaussian-splats-3d; playwright-core for its headless
# test), exactly as package-lock.json pins them; without npm the viewer and its tests are left out.
$(VIEWER_STAMP): $(VIEWER)/package.json $(VIEWER)/package-lock.json
	@if command -v npm >/dev/null; then \
		cd $(VIEWER) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: \`headforge view\` and its tests need Node.js and npm (Debian: apt-get install npm)"; fi

install: $(STAMP) $(VIEWER_STAMP)

# Regenerate the Python stubs from protos/ (they are committed; tests fail when they are stale).
protos: $(STAMP)
	$(PY) -m services.common.protogen

# `headforge demo` = `headforge generate` on scikit-image's astronaut: out/demo/asset.glb, turntable.gif, report.json
demo: $(STAMP)
	$(VENV)/bin/headforge demo --out out/demo

# With a Triton environment (make triton-env) the real-tritonserver tests run too; without, they skip.
test: $(STAMP) $(VIEWER_STAMP)
	$(if $(wildcard .triton-venv/bin/python),HEADFORGE_TRITON_VENV=$(CURDIR)/.triton-venv) $(PY) -m pytest -q tests

# The gRPC fuzzers at full size: FUZZ_EXAMPLES generated requests per service (render, guidance, jobs, face,
# inversion, and raw non-protobuf bodies to every method of face/render/guidance/jobs); `make test` runs a
# fixed-seed share.
# Figures (requests, statuses, server RSS before/after) in out/fuzz/<service>.json.
FUZZ_EXAMPLES ?= 10000
fuzz: $(STAMP)
	HEADFORGE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) HEADFORGE_FUZZ_REPORT_DIR=$(CURDIR)/out/fuzz $(PY) -m pytest -q -s \
		tests/fuzz/test_fuzz_render_server.py tests/fuzz/test_fuzz_guidance_server.py \
		tests/fuzz/test_fuzz_jobs_server.py tests/fuzz/test_fuzz_face_server.py tests/inversion/test_fuzz.py \
		tests/fuzz/test_fuzz_raw_bodies.py

# A `cluster up` soak: 16 concurrent analytic_prior jobs for SOAK_MINUTES, RSS slopes, orphans (out/soak.json).
SOAK_MINUTES ?= 10
soak: $(STAMP)
	$(PY) -m tests.soak.run --out out/soak.json --minutes $(SOAK_MINUTES)

# A separate environment holding NVIDIA's tritonserver (inside nvidia-pytriton; it pins numpy<2 and
# protobuf<7, so it cannot share .venv) with torch and diffusers for its python-backend UNet model.
triton-env:
	$(PYTHON) -m venv .triton-venv
	.triton-venv/bin/pip install --quiet torch==2.13.0
	.triton-venv/bin/pip install --quiet nvidia-pytriton==0.7.0 diffusers==0.42.1 safetensors torch==2.13.0

bench: $(STAMP)
	$(PY) -m tests.bench.run --out out/bench.json

clean:
	rm -rf $(VENV) .triton-venv out .pytest_cache $(VIEWER)/node_modules
