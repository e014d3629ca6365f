#!/usr/bin/env bash
# Build the local Debian bookworm base image that our Dockerfiles start FROM.
#
#   tools/base-image.sh [NAME]      # NAME defaults to multimodal-base:bookworm
#
# Why not `FROM debian:bookworm`? Only PyPI, Debian and npm are reachable from
# these machines (no Docker Hub), so the base is built from Debian packages with
# debootstrap and loaded with `docker import`. Idempotent: exits at once if NAME
# already exists. Needs root; starts the private dockerd (tools/docker-up.sh) if
# docker does not answer yet.
#
# What is in the image: Debian bookworm minbase + python3 (3.11), python3-venv
# (ensurepip, so `python3 -m venv /opt/venv` gives a working pip), ca-certificates.
#
# How a `docker build` reaches PyPI here: RUN steps use the default bridge
# network; DNS is the host's resolver, copied into the build container. HTTPS
# goes through a transparent egress proxy that re-signs certificates with its
# own CA, which the host trusts via /usr/local/share/ca-certificates/*.crt
# (merged into /etc/ssl/certs/ca-certificates.crt; the host's pip.conf points
# `cert` at that bundle). A container without that CA fails with
# CERTIFICATE_VERIFY_FAILED, so this script copies the host's extra CAs into the
# image (same directory, then update-ca-certificates). It also sets PIP_CERT,
# REQUESTS_CA_BUNDLE and SSL_CERT_FILE to the merged bundle: Debian's venv pip
# (23.0.1) reads that bundle anyway, but a pip upgraded from PyPI (26.x) inside
# the venv failed verification without them. The host's other pip settings
# (extra-index-url file:///opt/pypi/simple, find-links /opt/wheels) are
# host-only paths and are deliberately NOT copied.
# The image is therefore for local builds/tests on this kind of machine only:
# do not push it, and keep the product image's own settings free of this CA.
set -euo pipefail

NAME="${1:-multimodal-base:bookworm}"
MIRROR=http://deb.debian.org/debian
PACKAGES=python3,python3-venv,ca-certificates
BUNDLE=/etc/ssl/certs/ca-certificates.crt
export PATH="$PATH:/usr/sbin:/sbin"  # debootstrap, chroot

log() { echo "base-image: $*" >&2; }

# Docker must answer (start the private daemon if needed).
if ! docker info >/dev/null 2>&1; then
  up=$("$(dirname "$0")/docker-up.sh")  # separate step so set -e sees a failure
  eval "$up"
fi
if docker image inspect "$NAME" >/dev/null 2>&1; then
  log "$NAME already exists, nothing to do"
  exit 0
fi
command -v debootstrap >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap </dev/null
}

# Scratch root filesystem. debootstrap mounts /proc, /sys, /dev pieces inside it
# and may leave them mounted on failure: unmount before deleting, and never let
# rm cross into a mount.
ROOTFS=$(mktemp -d /var/tmp/multimodal-rootfs.XXXXXX)
cleanup() {
  findmnt -rn -o TARGET | grep -F "$ROOTFS/" | sort -r | xargs -r umount -l || true
  rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT

SECONDS=0
log "debootstrap bookworm into $ROOTFS"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOTFS" "$MIRROR" \
  </dev/null >"$ROOTFS.log" 2>&1 || { tail -n 20 "$ROOTFS.log" >&2; exit 1; }
rm -f "$ROOTFS.log"
log "debootstrap took ${SECONDS}s"

# Trust the same extra CAs as the host (see the header).
shopt -s nullglob
extra=(/usr/local/share/ca-certificates/*.crt)
if ((${#extra[@]})); then
  cp "${extra[@]}" "$ROOTFS/usr/local/share/ca-certificates/"
  chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1  # (quiet: harmless rehash warning)
  log "added ${#extra[@]} host CA(s): ${extra[*]##*/}"
fi

# Security and point updates for later `apt-get install` in derived Dockerfiles;
# drop package lists and caches so the image stays small.
cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
  "$ROOTFS"/var/cache/apt/archives/*.deb
: >"$ROOTFS/etc/hostname"  # docker provides hostname and resolv.conf at run time
: >"$ROOTFS/etc/resolv.conf"

SECONDS=0
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change "ENV PIP_CERT=$BUNDLE REQUESTS_CA_BUNDLE=$BUNDLE SSL_CERT_FILE=$BUNDLE" \
  --change 'CMD ["/bin/bash"]' \
  - "$NAME" >/dev/null
log "imported $NAME in ${SECONDS}s ($(docker image inspect -f '{{.Size}}' "$NAME") bytes)"
