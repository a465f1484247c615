# trtqat developer targets. `make install && make demo` on a fresh machine, then `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
TORCH_VERSION ?= 2.13.0

.PHONY: install demo test test-all test-gpu bench bench-cuda lint clean fixtures

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

test-gpu:  # CUDA paths (needs a GPU; CI has none)
	$(PYTHON) -m pytest -q -m gpu tests/gpu

fixtures:  # retrain the committed trained detectors (trtqat/demo/trained/): YOLOv5 ~45 min, YOLOv7 ~1 h, in parallel on 2 CPU cores
	$(PYTHON) -m trtqat.demo.train_fixtures --all --build build

bench:
	$(PYTHON) -m benchmarks.run

bench-cuda:  # needs a GPU: benchmarks/results/cuda.json (thin fixtures) and cuda_width1.json (real widths)
	$(PYTHON) -m benchmarks.cuda_bench
	$(PYTHON) -m benchmarks.cuda_bench --width 1.0 --name cuda_width1 --only calib_throughput ptq qat_step

lint:
	$(PYTHON) -m ruff check trtqat tests benchmarks

clean:
	rm -rf build dist *.egg-info .pytest_cache
