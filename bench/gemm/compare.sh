#!/usr/bin/env bash
# Copyright ©2025 The wtool Authors.
#
# compare.sh times the same dense matrix products (C = A·B, A M×K, B K×N)
# with wtool's linalg kernels, gonum's pure-Go BLAS and numpy (OpenBLAS) and
# prints one table of GFLOP/s and ratios.
#
# Usage: bench/gemm/compare.sh [-shapes MxKxN,...] [-mintime SECONDS]
#                              [-prec 32,64] [-rounds N]
#
# Each measurement is the best of repeated runs lasting at least -mintime
# seconds (default 1). With -rounds N (default 1) the whole set of
# measurements is repeated N times, alternating Go and numpy, and the best
# result of each is reported: this makes the comparison less sensitive to
# other processes on a shared machine.
#
# Environment: PYTHON (default /usr/bin/python3, which has numpy with
# OpenBLAS), GO (default go). Run it on an otherwise idle machine: all three
# implementations use every core.
set -euo pipefail

shapes="512x512x512,1024x1024x1024,2048x2048x2048,4096x4096x266,8192x1024x1024"
mintime=1
prec="32,64"
rounds=1
while [[ $# -gt 0 ]]; do
	case "$1" in
	-shapes) shapes="$2"; shift 2 ;;
	-mintime) mintime="$2"; shift 2 ;;
	-prec) prec="$2"; shift 2 ;;
	-rounds) rounds="$2"; shift 2 ;;
	-h|-help|--help) sed -n '3,19p' "$0"; exit 0 ;;
	*) echo "unknown argument $1" >&2; exit 2 ;;
	esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-/usr/bin/python3}"
gobin="${GO:-go}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs, GOMAXPROCS=${GOMAXPROCS:-default}, load average $(cut -d' ' -f1-3 /proc/loadavg)"
(cd "$root" && "$gobin" build -o "$tmp/gemmbench" ./bench/gemm)
for ((r = 0; r < rounds; r++)); do
	"$tmp/gemmbench" -shapes "$shapes" -mintime "${mintime}s" -prec "$prec" -impl linalg,gonum >>"$tmp/go.tsv"
	"$python" "$here/numpy_gemm.py" --shapes "$shapes" --mintime "$mintime" --prec "$prec" >>"$tmp/numpy.tsv"
done

"$python" - "$tmp/go.tsv" "$tmp/numpy.tsv" <<'PY'
import sys
rows = {}
order = []
for path in sys.argv[1:]:
    for line in open(path):
        impl, prec, m, k, n, secs, gflops = line.split("\t")
        key = (prec, int(m), int(k), int(n))
        if key not in rows:
            rows[key] = {}
            order.append(key)
        best = rows[key].get(impl)
        if best is None or float(gflops) > best[1]:
            rows[key][impl] = (float(secs), float(gflops))

def g(r, impl):
    return r[impl][1] if impl in r else float("nan")

print("GFLOP/s, best of repeated runs (C = A·B, A is M×K, B is K×N)")
hdr = f"{'prec':>4} {'M':>6} {'K':>6} {'N':>6} | {'linalg':>8} {'gonum':>8} {'numpy':>8} | {'linalg/gonum':>12} {'linalg/numpy':>12}"
print(hdr)
print("-" * len(hdr))
for key in order:
    r = rows[key]
    prec, m, k, n = key
    ours, gon, npy = g(r, "linalg"), g(r, "gonum"), g(r, "numpy")
    print(f"{'f'+prec:>4} {m:>6} {k:>6} {n:>6} | {ours:8.1f} {gon:8.1f} {npy:8.1f} | {ours/gon:12.2f} {ours/npy:12.2f}")
PY
