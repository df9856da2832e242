# Container images of the project, built with the local Docker engine.
#   make docker-start   start dockerd by hand when it is not running (CI; needs root)
#   make base-image     the Dockerfiles' base image (python:3.11-slim): pulled, or made locally
#                       with debootstrap when it cannot be pulled (no registry); kept when present
#   make images-build   every project image: v6-demo/{node,server,proxy} and one per
#                       algorithms/*/Dockerfile (localcluster/docker/build-images.sh)
#   make docker-images  the same (alias, also images-docker); `make images` (mk/k8s.mk) also
#                       imports them into k3d
# Extra CA certificates for pip in the builds: EXTRA_CA_FILES (default: this machine's local CAs,
# /usr/local/share/ca-certificates/*.crt), passed as a build argument, never kept in an image.
DOCKER ?= docker
IMAGE_TAG ?= latest
BASE_IMAGE ?= python:3.11-slim
DOCKER_SCRIPTS := localcluster/docker

.PHONY: docker-start base-image images-build docker-images images-docker

docker-start:
	$(DOCKER_SCRIPTS)/start-dockerd.sh

base-image:
	DOCKER=$(DOCKER) $(DOCKER_SCRIPTS)/base-image.sh $(BASE_IMAGE)

images-build: base-image
	DOCKER=$(DOCKER) IMAGE_TAG=$(IMAGE_TAG) $(DOCKER_SCRIPTS)/build-images.sh

docker-images images-docker: images-build
