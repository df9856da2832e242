# Reliability: the long runs of tests/reliability (>= 10,000 fuzzed payloads per parser, 500
# soak tasks with faults on). Figures land in tests/reliability/soak-results.json; see
# tests/RELIABILITY.md. The short versions run inside `make test`.
.PHONY: soak
soak: venv
	V6_RELIABILITY=soak $(PYTHON) -m pytest tests/reliability -q \
		-o timeout=3600 $(PYTEST_ARGS)
