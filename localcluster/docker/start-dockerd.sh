#!/bin/sh
# Start the Docker engine by hand when it is not running (CI machines and containers without
# systemd), then wait until it answers. Idempotent: does nothing when `docker info` works.
#   usage: start-dockerd.sh          env: DOCKER (docker), DOCKERD_LOG (/var/log/dockerd.log),
#                                         DOCKERD_TIMEOUT seconds (60)
set -eu
DOCKER=${DOCKER:-docker}
LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
TIMEOUT=${DOCKERD_TIMEOUT:-60}

if $DOCKER info >/dev/null 2>&1; then
    echo "dockerd: running"; exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    echo "start-dockerd.sh: dockerd is not installed (Debian: apt-get install docker.io)" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "start-dockerd.sh: starting dockerd needs root" >&2
    exit 1
fi
# A pid file left by a killed engine makes dockerd refuse to start.
if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
fi
# setsid + nohup: the engine outlives this script and the shell that ran it.
setsid nohup dockerd >>"$LOG" 2>&1 </dev/null &
waited=0
until $DOCKER info >/dev/null 2>&1; do
    if [ "$waited" -ge "$TIMEOUT" ]; then
        echo "start-dockerd.sh: dockerd did not answer within ${TIMEOUT}s; last lines of $LOG:" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    fi
    sleep 1
    waited=$((waited + 1))
done
echo "dockerd: started (log: $LOG)"
