#!/usr/bin/env bash
# Benchmark for weight matching: two Llama-shaped BF16 checkpoints (8 layers,
# hidden 1024, intermediate 2816, 16 heads, 4 kv heads), the same number of
# coordinate-descent sweeps in wtool (bench/wm) and in numpy+scipy
# (bench/wm_numpy.py), in the same run.
#
#   bench/wm.sh [SWEEPS]     (default 3)
set -euo pipefail
sweeps=${1:-3}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wtool-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for s in 1 2; do
  go run ./bench/mkckpt -o "$tmp/m$s" -llama -layers 8 -hidden 1024 -inter 2816 -heads 16 -kv-heads 4 -vocab 1024 -dtype bf16 -seed $s >/dev/null
done
go build -o "$tmp/wm" ./bench/wm
read -r gt gs gb ga < <("$tmp/wm" -sweeps "$sweeps" "$tmp/m1" "$tmp/m2")
read -r nt ns nb na < <(OPENBLAS_NUM_THREADS=2 /usr/bin/python3 bench/wm_numpy.py "$tmp/m1" "$tmp/m2" "$sweeps")
printf 'wtool:       %.2f s for %d sweeps, distance %s -> %s\n' "$gt" "$gs" "$gb" "$ga"
printf 'numpy+scipy: %.2f s for %d sweeps, distance %s -> %s\n' "$nt" "$ns" "$nb" "$na"
printf 'ratio wtool/numpy: %.2f\n' "$(echo "$gt / $nt" | bc -l)"
