#!/usr/bin/env bash
# Copyright ©2025 The wtool Authors.
#
# compare.sh times wtool's SVD engine (package lowrank) against sklearn and
# numpy on the SAME matrices and checks that its accuracy is the same or
# better:
#
#   randomized: sklearn.utils.extmath.randomized_svd(A, k, n_oversamples=10,
#               n_iter=7, random_state=0) vs lowrank.TruncatedSVD (p=10, q=7)
#               in the pure-Go build and the -tags openblas build;
#   exact:      np.linalg.svd(A, full_matrices=False) on the float32 matrix
#               (LAPACK sgesdd) and on its float64 copy (dgesdd) vs
#               lowrank.ExactSVD (float64) in the -tags openblas build (dgesdd)
#               and, unless SKIP_PUREGO_EXACT=1, the pure-Go build.
#
# compare.py (Debian's /usr/bin/python3, with numpy, scipy and sklearn)
# generates each matrix and writes it as raw float32, which the Go program
# (main.go in this directory) reads; every implementation's factors are then
# checked by the same code: relative reconstruction error
# ‖A - U·S·Vt‖_F/‖A‖_F (with the optimum from the exact singular values),
# max |s_i - s_ref_i|/s_1 over the top 10 and all k values, and the
# orthonormality of U and V. The implementations are run in turn, ROUNDS
# times (each run a fresh process timing REPS calls), and each reports its
# best time over all rounds, so that a change of machine speed during the
# script affects all alike; "ratio" is time / time of the first row. The
# script fails if an implementation is less accurate than the first row.
#
# Usage (from anywhere in the repository; takes a few minutes):
#
#	bench/svd/compare.sh
#	ROUNDS=5 CASES="rsvd:gauss:4096:4096:256 exact:gauss:2048:2048" bench/svd/compare.sh
#
# CASES is a list of rsvd:KIND:M:N:K and exact:KIND:M:N, KIND gauss (i.i.d.
# normal) or powerlaw (s_i = (i+1)^-0.75, random singular vectors).
#
# Threads: OPENBLAS_NUM_THREADS=2 for numpy and for the OpenBLAS build (the
# pure-Go build uses GOMAXPROCS, all CPUs). This machine sets
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (older OpenBLAS builds misbehave on
# its CPU); they make OpenBLAS use slower kernels, so this script unsets both
# for numpy and the OpenBLAS build alike, unless KEEP_CORETYPE=1. The kernel
# in use is printed. Run it on an otherwise idle machine.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="${PYTHON:-/usr/bin/python3}"
gobin="${GO:-go}"
reps="${REPS:-2}"
rounds="${ROUNDS:-3}"
cases="${CASES:-rsvd:gauss:4096:4096:256 rsvd:powerlaw:4096:4096:256 rsvd:gauss:2048:5632:64 exact:gauss:2048:2048}"

export OPENBLAS_NUM_THREADS=2
if [[ "${KEEP_CORETYPE:-0}" != 1 ]]; then
	unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

(cd "$root" && "$gobin" build -o "$tmp/svd-purego" ./bench/svd)
(cd "$root" && "$gobin" build -tags openblas -o "$tmp/svd-openblas" ./bench/svd)

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)} ROUNDS=$rounds REPS=$reps"
"$py" "$here/compare.py" info
status=0
for c in $cases; do
	IFS=: read -r mode kind m n k <<<"$c"
	d="$tmp/$mode-$kind-$m-$n"
	mkdir -p "$d"
	"$py" "$here/compare.py" gen --dir "$d" --kind "$kind" --m "$m" --n "$n"
	case "$mode" in
	rsvd)
		echo
		echo "== randomized SVD, $kind $m×$n, k=$k, p=10, q=7"
		for r in $(seq "$rounds"); do
			"$py" "$here/compare.py" sklearn --dir "$d" --m "$m" --n "$n" --k "$k" --p 10 --q 7 --reps "$reps"
			for b in purego openblas; do
				"$tmp/svd-$b" -file "$d/a.f32" -m "$m" -n "$n" -mode rsvd -k "$k" -p 10 -q 7 -reps "$reps" -out "$d/go-${b}_" >"$d/go-$b.json"
			done
			for l in sklearn go-purego go-openblas; do mv "$d/$l.json" "$d/$l.json.$r"; done
		done
		"$py" "$here/compare.py" report --dir "$d" --m "$m" --n "$n" --labels sklearn,go-purego,go-openblas || status=1
		;;
	exact)
		echo
		echo "== exact thin SVD, $kind $m×$n"
		labels="numpy32 numpy64 go-openblas"
		for r in $(seq "$rounds"); do
			"$py" "$here/compare.py" numpy --dir "$d" --m "$m" --n "$n" --dtype float32 --reps "$reps"
			"$py" "$here/compare.py" numpy --dir "$d" --m "$m" --n "$n" --dtype float64 --reps "$reps"
			"$tmp/svd-openblas" -file "$d/a.f32" -m "$m" -n "$n" -mode exact -reps "$reps" -out "$d/go-openblas_" >"$d/go-openblas.json"
			for l in $labels; do mv "$d/$l.json" "$d/$l.json.$r"; done
		done
		if [[ "${SKIP_PUREGO_EXACT:-0}" != 1 ]]; then
			# Slow: one run only.
			"$tmp/svd-purego" -file "$d/a.f32" -m "$m" -n "$n" -mode exact -reps 1 -out "$d/go-purego_" >"$d/go-purego.json"
			labels="$labels go-purego"
		fi
		"$py" "$here/compare.py" report --dir "$d" --m "$m" --n "$n" --labels "${labels// /,}" || status=1
		;;
	*)
		echo "unknown case $c" >&2
		exit 2
		;;
	esac
	rm -rf "$d"
done
exit $status
