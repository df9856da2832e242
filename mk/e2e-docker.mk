# `make e2e-docker`: the end-to-end scenarios (tests/e2e) against kubeconfs/ applied with kubectl
# to the local cluster in docker mode (DockerTarget in tests/e2e/targets.py): server, proxy, node
# and algorithms run as containers of the project's images, isolated by Docker networks made from
# the NetworkPolicies. Needs root, a running Docker engine (make docker-start), kubectl and the
# images (make images-build, mk/images.mk); without them the scenarios are skipped with the reason
# (-rs prints it). `make test` runs them too.
.PHONY: e2e-docker
e2e-docker: venv
	$(PYTHON) -m pytest tests/e2e/test_scenarios.py -v -rs -k docker $(PYTEST_ARGS)
