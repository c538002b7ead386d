#!/usr/bin/env bash
# Benchmark for weight matching, the same number of coordinate-descent sweeps
# in wtool (bench/wm) and in numpy+scipy (bench/wm_numpy.py), in the same run:
#   llama: two Llama-shaped BF16 checkpoints (8 layers, hidden 1024,
#          intermediate 2816, 16 heads, 4 kv heads);
#   mlp:   two MLPs with 4 hidden layers of width 2048 (F32).
#
#   bench/wm.sh [SWEEPS] [llama|mlp]     (default 3 llama)
set -euo pipefail
sweeps=${1:-3}
kind=${2:-llama}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wtool-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for s in 1 2; do
  if [ "$kind" = mlp ]; then
    mkdir -p "$tmp/m$s"
    go run ./bench/mkckpt -o "$tmp/m$s/model.safetensors" -n 5 -rows 2048 -cols 2048 -dtype f32 -seed $s >/dev/null
  else
    go run ./bench/mkckpt -o "$tmp/m$s" -llama -layers 8 -hidden 1024 -inter 2816 -heads 16 -kv-heads 4 -vocab 1024 -dtype bf16 -seed $s >/dev/null
  fi
done
go build -o "$tmp/wm" ./bench/wm
read -r gt gs gb ga < <("$tmp/wm" -sweeps "$sweeps" "$tmp/m1" "$tmp/m2")
read -r nt ns nb na < <(OPENBLAS_NUM_THREADS=2 /usr/bin/python3 bench/wm_numpy.py "$tmp/m1" "$tmp/m2" "$sweeps")
printf 'wtool:       %.2f s for %d sweeps, distance %s -> %s\n' "$gt" "$gs" "$gb" "$ga"
printf 'numpy+scipy: %.2f s for %d sweeps, distance %s -> %s\n' "$nt" "$ns" "$nb" "$na"
printf 'ratio wtool/numpy: %.2f\n' "$(echo "$gt / $nt" | bc -l)"
