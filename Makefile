# roo-bench: `make demo` and `make test` do all setup on a fresh machine (see README).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= demo-out

.PHONY: setup demo test test-fast test-browser bench-check lint typecheck bench bench-compare clean

setup: $(STAMP)

# The venv sees system site-packages, so a torch the user already has (e.g. a CUDA build) is kept;
# only where none is importable do we install the pinned CPU wheel (an unpinned `torch` would pull
# a multi-GB CUDA build). fbgemm-gpu-cpu 1.8.0 loads only beside torch 2.13.0, so it is added there.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@if $(PY) -c "import torch,sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)"; then \
	  $(PY) -m pip install -q 'fbgemm-gpu-cpu==1.8.0' || echo "fbgemm-gpu-cpu not installed: pure-torch jagged ops only"; fi
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/roo-bench demo --out $(OUT)

# Everything: lint, format, types, then the whole suite (subprocess and slow tests included).
test: lint typecheck
	$(PY) -m pytest -q

# The inner loop: the same checks, without the subprocess/slow tests (tests marked `slow`).
test-fast: lint typecheck
	$(PY) -m pytest -q -m "not slow and not browser"

test-browser: $(STAMP)
	ROO_BENCH_UPDATE_SCREENSHOT=1 $(PY) -m pytest -q -m browser tests/test_reports_browser.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The data layer (records included) and the cost package are type-checked (settings: pyproject).
typecheck: $(STAMP)
	$(PY) -m mypy

# asv 0.6.6 on the existing .venv (docs/benchmarks.md). Results/site under .asv/ (git-ignored).
ASV         := $(VENV)/bin/asv
ASV_MACHINE ?= $(shell hostname -s 2>/dev/null || hostname)
ASV_ARGS    ?=

# ASV_PYTHONPATH: asv drops PYTHONPATH but puts this first on the benchmark processes' sys.path, so
# this checkout's code is measured. The site is published even when a benchmark failed; the exit
# status is asv run's (2 on a failed benchmark).
bench: $(STAMP)
	@grep -qs '"$(ASV_MACHINE)"' "$$HOME/.asv-machine.json" || $(ASV) machine --machine $(ASV_MACHINE) --yes >/dev/null
	@git diff --quiet HEAD -- . ':!.asv' 2>/dev/null || echo "bench: uncommitted changes are measured under HEAD's hash"
	ASV_PYTHONPATH=$(CURDIR) $(ASV) run --python=same --machine $(ASV_MACHINE) \
	  --set-commit-hash=$$(git rev-parse HEAD) $(ASV_ARGS); st=$$?; \
	  $(ASV) publish && echo "site: .asv/html/index.html ($(ASV) preview serves it)"; exit $$st

# `asv continuous` does not work with an existing environment: both commits in git worktrees,
# measured by this checkout's suite, then asv compare.
bench-compare: $(STAMP)
	@test -n "$(A)" && test -n "$(B)" || { echo "usage: make bench-compare A=<commit> B=<commit>" >&2; exit 2; }
	ASV=$(abspath $(ASV)) ASV_MACHINE=$(ASV_MACHINE) bash benchmarks/seed_history.sh --no-publish $(A) $(B)
	$(ASV) compare --machine $(ASV_MACHINE) $$(git rev-parse $(A)) $$(git rev-parse $(B))

# CI gate for the asv suite: `asv check` + a --quick run that fails on any benchmark that raised.
bench-check: $(STAMP)
	ASV=$(ASV) PYTHON=$(PY) bash benchmarks/ci_check.sh

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
