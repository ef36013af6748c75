#!/usr/bin/env bash
# A stand-in for a public base image, made from Debian's packages with debootstrap, for machines that
# reach Debian's archive but no image registry (Docker Hub, ghcr.io). `make standin-images` runs it.
#
#   docker/standin-image.sh python NAME   Debian bookworm's Python 3.11 with pip, as python:3.11-slim has it
#   docker/standin-image.sh redis NAME    Debian bookworm's Redis 7, run as the official redis:7 image runs it
#
# Needs root (debootstrap) and a Docker engine. Only Debian's own ca-certificates go in: a CA bundle
# for a TLS-inspecting proxy is given to builds (make image CA_BUNDLE=...), never baked into a base.
set -euo pipefail

kind=${1:?usage: $0 python|redis NAME}
name=${2:?usage: $0 python|redis NAME}
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
docker=${DOCKER:-docker}
work=$(cd "$(dirname "$0")/.." && pwd)/build/standin
root="$work/$kind-rootfs"
debs="$work/debs"   # debootstrap's download cache: a second run downloads nothing

case "$kind" in
    python) packages=python3,python3-pip,python3-venv,python-is-python3,ca-certificates ;;
    redis) packages=redis-server,ca-certificates ;;
    *) echo "unknown stand-in '$kind' (python or redis)" >&2; exit 2 ;;
esac

mkdir -p "$debs"
rm -rf "$root"
debootstrap --variant=minbase --include="$packages" --cache-dir="$debs" "$suite" "$root" "$mirror" >&2

changes=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'ENV LANG=C.UTF-8')
case "$kind" in
    python)
        # python:3.11-slim's pip installs anywhere; Debian's refuses outside a virtualenv (PEP 668).
        rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
        changes+=(--change 'CMD ["python3"]')
        ;;
    redis)
        # As the official image: data in /data (owned by the server's user), protected mode off (its
        # build patches the default: other containers of the compose network must reach it).
        mkdir -p "$root/data"
        chroot "$root" chown redis:redis /data
        cat > "$root/usr/local/bin/docker-entrypoint.sh" <<'SCRIPT'
#!/bin/sh
if [ "${1:-}" = redis-server ]; then shift; exec redis-server --protected-mode no "$@"; fi
exec "$@"
SCRIPT
        chmod 755 "$root/usr/local/bin/docker-entrypoint.sh"
        changes+=(--change 'WORKDIR /data' --change 'USER redis' --change 'EXPOSE 6379'
                  --change 'ENTRYPOINT ["docker-entrypoint.sh"]' --change 'CMD ["redis-server"]')
        ;;
esac
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | "$docker" import "${changes[@]}" --message "stand-in for $name: Debian $suite packages" - "$name"
rm -rf "$root"
