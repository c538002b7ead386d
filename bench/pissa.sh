#!/usr/bin/env bash
# Benchmark for `wtool adapter --method pissa --rank 64` on a synthetic
# Llama-shaped BF16 checkpoint (8 layers, hidden 2048, intermediate 5632, all
# 7 projections per layer adapted), against a numpy/sklearn implementation of
# the same initialisation (bench/pissa_numpy.py: randomized SVD with the same
# oversampling and iterations, residual rounded to bf16, outputs written) in
# the same run. Builds wtool both pure Go and with -tags openblas.
#
#   bench/pissa.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wtool-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export OPENBLAS_NUM_THREADS=2
go build -o "$tmp/wtool" ./cmd/wtool
go build -tags openblas -o "$tmp/wtool-openblas" ./cmd/wtool
go run ./bench/mkckpt -o "$tmp/llama" -llama -layers 8 -hidden 2048 -inter 5632 -heads 16 -kv-heads 4 -vocab 1024 -dtype bf16 >/dev/null
cat "$tmp"/llama/*.safetensors >/dev/null
t() { /usr/bin/time -f "%e %M" -o "$tmp/time" "$@" >/dev/null; cat "$tmp/time"; }
read -r go gm < <(t "$tmp/wtool" adapter "$tmp/llama" -o "$tmp/go" --method pissa --rank 64 --target 'proj\.weight$' -q)
read -r ob om < <(t "$tmp/wtool-openblas" adapter "$tmp/llama" -o "$tmp/ob" --method pissa --rank 64 --target 'proj\.weight$' -q)
np=$(/usr/bin/python3 bench/pissa_numpy.py "$tmp/llama" "$tmp/np" 64)
printf 'numpy+sklearn: %.2f s\n' "$np"
printf 'wtool (pure Go):  %.2f s, ratio %.2f, peak RSS %d MiB\n' "$go" "$(echo "$go / $np" | bc -l)" $((gm / 1024))
printf 'wtool (OpenBLAS): %.2f s, ratio %.2f, peak RSS %d MiB\n' "$ob" "$(echo "$ob / $np" | bc -l)" $((om / 1024))
du -sh "$tmp/llama" | awk '{print "model size " $1}'
