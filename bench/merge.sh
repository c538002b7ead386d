#!/usr/bin/env bash
# Benchmark for `wtool merge --method linear` of two synthetic 1 GiB BF16
# checkpoints (64 tensors of 4096x2048) against `cp` of one input in the same
# run (the output has the same size as one input). Prints each run and the
# median ratio, and the peak RSS.
#
#   bench/merge.sh [RUNS]      (default 3; needs ~4 GiB free in $TMPDIR)
set -euo pipefail
runs=${1:-3}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wtool-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/wtool" ./cmd/wtool
go run ./bench/mkckpt -o "$tmp/a.safetensors" -n 64 -rows 4096 -cols 2048 -dtype bf16 -seed 1 >/dev/null
go run ./bench/mkckpt -o "$tmp/b.safetensors" -n 64 -rows 4096 -cols 2048 -dtype bf16 -seed 2 >/dev/null
sync
cat "$tmp/a.safetensors" "$tmp/b.safetensors" >/dev/null
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
cps=() cpss=() ms=() rss=()
for i in $(seq "$runs"); do
  rm -f "$tmp/cp.safetensors"; rm -rf "$tmp/out.safetensors"; sync
  t0=$(date +%s.%N); cp "$tmp/a.safetensors" "$tmp/cp.safetensors"; t1=$(date +%s.%N); sync; t2=$(date +%s.%N)
  rm -f "$tmp/cp.safetensors"; sync
  /usr/bin/time -f "%e %M" -o "$tmp/time" "$tmp/wtool" merge "$tmp/a.safetensors" "$tmp/b.safetensors" -o "$tmp/out.safetensors" --method linear -q
  read -r mt mr < "$tmp/time"
  cpt=$(echo "$t1 - $t0" | bc -l); cpst=$(echo "$t2 - $t0" | bc -l); cpss+=("$cpst")
  cps+=("$cpt"); ms+=("$mt"); rss+=("$mr")
  printf 'run %d: cp %.2f s (cp+sync %.2f s), merge %.2f s (ratio %.2f), peak RSS %d MiB\n' "$i" "$cpt" "$cpst" "$mt" "$(echo "$mt / $cpt" | bc -l)" $((mr / 1024))
done
mc=$(median "${cps[@]}"); mcs=$(median "${cpss[@]}"); mm=$(median "${ms[@]}"); mr=$(median "${rss[@]}")
printf 'median: cp %.2f s, cp+sync %.2f s, merge --method linear %.2f s (durable: fsync'\''d); ratio to cp %.2f, to cp+sync %.2f; peak RSS %d MiB\n' "$mc" "$mcs" "$mm" "$(echo "$mm / $mc" | bc -l)" "$(echo "$mm / $mcs" | bc -l)" $((mr / 1024))
