#!/bin/sh
# Builds the runtime image from a locally built binary with `docker import` (no registry and no
# base image needed): the same file system as the Dockerfile's final stage.
#
#   sh daemonset/build-image.sh [BINARY] [TAG]      # defaults: target/dist/hooker hooker:latest
#
# Build the binary first with `cargo build --profile dist -p hooker`. Run as root (the image's
# files are owned by the agent's user, 10001).
set -eu
cd "$(dirname "$0")/.."

bin=${1:-target/dist/hooker}
tag=${2:-hooker:latest}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sh daemonset/rootfs.sh "$bin" "$work/rootfs"
tar --numeric-owner -C "$work/rootfs" -cf - . |
  docker import \
    --change 'USER 10001:10001' \
    --change 'WORKDIR /var/lib/hooker' \
    --change 'ENV PATH=/usr/local/bin:/bin' \
    --change 'EXPOSE 8081 8082 8445' \
    --change 'ENTRYPOINT ["/usr/local/bin/hooker"]' \
    --change 'CMD ["run"]' \
    - "$tag" >/dev/null
echo "$tag"
