#!/usr/bin/env bash
# compress and adapter on an 8B-shaped checkpoint: `wtool adapter A --method
# pissa --rank 64` and `wtool compress A --method svd --ratio 0.5`, each
# with the page cache dropped first: wall time, CPU time, peak anonymous
# memory (RssAnon sampled from /proc/PID/status) and, from a CPU profile
# (WTOOL_CPUPROFILE), the share of the CPU time in the GEMM kernels, in the
# rest of the SVD, and in reading, converting and writing tensors; next to
# the time of moving the same bytes (cat of the input, cp of it and sync).
#
#   bench/lowrank8b.sh [A]      (default /work/ckpt8b/a)
#
# Environment:
#   STEPS  which steps to run (default "io adapter compress")
#   OUT    scratch directory for the outputs, deleted after each step
#          (default /work/ckpt8b/out-h-perm)
#   LOCK   a lock file each step holds while it reads the checkpoint
#          (default /work/ckpt8b/.lock when it exists; empty: none)
#   DROP   0: do not drop the page cache before each step
#   TIMEOUT  stop each step with SIGINT (Ctrl-C) after this many seconds
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
A=${1:-/work/ckpt8b/a}
STEPS=${STEPS:-io adapter compress}
OUT=${OUT:-/work/ckpt8b/out-h-perm}
if [ -z "${LOCK+x}" ]; then
	LOCK=""
	[ -e /work/ckpt8b/.lock ] && LOCK=/work/ckpt8b/.lock
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wtool-lr8b.XXXXXX")
trap 'rm -rf "$tmp" "$OUT"' EXIT
go build -o "$tmp/wtool" ./cmd/wtool
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# measure LABEL CMD...: runs CMD holding the lock, page cache dropped;
# prints LABEL, wall seconds, user+system CPU seconds, peak RssAnon MiB and
# the exit code (bench/lib.sh's measure_step).
measure() { measure_step cpu "$@"; }

# shares LABEL: the CPU profile's samples by kind of work. The kernel time
# of page faults on the mapped input (reading it from disk) shows up under
# runtime.asyncPreempt (the profiling signal is delivered with the
# preemption signal when the fault returns): it counts as reading.
shares() {
	# an interrupted run (TIMEOUT) may leave no profile: say so, go on
	[ -s "$tmp/$1.prof" ] || { echo "$1: no CPU profile (interrupted)"; return 0; }
	go tool pprof -top -nodecount 100000 "$tmp/wtool" "$tmp/$1.prof" 2>/dev/null | awk '
		/^ *[0-9.]+m?s / {
			v = $1; if (v ~ /ms$/) { sub(/ms$/, "", v); v /= 1000 } else { sub(/s$/, "", v) }
			f = $NF; total += v
			if (f ~ /linalg\.(sgemm|dgemm|splitRow|transpose)|internal\/asm\/f64|blas\/gonum\.(dgemm|sgemm)/) gemm += v
			else if (f ~ /lowrank\.|gonum\.org\/v1\/gonum\/(lapack|blas|mat)/) svd += v
			else if (f ~ /tensors\.|safetensors|checkpoint|syscall|runtime\.memmove|runtime\.memclr|madvise|Guard|asyncPreempt/) io += v
			else other += v
		}
		END { if (total > 0) printf "%s CPU: %.0f s profiled: GEMM kernels %.0f%%, rest of the SVD %.0f%%, reading/converting/writing tensors %.0f%%, other (runtime, scheduling) %.0f%%\n", "'"$1"'", total, 100*gemm/total, 100*svd/total, 100*io/total, 100*other/total }' || true
}

for step in $STEPS; do
	case $step in
	io)
		mkdir -p "$OUT"
		measure cat bash -c "cat '$A'/*.safetensors > /dev/null"
		measure cp-sync bash -c "mkdir -p '$OUT' && cp -r '$A' '$OUT/copy' && sync"
		;;
	adapter)
		mkdir -p "$OUT"
		measure adapter env WTOOL_CPUPROFILE="$tmp/adapter.prof" "$tmp/wtool" adapter "$A" -o "$OUT/pissa" --method pissa --rank 64 -q
		shares adapter
		;;
	compress)
		mkdir -p "$OUT"
		measure compress env WTOOL_CPUPROFILE="$tmp/compress.prof" "$tmp/wtool" compress "$A" -o "$OUT/svd" --method svd --ratio 0.5 -q
		shares compress
		;;
	*)
		echo "unknown step $step" >&2
		exit 2
		;;
	esac
done
echo
echo "step	wall s	CPU s	peak RssAnon MiB	exit"
cat "$tmp/results.tsv" 2>/dev/null || true
