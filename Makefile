# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
PYTHON := $(abspath $(VENV))/bin/python
K8S ?= local
PYTEST_ARGS ?=

.PHONY: venv test demo clean
venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -r requirements.txt
	touch $@

test: venv
	$(PYTHON) -m pytest $(PYTEST_ARGS)

demo: venv
	$(PYTHON) -m localcluster demo --k8s $(K8S)

# Targets of other concerns (cluster, images, benchmarks, soak) live in mk/*.mk.
-include mk/*.mk

clean:
	rm -rf $(VENV) run .pytest_cache .hypothesis
