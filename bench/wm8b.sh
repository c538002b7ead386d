#!/usr/bin/env bash
# Weight matching of 8B-shaped checkpoints (bench/mkckpt -llama -layers 32
# -hidden 4096 -inter 14336 -heads 32 -kv-heads 8 -vocab 128256 -dtype bf16):
# `wtool align A B`, `wtool merge A B --method wm` and a three-model
# MergeMany `wtool merge A B C --method wm`, each with the page cache dropped
# first: wall time, peak anonymous memory (RssAnon sampled from
# /proc/PID/status), and the GFLOP/s of the cost GEMMs next to the GEMM
# benchmarks' peaks measured in the same run (bench/gemm's float32 GEMM, and
# the bf16 GEMM the cost matrices of bf16 checkpoints use).
#
#   bench/wm8b.sh [A B [C]]     (default /work/ckpt8b/a /work/ckpt8b/b /work/ckpt8b/base)
#
# Environment:
#   SWEEPS  weight matching sweeps for align and the two-model merge (default 1;
#           a sweep of an 8B model is 2.2e14 FLOP of GEMM, tens of minutes)
#   ROUNDS  MergeMany rounds (default 1: each model matched once to the others' mean)
#   STEPS   which steps to run (default "peak align merge many")
#   OUT     scratch directory for the outputs, deleted after each step
#           (default /work/ckpt8b/out-h-perm)
#   LOCK    a lock file each step holds while it reads the checkpoints
#           (default /work/ckpt8b/.lock when it exists; empty: none)
#   DROP    0: do not drop the page cache before each step
#   TIMEOUT stop each step with SIGINT (Ctrl-C) after this many seconds (a
#           three-model MergeMany of 8B models takes hours: its memory is
#           the same after the first minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
A=${1:-/work/ckpt8b/a}
B=${2:-/work/ckpt8b/b}
C=${3:-/work/ckpt8b/base}
SWEEPS=${SWEEPS:-1}
ROUNDS=${ROUNDS:-1}
STEPS=${STEPS:-peak align merge many}
OUT=${OUT:-/work/ckpt8b/out-h-perm}
if [ -z "${LOCK+x}" ]; then
	LOCK=""
	[ -e /work/ckpt8b/.lock ] && LOCK=/work/ckpt8b/.lock
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wtool-wm8b.XXXXXX")
trap 'rm -rf "$tmp" "$OUT"' EXIT
go build -o "$tmp/wtool" ./cmd/wtool
go build -o "$tmp/wm" ./bench/wm
go build -o "$tmp/gemm" ./bench/gemm
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# measure LABEL CMD...: runs CMD holding the lock, page cache dropped, and
# prints its wall time and peak RssAnon; CMD's stdout goes to $tmp/LABEL.out,
# its stderr to $tmp/LABEL.err (bench/lib.sh's measure_step).
measure() { measure_step nocpu "$@"; }

# kernelrate LABEL FLOP: the GEMM kernels' GFLOP per CPU-second in the
# step's CPU profile (contention on a shared machine changes it far less
# than wall-clock rates)
kernelrate() {
	# an interrupted run (TIMEOUT) may leave no profile: say so, go on
	[ -s "$tmp/$1.prof" ] || { echo "$1: no CPU profile (interrupted)"; return 0; }
	go tool pprof -top -nodecount 100000 "$tmp/wtool" "$tmp/$1.prof" 2>/dev/null | awk -v flop="$2" '
		/^ *[0-9.]+m?s / && ($NF ~ /bfgemm\.kernel12x32|linalg\.sgemmKernel/) {
			v = $1; if (v ~ /ms$/) { sub(/ms$/, "", v); v /= 1000 } else { sub(/s$/, "", v) }
			k += v
		}
		END { if (k > 0) printf "%s: GEMM kernels %.0f CPU-s for %.4g FLOP: %.1f GFLOP per CPU-second\n", "'"$1"'", k, flop, flop / k / 1e9 }' || true
}

for step in $STEPS; do
	case $step in
	peak)
		"$tmp/gemm" -shapes 4096x4096x4096 -prec 32 -impl linalg -mintime 3s | awk -F'\t' '{printf "peak float32 GEMM (bench/gemm, 4096^3): %.1f GFLOP/s\n", $7}'
		"$tmp/wm" -peak 4096 | awk -F'\t' 'NF==5{printf "peak %s GEMM (bench/wm -peak, 4096^3): %.1f GFLOP/s, %.1f GFLOP per CPU-second\n", $1, $4, $5} NF!=5{print}'
		;;
	align)
		mkdir -p "$OUT"
		measure align env WTOOL_CPUPROFILE="$tmp/align.prof" "$tmp/wtool" align "$A" "$B" -o "$OUT/aligned" --restarts 1 --max-sweeps "$SWEEPS" --json
		cat "$tmp/align.err"
		grep -v '^    "layers\.' "$tmp/align.out" || true
		kernelrate align "$(grep -o '"gemm_flop": [0-9.e+]*' "$tmp/align.out" | awk '{print $2}')"
		;;
	merge)
		mkdir -p "$OUT"
		measure merge env WTOOL_CPUPROFILE="$tmp/merge.prof" "$tmp/wtool" merge "$A" "$B" --method wm --restarts 1 --max-sweeps "$SWEEPS" -o "$OUT/merged"
		cat "$tmp/merge.err"
		kernelrate merge "$(grep -o 'GEMM [0-9.]* s, [0-9.e+]* FLOP' "$tmp/merge.err" | awk '{print $4}')"
		;;
	many)
		mkdir -p "$OUT"
		measure many env WTOOL_CPUPROFILE="$tmp/many.prof" "$tmp/wtool" merge "$A" "$B" "$C" --method wm --restarts 1 --max-sweeps "$ROUNDS" -o "$OUT/merged3"
		cat "$tmp/many.err"
		;;
	*)
		echo "unknown step $step" >&2
		exit 2
		;;
	esac
done
echo
echo "step	seconds	peak RssAnon MiB	exit"
cat "$tmp/results.tsv" 2>/dev/null || true
