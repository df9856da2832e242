# Benchmarks of the node and the proxy on the local cluster (benchmarks/README.md).
# `make bench` writes benchmarks/results.{json,md,png}; BENCH_ARGS=--quick for a short run.
BENCH_ARGS ?=

.PHONY: bench
bench: venv $(VENV)/.bench-installed
	$(PYTHON) -m benchmarks $(BENCH_ARGS)

$(VENV)/.bench-installed: benchmarks/requirements.txt $(VENV)/.installed
	$(PYTHON) -m pip install -q -r benchmarks/requirements.txt
	touch $@
