#!/bin/sh
# Make the Dockerfiles' base image (python:3.11-slim) locally when it is absent and cannot be pulled:
# a Debian bookworm root (its python3 is 3.11) made by debootstrap, shaped like the official image
# where our Dockerfiles rely on it (`python`/`pip` on PATH, `useradd`, a CA bundle), then imported.
# Idempotent: does nothing when the tag exists or can be pulled. Needs root, debootstrap and docker.
#   usage: base-image.sh [TAG]          (default python:3.11-slim)
# The Debian mirror comes from this machine's apt sources, or DEBIAN_MIRROR=URL.
set -eu
TAG=${1:-python:3.11-slim}
DOCKER=${DOCKER:-docker}
SUITE=${DEBIAN_SUITE:-bookworm}

if $DOCKER image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG: present"; exit 0
fi
if $DOCKER pull "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG: pulled"; exit 0
fi

# The first Debian archive URI this machine's apt uses (deb822 .sources, then one-line .list).
mirror() {
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # deb822 stanzas: the URIs of the stanza whose Suites has the plain suite (not -security).
        awk -v suite="$SUITE" '
            /^[[:space:]]*$/ { if (uri != "" && ok) { print uri; exit } uri = ""; ok = 0; next }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
            END { if (uri != "" && ok) print uri }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v suite="$SUITE" '$1 == "deb" && $0 !~ /^#/ {
            for (i = 2; i <= NF; i++) if ($i == suite) { u = $(i - 1); if (u !~ /^\[/) { print u; exit } } }' "$f"
    done
}
MIRROR=${DEBIAN_MIRROR:-$(mirror | head -n 1)}
if [ -z "$MIRROR" ]; then
    echo "base-image.sh: no Debian $SUITE mirror in /etc/apt/sources*; set DEBIAN_MIRROR=URL" >&2
    exit 1
fi

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/v6-base-image.XXXXXX")
# A failed debootstrap can leave proc/sys mounted in the root: unmount before removing it.
cleanup() {
    for m in dev/pts proc sys; do umount "$ROOT/$m" 2>/dev/null || true; done
    rm -rf "$ROOT"
}
trap cleanup EXIT INT TERM
echo "base image $TAG: debootstrap $SUITE from $MIRROR (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || {
    echo "base-image.sh: debootstrap failed, last lines of its log:" >&2; tail -n 20 "$ROOT.log" >&2
    rm -f "$ROOT.log"; exit 1; }
rm -f "$ROOT.log"

# python:3.11-slim has python/pip in /usr/local/bin and lets pip install system-wide; a venv at
# /usr/local gives the same (Debian's own python3 refuses pip installs: PEP 668). pip comes from
# Debian's bundled wheels, so nothing is downloaded here.
chroot "$ROOT" python3 -m venv /usr/local
chroot "$ROOT" /usr/local/bin/python -m pip --version >/dev/null
rm -f "$ROOT"/usr/local/bin/activate*
# Trim what an image does not need: package caches and lists, docs, man pages.
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
       "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/*

tar -C "$ROOT" --numeric-owner -c . | $DOCKER import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap $SUITE minbase + python3 venv at /usr/local (localcluster/docker/base-image.sh)" \
    - "$TAG" >/dev/null
echo "base image $TAG: built"
