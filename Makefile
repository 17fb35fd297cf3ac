# HeadForge: `make demo` and `make test` are the two commands a new machine needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install demo test bench protos check-protos clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	# torch first, exactly this version: it is the CPU build; anything looser pulls CUDA wheels.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -r requirements.lock
	$(PIP) install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Regenerate the Python stubs from protos/ (they are committed; tests fail when they are stale).
protos: $(STAMP)
	$(PY) -m services.common.protogen

# `headforge demo` = `headforge generate` on scikit-image's astronaut: out/demo/asset.glb, turntable.gif, report.json
demo: $(STAMP)
	$(VENV)/bin/headforge demo --out out/demo

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m tests.bench.run --out out/bench.json

clean:
	rm -rf $(VENV) out .pytest_cache
