# trtqat developer targets. `make install && make demo` on a fresh machine, then `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
TORCH_VERSION ?= 2.13.0

.PHONY: install demo test test-all bench lint clean

install:
	@# An unpinned torch pulls several GB of CUDA wheels; pin the CPU build when torch is absent.
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "torch==$(TORCH_VERSION)"
	$(PIP) install -e ".[dev]"

demo:
	trtqat demo

test:
	$(PYTHON) -m pytest -q

test-all:
	$(PYTHON) -m pytest -q -m "" 

bench:
	$(PYTHON) -m benchmarks.run

lint:
	$(PYTHON) -m ruff check trtqat tests benchmarks

clean:
	rm -rf build dist *.egg-info .pytest_cache
