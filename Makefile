# roo-bench: `make demo` and `make test` do all setup on a fresh machine (see README).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= demo-out

.PHONY: setup demo test test-browser lint bench bench-compare report clean

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

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-browser: $(STAMP)
	$(PY) -m pytest -q -m browser tests/test_reports_browser.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
