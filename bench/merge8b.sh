#!/usr/bin/env bash
# Merges of 8B-scale checkpoints: wall time against moving the same bytes in
# the same run, and peak anonymous memory.
#
# Inputs: three Llama-3-8B-shaped BF16 checkpoints (32 layers, hidden 4096,
# intermediate 14336, vocabulary 128256; 16 GB each in 4 shards), written by
#   go run ./bench/mkckpt -o DIR -llama -layers 32 -hidden 4096 -inter 14336 \
#       -heads 32 -kv-heads 8 -vocab 128256 -dtype bf16 -seed N
# in $CKPT8B/{a,b,base} (default /work/ckpt8b). The three-model TIES uses a
# third model assembled from the shards of a and b (symbolic links: shard 1
# of b, 2 of a, 3 of b, 4 of a; no disk space needed) as a third fine-tune;
# its bytes duplicate a's and b's, so they come from the page cache in the
# merge and in the baseline alike.
#
# For every method, with the page cache dropped before each command:
#   baseline: cat of every input to /dev/null, then cp -r of one input and
#             sync (the same bytes read and written as the merge);
#   merge:    wtool merge ... (its output is fsync'd).
# Peak anonymous memory is the largest RssAnon of /proc/PID/status, sampled
# every 0.1 s (mapped input pages are not anonymous). The merge's CPU time
# (user + system, from /proc/PID/stat) and the load average at its end are
# printed too: on a shared machine a CPU-bound method's wall time follows
# the load, its CPU time does not.
#
# The run holds $CKPT8B/.lock (flock) from start to end, writes under
# $CKPT8B/out-$BENCH_NAME and deletes every output right after measuring. It
# needs about 17 GB free on that file system, and root (drop_caches).
#
#   bench/merge8b.sh                      # every method
#   bench/merge8b.sh ties slerp           # some
#   bench/merge8b.sh 'della:--method della --base BASE --density 0.5'
#                                         # any other: LABEL:FLAGS (BASE: the
#                                         # base checkpoint)
#
# Environment: WTOOL, a wtool binary to measure instead of building this
# tree's (e.g. another branch's); BENCH_NAME names the scratch directory
# $CKPT8B/out-$BENCH_NAME (default h-merge).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ck=${CKPT8B:-/work/ckpt8b}
out=$ck/out-${BENCH_NAME:-h-merge}
methods=("$@")
[ ${#methods[@]} -gt 0 ] || methods=(linear task-arithmetic ties dare-ties dare-linear slerp ties3)
for d in a b base; do
  [ -f "$ck/$d/model.safetensors.index.json" ] || { echo "missing $ck/$d (see the header of $0)" >&2; exit 1; }
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wtool-merge8b.XXXXXX")
cleanup() { rm -rf "$out" "$tmp"; }
trap cleanup EXIT
if [ -n "${WTOOL:-}" ]; then
  cp "$WTOOL" "$tmp/wtool"
else
  go build -o "$tmp/wtool" ./cmd/wtool
fi

exec 9>"$ck/.lock"
flock 9
rm -rf "$out"
mkdir -p "$out"

# the third model: shards of b and a behind symbolic links
third=$out/third
mkdir -p "$third"
cp "$ck/a/model.safetensors.index.json" "$ck/a/config.json" "$third/"
for i in 1 2 3 4; do
  src=a; [ $((i % 2)) -eq 1 ] && src=b
  ln -s "$ck/$src/model-0000$i-of-00004.safetensors" "$third/model-0000$i-of-00004.safetensors"
done

dropcaches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# run CMD... in the background; print "seconds peak_rssanon_kib cpu_seconds"
# (CPU: user + system of CMD's process or of its children, last sampled)
measure() {
  sample_run 0.1 "$@"
  [ "$run_rc" = 0 ] || return "$run_rc"
  echo "$run_secs $run_peak_kib $run_cpu_secs"
}

baseline() { # inputs...
  cat "$@" > /dev/null
  cp -r "$ck/a" "$out/cp"
  sync
}

results=()
for m in "${methods[@]}"; do
  models=("$ck/a" "$ck/b")
  args=()
  case $m in
    linear) args=(--method linear) ;;
    task-arithmetic) args=(--method task-arithmetic --base "$ck/base") ;;
    ties) args=(--method ties --base "$ck/base" --density 0.5) ;;
    dare-ties) args=(--method dare-ties --base "$ck/base" --density 0.5) ;;
    dare-linear) args=(--method dare-linear --base "$ck/base" --density 0.5) ;;
    slerp) args=(--method slerp --t 0.3) ;;
    ties3) models=("$ck/a" "$ck/b" "$third"); args=(--method ties --base "$ck/base" --density 0.5) ;;
    *:*)
      flags=${m#*:}
      m=${m%%:*}
      flags=${flags//BASE/$ck/base}
      read -r -a args <<<"$flags"
      ;;
    *) echo "unknown method $m" >&2; exit 2 ;;
  esac
  files=()
  for d in "${models[@]}"; do files+=("$d"/model-*.safetensors); done
  case " ${args[*]} " in *" --base "*) files+=("$ck"/base/model-*.safetensors) ;; esac

  dropcaches
  read -r bt _ < <(measure baseline "${files[@]}")
  rm -rf "$out/cp"

  dropcaches
  read -r mt mr mc < <(measure "$tmp/wtool" merge "${models[@]}" -o "$out/merged" -q "${args[@]}")
  [ -f "$out/merged/model.safetensors.index.json" ] || { echo "$m: no output" >&2; exit 1; }
  rm -rf "$out/merged"
  load=$(cut -d' ' -f1 /proc/loadavg)

  gb=$(du -cLb "${files[@]}" | tail -1 | awk '{printf "%.0f", $1/1e9}')
  line=$(printf '%-16s %4s GB  baseline %7.1f s  merge %7.1f s  ratio %5.2f  peak RssAnon %5d MiB  merge CPU %6.1f s  load %5s' \
    "$m" "$gb" "$bt" "$mt" "$(echo "$mt / $bt" | bc -l)" $((mr / 1024)) "$mc" "$load")
  echo "$line"
  results+=("$line")
done
echo
echo "method           read      baseline (cat inputs + cp -r a + sync)   wtool merge   ratio   peak RssAnon   merge CPU (user+sys)   load average (1 min) after the merge"
printf '%s\n' "${results[@]}"
