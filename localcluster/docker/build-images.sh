#!/bin/sh
# Build every project image from the Dockerfiles used for real clusters, from the repository root:
# v6-demo/node, v6-demo/server, v6-demo/proxy, and one image per algorithms/*/Dockerfile (named by
# the `-t v6-demo/NAME` in its header comment, else v6-demo/<directory>). Prints each image's name.
#   usage: build-images.sh [--list]   env: DOCKER, IMAGE_TAG (latest), EXTRA_CA_FILES
# --list prints the image references (name:tag, one a line) without building.
# Extra CA certificates (TLS-inspecting egress on CI machines) reach pip as the build argument
# EXTRA_CA_CERTS, PEM text: the legacy builder of docker 20.10 has no build secrets (BuildKit needs
# the buildx plugin, absent from Debian's docker.io) and its RUN steps cannot read host files.
# Dockerfiles use it in a separate build stage that installs the packages (a temporary CA bundle
# for pip); the image copies only the installed packages, so no layer holds the certificates, the
# image does not trust them, and its history does not record them (the legacy builder records a
# RUN step's build arguments in the history of the stage that ran it).
set -eu
cd "$(dirname "$0")/../.."
DOCKER=${DOCKER:-docker}
TAG=${IMAGE_TAG:-latest}
EXTRA_CA_FILES=${EXTRA_CA_FILES-$(ls /usr/local/share/ca-certificates/*.crt 2>/dev/null || true)}
EXTRA_CA=""
for f in $EXTRA_CA_FILES; do EXTRA_CA="$EXTRA_CA$(cat "$f")
"; done

list() {
    echo "v6-demo/node node/Dockerfile"
    echo "v6-demo/server dummy_server/Dockerfile"
    echo "v6-demo/proxy dummy_proxy/Dockerfile"
    for f in algorithms/*/Dockerfile; do
        [ -f "$f" ] || continue
        name=$(sed -n 's|^#.*-t \(v6-demo/[a-z0-9._-]*\).*|\1|p' "$f" | head -n 1)
        echo "${name:-v6-demo/$(basename "$(dirname "$f")")} $f"
    done
}

if [ "${1:-}" = "--list" ]; then
    list | while read -r name file; do echo "$name:$TAG"; done
    exit 0
fi

list | while read -r name file; do
    start=$(date +%s)
    set -- --network host -f "$file" -t "$name:$TAG"
    if grep -q '^ARG EXTRA_CA_CERTS' "$file"; then
        set -- "$@" --build-arg "EXTRA_CA_CERTS=$EXTRA_CA"
    fi
    if ! out=$($DOCKER build "$@" . 2>&1); then
        printf '%s\n' "$out" | tail -n 30 >&2
        echo "build-images.sh: building $name from $file failed" >&2
        exit 1
    fi
    echo "$name:$TAG ($file, $(( $(date +%s) - start ))s)"
done
