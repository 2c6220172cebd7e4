# prism-eval: set-up, run, test, lint, bench.
# `make run` and `make test` create .venv on first use and install everything they need.

# Prefer the distribution's interpreter: it lives under /usr, readable by the unprivileged uid
# workers drop to (an interpreter under a mode-700 home is not, and the uid drop is skipped).
PYTHON ?= $(shell test -x /usr/bin/python3.11 && echo /usr/bin/python3.11 || echo python3.11)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
GPT2_STAMP := $(VENV)/share/prism-eval/tokenizers/gpt2.tiktoken
# A CPU build of torch: on these machines the wheel is on disk; a bare `torch` would pull CUDA.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

$(GPT2_STAMP): scripts/stage_gpt2.py | $(STAMP)
	$(BIN)/python scripts/stage_gpt2.py --prefix $(VENV)

install: $(STAMP) $(GPT2_STAMP)

run: install
	$(BIN)/prism-eval run examples/bundles/ok_tiny_transformer

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff format --check prism_eval tests scripts examples bench
	$(BIN)/ruff check prism_eval tests scripts examples bench
	$(BIN)/mypy

bench:  # stdout is the JSON report alone: any set-up it needs first reports on stderr
	@$(MAKE) --no-print-directory install >&2
	@$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# The OCI image (Containerfile; deploy/README.md). `image` needs podman or docker (and, for the
# default local base, debootstrap and root); `test-image` installs podman, buildah, debootstrap,
# runc and catatonit, builds, evaluates the example inside with the recommended run line and
# outside, and requires equal reproducible record cores; then plays deploy/k8s/job.yaml's pod
# for two bundles with `podman kube play` and ranks their verified records.
.PHONY: image test-image

image: install
	bash scripts/build_image.sh

test-image: install
	bash scripts/test_image.sh
