#!/usr/bin/env bash
# Benchmark for `wtool stats`: a 4-layer MLP of width 1024 on 8192 samples,
# against the same computation in numpy (float32 matmuls, float64 sums) in the
# same run. Also shows peak memory with twice the samples (it must not grow).
#
#   bench/stats.sh [RUNS]     (default 3)
set -euo pipefail
runs=${1:-3}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wtool-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/wtool" ./cmd/wtool
go run ./bench/mkckpt -o "$tmp/mlp.safetensors" -n 4 -rows 1024 -cols 1024 >/dev/null
go run ./bench/mkckpt -o "$tmp/x.safetensors" -n 1 -rows 8192 -cols 1024 -name x -seed 2 >/dev/null
go run ./bench/mkckpt -o "$tmp/x2.safetensors" -n 1 -rows 16384 -cols 1024 -name x -seed 3 >/dev/null
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
gos=() nps=()
for i in $(seq "$runs"); do
  /usr/bin/time -f "%e %M" -o "$tmp/time" "$tmp/wtool" stats "$tmp/mlp.safetensors" --calib "$tmp/x.safetensors" -o "$tmp/s.safetensors" --force -q --batch-size 1024
  read -r gt gm < "$tmp/time"
  nt=$(/usr/bin/python3 bench/stats_numpy.py "$tmp/mlp.safetensors" "$tmp/x.safetensors" 1024)
  gos+=("$gt"); nps+=("$nt")
  printf 'run %d: wtool stats %.2f s (whole command, peak RSS %d MiB), numpy %.2f s (computation only)\n' "$i" "$gt" $((gm / 1024)) "$nt"
done
mg=$(median "${gos[@]}"); mn=$(median "${nps[@]}")
printf 'median: wtool %.2f s, numpy %.2f s, ratio %.2f\n' "$mg" "$mn" "$(echo "$mg / $mn" | bc -l)"
/usr/bin/time -f "%M" -o "$tmp/time2" "$tmp/wtool" stats "$tmp/mlp.safetensors" --calib "$tmp/x2.safetensors" -o "$tmp/s2.safetensors" --force -q --batch-size 1024
printf 'peak RSS: %d MiB with 8192 samples, %d MiB with 16384\n' $((gm / 1024)) $(( $(cat "$tmp/time2") / 1024))
