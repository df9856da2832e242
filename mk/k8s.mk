# Real clusters: a k3d cluster, the project's images, the deployment, the e2e suite.
# docs/K3D.md walks through them. Needs docker, k3d and kubectl on PATH.
#   make cluster          create the k3d cluster (kubeconfs/k3d/cluster.yaml)
#   make images           build the images and import them into the cluster
#   make deploy           kubectl apply -k kubeconfs/ and wait for the rollout
#   make demo K8S=k3d     all of the above (as needed), then one avg task end to end
#   make e2e              the end-to-end suite against $(E2E_KUBECONFIG) and the local stand-in
#   make cluster-delete   remove the cluster
DOCKER ?= docker
K3D ?= k3d
KUBECTL ?= kubectl
K3D_CLUSTER ?= v6
K3D_CONFIG := kubeconfs/k3d/cluster.yaml
K3D_DIR := run/k3d
# The cluster's own kubeconfig, so nothing here depends on (or changes) your current context.
K3D_KUBECONFIG := $(abspath $(K3D_DIR))/kubeconfig
# The node's task_dir and the demo database, shared from this checkout into the cluster node.
K3D_TASKS := $(abspath $(K3D_DIR))/tasks
K3D_DATA := $(abspath algorithms/avg/data)
IMAGE_TAG ?= latest
# make e2e: the cluster the suite targets (k3d's by default, or KUBECONFIG=... / E2E_KUBECONFIG=...)
E2E_KUBECONFIG ?= $(if $(filter k3d,$(K8S)),$(K3D_KUBECONFIG),$(or $(KUBECONFIG),$(K3D_KUBECONFIG)))
KUBECTL_K3D := $(KUBECTL) --kubeconfig $(K3D_KUBECONFIG)

.PHONY: cluster images deploy e2e cluster-delete k3d-up

# The node runs as uid 1000 and writes task_dir, whoever owns this checkout: world-writable, which
# is for the demo only (on shared clusters use kubeconfs/overlays/pvc).
cluster:
	mkdir -p $(K3D_TASKS)
	chmod 0777 $(K3D_TASKS)
	$(K3D) cluster list $(K3D_CLUSTER) >/dev/null 2>&1 || \
	  $(K3D) cluster create --config $(K3D_CONFIG) \
	    --volume "$(K3D_TASKS):/var/lib/v6-node/tasks@server:0" \
	    --volume "$(K3D_DATA):/var/lib/v6-node/data:ro@server:0"
	$(K3D) kubeconfig get $(K3D_CLUSTER) > $(K3D_KUBECONFIG)
	chmod 0600 $(K3D_KUBECONFIG)
	$(KUBECTL_K3D) wait --for=condition=Ready nodes --all --timeout=180s

# Building is mk/images.mk's (every image, base image made when it cannot be pulled).
images: images-build
	$(K3D) image import --cluster $(K3D_CLUSTER) \
	  $$(IMAGE_TAG=$(IMAGE_TAG) localcluster/docker/build-images.sh --list)

deploy:
	$(KUBECTL_K3D) apply -k kubeconfs/
	$(KUBECTL_K3D) -n v6-server rollout status deployment/v6-server --timeout=180s
	$(KUBECTL_K3D) -n v6-node rollout status deployment/v6-proxy --timeout=180s
	$(KUBECTL_K3D) -n v6-node rollout status deployment/v6-node --timeout=180s

# Everything `make demo K8S=k3d` needs, in order (the demo target itself is in the Makefile).
k3d-up: cluster
	$(MAKE) images
	$(MAKE) deploy

ifeq ($(K8S),k3d)
demo: k3d-up
endif

e2e: venv
	V6_E2E_KUBECONFIG=$(E2E_KUBECONFIG) $(PYTHON) -m pytest tests/e2e -v -rs $(PYTEST_ARGS)

cluster-delete:
	$(K3D) cluster delete $(K3D_CLUSTER)
	rm -f $(K3D_KUBECONFIG)
