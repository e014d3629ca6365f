#!/usr/bin/env bash
# Start a private Docker daemon for local image builds and container tests.
#
#   eval "$(tools/docker-up.sh)"   # start it if needed, then export DOCKER_HOST
#   tools/docker-up.sh --down      # stop the dockerd this script started
#
# Idempotent: if `docker info` already works (through $DOCKER_HOST, the default
# socket, or the socket below) nothing is started. Needs root (apt-get, dockerd).
# Progress goes to stderr; stdout is only the `export DOCKER_HOST=...` line.
#
# Fixed paths (all under one directory so that they never clash with a system
# dockerd, which uses /var/lib/docker, /var/run/docker.{sock,pid}):
#   /var/lib/multimodal-docker/data         --data-root (images, layers, containers)
#   /var/lib/multimodal-docker/exec         --exec-root (runtime state, containerd)
#   /var/lib/multimodal-docker/docker.sock  API socket -> DOCKER_HOST
#   /var/lib/multimodal-docker/dockerd.pid  PID of the daemon (used by --down)
#   /var/lib/multimodal-docker/exec/docker.pid  dockerd's own --pidfile
#   /var/lib/multimodal-docker/dockerd.log  daemon log
set -euo pipefail

BASE=/var/lib/multimodal-docker
SOCK="$BASE/docker.sock"
PIDFILE="$BASE/dockerd.pid"
LOG="$BASE/dockerd.log"
HOST="unix://$SOCK"
WAIT_S=60
# dockerd and iptables live in /usr/sbin, which a CI shell may not have on PATH.
export PATH="$PATH:/usr/sbin:/sbin"

log() { echo "docker-up: $*" >&2; }

# PID of our dockerd if it is alive (checks the name so a reused PID is not hit).
our_pid() {
  local pid
  [[ -s "$PIDFILE" ]] || return 1
  pid=$(<"$PIDFILE")
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 1
  grep -q '^State:.*zombie' "/proc/$pid/status" && return 1  # exited, not yet reaped
  echo "$pid"
}

if [[ "${1:-}" == --down ]]; then
  if pid=$(our_pid); then
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    # dockerd stops its containers first; give it time, then force.
    for _ in $(seq 30); do [[ -d "/proc/$pid" ]] || break; sleep 1; done
    if [[ -d "/proc/$pid" ]]; then log "still running, sending SIGKILL"; kill -KILL "$pid"; fi
  else
    log "no dockerd started by this script is running"
  fi
  rm -f "$PIDFILE"
  exit 0
elif [[ -n "${1:-}" ]]; then
  echo "usage: $0 [--down]" >&2
  exit 2
fi

# 1. Something already answers: the caller's DOCKER_HOST / default socket, or ours.
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  log "docker already works"
  echo "export DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}"
  exit 0
fi
if command -v docker >/dev/null && DOCKER_HOST="$HOST" docker info >/dev/null 2>&1; then
  log "dockerd already running on $SOCK"
  echo "export DOCKER_HOST=$HOST"
  exit 0
fi

# 2. Install what is missing (debootstrap is for tools/base-image.sh).
missing=()
for pkg in docker.io debootstrap iptables; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >&2
fi

# 3. Start dockerd detached (setsid: survives this shell and CI step; no stdin).
if pid=$(our_pid); then
  log "dockerd (pid $pid) is running but not answering yet; waiting"
else
  mkdir -p "$BASE/data" "$BASE/exec"
  rm -f "$SOCK"
  log "starting dockerd, log in $LOG"
  # --pidfile: the default /var/run/docker.pid would clash with a system dockerd;
  # it is not $PIDFILE, as dockerd refuses to start if that names a live process.
  # In a script (no job control) setsid execs in place, so $! is dockerd itself.
  setsid dockerd --storage-driver=overlay2 --data-root="$BASE/data" \
    --exec-root="$BASE/exec" --pidfile="$BASE/exec/docker.pid" -H "$HOST" \
    </dev/null >>"$LOG" 2>&1 &
  echo $! >"$PIDFILE"  # written at once so --down works even if startup hangs
fi

# 4. Wait (bounded) until the API answers; fail loudly with the log tail.
for _ in $(seq "$WAIT_S"); do
  if DOCKER_HOST="$HOST" docker info >/dev/null 2>&1; then
    log "ready"
    echo "export DOCKER_HOST=$HOST"
    exit 0
  fi
  our_pid >/dev/null || break  # died: no point waiting
  sleep 1
done
log "dockerd did not become ready within ${WAIT_S}s; last log lines:"
tail -n 20 "$LOG" >&2 || true
exit 1
