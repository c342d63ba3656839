#!/usr/bin/env bash
# Runs Hooker's whole benchmark harness: dist build (fat LTO, as the image), router micro-benchmark, resource
# figures and end-to-end load over every intake. Writes bench/results/latest.md (copy the
# figures into BENCHMARKS.md). BENCH_SECONDS sets each load run's length (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --profile dist -p hooker -p hooker-bench
exec python3 bench/run.py "$@"
