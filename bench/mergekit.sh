#!/usr/bin/env bash
# Benchmark of two of mergekit's methods on three synthetic 1 GiB BF16
# checkpoints (64 tensors of 4096x2048: two fine-tunes and a base) against
# `cp` of one input in the same run (the output has the size of one input):
# `wtool merge --method ties --density 0.5` and `--method model-stock`.
# Prints each run (time, ratio to cp and to cp+sync, peak anonymous memory:
# the largest RssAnon sampled from /proc/PID/status every 50 ms) and the
# medians. The page cache is warm (the inputs are read once before).
#
#   bench/mergekit.sh [RUNS]     (default 3; needs ~5 GiB free in $TMPDIR;
#                                 run it under flock /work/ckpt8b/.lock on
#                                 the shared machine)
#
# TENSORS=n makes models of n tensors (16 MiB each) instead of 64.
set -euo pipefail
runs=${1:-3}
cd "$(dirname "$0")/.."
. bench/lib.sh
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wtool-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/wtool" ./cmd/wtool
for m in a:1 b:2 base:3; do
  go run ./bench/mkckpt -o "$tmp/${m%%:*}.safetensors" -n "${TENSORS:-64}" -rows 4096 -cols 2048 -dtype bf16 -seed "${m##*:}" >/dev/null
done
sync
cat "$tmp"/a.safetensors "$tmp"/b.safetensors "$tmp"/base.safetensors >/dev/null
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# run CMD...: time in seconds and peak RssAnon in KiB, into $t and $anon
run() {
  sample_run 0.05 "$@"
  [ "$run_rc" = 0 ] || return "$run_rc"
  t=$run_secs
  anon=$run_peak_kib
}
declare -A times anons
cps=() cpss=()
for i in $(seq "$runs"); do
  rm -f "$tmp/cp.safetensors"; sync
  t0=$(date +%s.%N); cp "$tmp/a.safetensors" "$tmp/cp.safetensors"; t1=$(date +%s.%N); sync; t2=$(date +%s.%N)
  rm -f "$tmp/cp.safetensors"; sync
  cpt=$(echo "$t1 - $t0" | bc -l); cpst=$(echo "$t2 - $t0" | bc -l)
  cps+=("$cpt"); cpss+=("$cpst")
  for method in ties model-stock; do
    args=(--method "$method")
    [ "$method" = ties ] && args+=(--density 0.5)
    rm -rf "$tmp/out.safetensors"; sync
    run "$tmp/wtool" merge "$tmp/a.safetensors" "$tmp/b.safetensors" --base "$tmp/base.safetensors" -o "$tmp/out.safetensors" "${args[@]}" -q
    times[$method]+="$t "; anons[$method]+="$anon "
    printf 'run %d: cp %.2f s (cp+sync %.2f s), %s %.2f s (ratio to cp %.2f, to cp+sync %.2f), peak RssAnon %d MiB\n' \
      "$i" "$cpt" "$cpst" "$method" "$t" "$(echo "$t / $cpt" | bc -l)" "$(echo "$t / $cpst" | bc -l)" $((anon / 1024))
  done
  rm -rf "$tmp/out.safetensors"
done
mc=$(median "${cps[@]}"); mcs=$(median "${cpss[@]}")
for method in ties model-stock; do
  # shellcheck disable=SC2086
  mt=$(median ${times[$method]}); ma=$(median ${anons[$method]})
  printf 'median: cp %.2f s, cp+sync %.2f s, %s %.2f s (durable: fsync'\''d); ratio to cp %.2f, to cp+sync %.2f; peak RssAnon %d MiB\n' \
    "$mc" "$mcs" "$method" "$mt" "$(echo "$mt / $mc" | bc -l)" "$(echo "$mt / $mcs" | bc -l)" $((ma / 1024))
done
