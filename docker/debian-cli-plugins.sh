#!/usr/bin/env bash
# Docker's buildx and compose v2 CLI plugins on Debian bookworm, from Debian's own archive: bookworm
# packages Docker 20.10 and docker-compose 1.29 but neither plugin, and a newer `docker` client (28.x)
# refuses to build without buildx. Debian trixie's builds of both (Go, libc 2.34+) run on bookworm; they
# are unpacked as CLI plugins (/usr/local/lib/docker/cli-plugins), leaving bookworm's packages alone.
# `make test` runs it where `docker buildx` or `docker compose` is missing. Needs root.
set -euo pipefail

suite=${DEBIAN_PLUGINS_SUITE:-trixie}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
arch=$(dpkg --print-architecture)
plugins=/usr/local/lib/docker/cli-plugins
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

curl -fsS "$mirror/dists/$suite/main/binary-$arch/Packages.xz" | xz -dc > "$work/Packages"
mkdir -p "$plugins"
for package in docker-buildx docker-compose; do
    # The package's file in the pool, read from the suite's index (its version changes with updates).
    file=$(awk -v p="$package" '$1 == "Package:" { found = ($2 == p) } found && $1 == "Filename:" { print $2; exit }' \
        "$work/Packages")
    [ -n "$file" ] || { echo "no $package in Debian $suite" >&2; exit 1; }
    curl -fsS -o "$work/$package.deb" "$mirror/$file"
    dpkg-deb -x "$work/$package.deb" "$work/$package"
    install -m 755 "$work/$package/usr/libexec/docker/cli-plugins/$package" "$plugins/$package"
    echo "installed $plugins/$package from $file"
done
