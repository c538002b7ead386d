#!/usr/bin/env bash
# Benchmark for `wtool convert --dtype bf16` and `wtool inspect` on a synthetic
# 1 GiB F32 checkpoint (32 tensors of 4096x2048), against `cp` of the same
# file measured in the same run. Prints each run and the median ratio.
#
#   bench/convert.sh [RUNS]      (default 5; needs ~3 GiB free in $TMPDIR)
set -euo pipefail
runs=${1:-5}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wtool-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/wtool" ./cmd/wtool
go run ./bench/mkckpt -o "$tmp/in.safetensors" -n 32 -rows 4096 -cols 2048 -dtype f32 >/dev/null
sync
cat "$tmp/in.safetensors" >/dev/null   # both start from a warm page cache

cps=() cpss=() convs=() rss=()
for i in $(seq "$runs"); do
  rm -f "$tmp/cp.safetensors" "$tmp/out.safetensors"; sync
  t0=$(date +%s.%N); cp "$tmp/in.safetensors" "$tmp/cp.safetensors"; t1=$(date +%s.%N); sync; t2=$(date +%s.%N)
  rm -f "$tmp/cp.safetensors"; sync
  /usr/bin/time -f "%e %M" -o "$tmp/time" "$tmp/wtool" convert "$tmp/in.safetensors" -o "$tmp/out.safetensors" --dtype bf16 -q
  read -r ct mr < "$tmp/time"
  cpt=$(echo "$t1 - $t0" | bc -l); cpst=$(echo "$t2 - $t0" | bc -l); cpss+=("$cpst")
  cps+=("$cpt"); convs+=("$ct"); rss+=("$mr")
  printf 'run %d: cp %.2f s (cp+sync %.2f s), convert %.2f s (ratio %.2f), peak RSS %d MiB\n' "$i" "$cpt" "$cpst" "$ct" "$(echo "$ct / $cpt" | bc -l)" $((mr / 1024))
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mc=$(median "${cps[@]}"); mcs=$(median "${cpss[@]}"); mv=$(median "${convs[@]}"); mr=$(median "${rss[@]}")
printf 'median: cp %.2f s, cp+sync %.2f s, convert --dtype bf16 %.2f s (durable: fsync'\''d); ratio to cp %.2f, to cp+sync %.2f; peak RSS %d MiB\n' "$mc" "$mcs" "$mv" "$(echo "$mv / $mc" | bc -l)" "$(echo "$mv / $mcs" | bc -l)" $((mr / 1024))

t0=$(date +%s%N); "$tmp/wtool" inspect "$tmp/in.safetensors" >/dev/null; t1=$(date +%s%N)
echo "inspect: $(( (t1 - t0) / 1000000 )) ms"
