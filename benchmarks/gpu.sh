#!/usr/bin/env bash
# The GPU fast path in one command (issue 12.5): full-size random-weight SD 2.1 and SVD, per-stage seconds
# per frame at 512x512 and 832x448 (L = 10), peak memory, frames/s, MFU; writes the table to docs/perf.md.
# Needs CUDA, no weights, under 5 minutes of GPU time. Extra flags go to benchmarks/bench_gpu.py
# (--compile, --no-svd, --frames N, --sizes WxH,..., --dry-run).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 290 python benchmarks/bench_gpu.py "$@"
