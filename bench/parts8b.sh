#!/usr/bin/env bash
# --part and --resume at real size: a linear merge of two Llama-3-8B-shaped
# bf16 checkpoints (16 GB each, 4 shards; bench/mkckpt writes them) run
#   1. as one process,
#   2. as two parts (one after the other here) plus `wtool finalize --verify`,
#   3. killed (SIGKILL, by the test hook) after 2 of its 4 shards, then rerun
#      with --resume,
# each from a dropped page cache (root), reporting wall time and peak
# anonymous memory (max RssAnon from /proc/PID/status), and checking that
# 2 and 3 give the bytes of 1 (sha256 of every output file). Holds
# /work/ckpt8b/.lock while it runs; the output (16 GB) is deleted after each
# step.
#
#   flock is taken here:  bench/parts8b.sh [A] [B] [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
A=${1:-/work/ckpt8b/a}
B=${2:-/work/ckpt8b/b}
OUTDIR=${3:-/work/ckpt8b/out-h-io}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wtool-parts8b.XXXXXX")
trap 'rm -rf "$tmp" "$OUTDIR"' EXIT
go build -o "$tmp/wtool" ./cmd/wtool
W="$tmp/wtool"
mkdir -p "$OUTDIR"
out="$OUTDIR/merged"
args=(merge "$A" "$B" --method linear -q)

drop() { sync; if [ "$(id -u)" -eq 0 ]; then echo 3 > /proc/sys/vm/drop_caches; fi; }

# run CMD...: prints "seconds peak_rssanon_MiB exit" into $tmp/last
run() {
  sample_run 0.2 "$@"
  printf '%.1f %d %d\n' "$run_secs" $((run_peak_kib / 1024)) "$run_rc" > "$tmp/last"
}

sums() { (cd "$1" && sha256sum $(ls | sort)); }

exec 9>/work/ckpt8b/.lock
flock 9

echo "== 1. one process"
rm -rf "$out" "$out.parts"; drop
run "$W" "${args[@]}" -o "$out"
read -r t m c < "$tmp/last"; echo "merge: ${t} s, peak RssAnon ${m} MiB, exit $c"
sums "$out" > "$tmp/single.sums"
rm -rf "$out"

echo "== 2. two parts + finalize --verify"
for k in 1 2; do
  drop
  run "$W" "${args[@]}" -o "$out" --part "$k/2"
  read -r t m c < "$tmp/last"; echo "part $k/2: ${t} s, peak RssAnon ${m} MiB, exit $c"
done
drop
run "$W" finalize "$out" --verify -q
read -r t m c < "$tmp/last"; echo "finalize --verify: ${t} s, peak RssAnon ${m} MiB, exit $c"
drop
rm -rf "$out"; for k in 1 2; do "$W" "${args[@]}" -o "$out" --part "$k/2" >/dev/null 2>&1; done
run "$W" finalize "$out" -q
read -r t m c < "$tmp/last"; echo "finalize (headers and sizes only): ${t} s, exit $c"
sums "$out" > "$tmp/parts.sums"
if cmp -s "$tmp/single.sums" "$tmp/parts.sums"; then echo "parts + finalize: byte-identical to one process"; else echo "parts + finalize: DIFFERENT"; diff "$tmp/single.sums" "$tmp/parts.sums" || true; fi
rm -rf "$out"

echo "== 3. killed after 2 of 4 shards, then --resume"
drop
run env WTOOL_TEST_KILL_AFTER_SHARDS=2 "$W" "${args[@]}" -o "$out"
read -r t m c < "$tmp/last"; echo "killed run: ${t} s, exit $c (137 = SIGKILL), completed shards kept: $(ls "$OUTDIR"/.merged.tmp-*/model-*.safetensors 2>/dev/null | wc -l)"
drop
run "$W" "${args[@]}" -o "$out" --resume
read -r t m c < "$tmp/last"; echo "resumed run: ${t} s, peak RssAnon ${m} MiB, exit $c"
sums "$out" > "$tmp/resumed.sums"
if cmp -s "$tmp/single.sums" "$tmp/resumed.sums"; then echo "resumed: byte-identical to one process"; else echo "resumed: DIFFERENT"; fi
rm -rf "$out"
