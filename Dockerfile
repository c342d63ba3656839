# Hooker's runtime image: a glibc binary with only the libraries it loads ("distroless" style;
# the musl target is not available in this project's toolchain), busybox as /bin/sh for `exec`
# actions, CA certificates, and a non-root user (10001). daemonset/rootfs.sh assembles it, and
# daemonset/build-image.sh builds the same image from a local binary without a registry.
#
#   docker build -t hooker:latest .
#
# The `docker` action needs the node's Docker socket mounted and its group (run with
# `--group-add $(getent group docker | cut -d: -f3)`), or root; see README, "Deploy as a DaemonSet".

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --profile dist --locked -p hooker --bin hooker

FROM debian:bookworm-slim AS rootfs
RUN apt-get update \
 && apt-get install -y --no-install-recommends busybox-static ca-certificates binutils \
 && rm -rf /var/lib/apt/lists/*
COPY daemonset/rootfs.sh /rootfs.sh
COPY --from=build /src/target/dist/hooker /hooker
RUN sh /rootfs.sh /hooker /rootfs

FROM scratch
COPY --from=rootfs /rootfs/ /
# As Postee's image: the built-in templates' sources and example route filters.
COPY agent/templates /usr/share/hooker/rego-templates
COPY --chown=10001:10001 examples/rego-filters /var/lib/hooker/rego-filters
USER 10001:10001
WORKDIR /var/lib/hooker
ENV PATH=/usr/local/bin:/bin
EXPOSE 8081 8082 8445
ENTRYPOINT ["/usr/local/bin/hooker"]
CMD ["run"]
