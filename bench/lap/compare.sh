#!/usr/bin/env bash
# Times scipy.optimize.linear_sum_assignment and the Go solver
# (permute/lap) on the same matrices and prints the time ratio.
#
# For each size and kind, compare.py (run with Debian's /usr/bin/python3,
# which has numpy and scipy) generates the matrix, times scipy on it and
# writes it as raw little-endian float64; the Go program (this directory's
# main.go) reads that file and times the Go solver, cold each time, like
# scipy. Both report the best of REPS runs; the optimal costs must agree.
#
# Usage (from anywhere in the repository):
#
#	bench/lap/compare.sh                  # n = 1024 2048 4096, all kinds
#	SIZES="4096" KINDS="indep" REPS=5 bench/lap/compare.sh
#
# Kinds: indep (C = A B^T, A and B independent n x 1024 Gaussian),
# permnoisy (B a row-permuted copy of A plus 0.5 Gaussian noise),
# permnoisy16 (the same with noise 16, much harder), uniform (U[0,1),
# minimised; the others are maximised, as weight matching does).
# The machine should be otherwise idle: both timings are wall-clock.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
py=${PYTHON:-/usr/bin/python3}
sizes=${SIZES:-1024 2048 4096}
kinds=${KINDS:-indep permnoisy permnoisy16 uniform}
reps=${REPS:-3}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$root" && go build -o "$tmp/lapbench" ./bench/lap)

printf '%-12s %6s %10s %10s %7s  %s\n' kind n scipy_s go_s ratio "optimal cost"
status=0
for n in $sizes; do
	for kind in $kinds; do
		noise=0.5
		k=$kind
		if [ "$kind" = permnoisy16 ]; then
			k=permnoisy
			noise=16
		fi
		max=-max
		[ "$kind" = uniform ] && max=
		sp=$("$py" "$here/compare.py" --kind "$k" --noise "$noise" --n "$n" --reps "$reps" --out "$tmp/m.f64")
		gj=$("$tmp/lapbench" -file "$tmp/m.f64" -rows "$n" $max -reps "$reps")
		rm -f "$tmp/m.f64"
		line=$("$py" - "$sp" "$gj" "$kind" "$n" <<'EOF'
import json, sys
s, g = json.loads(sys.argv[1]), json.loads(sys.argv[2])
kind, n = sys.argv[3], sys.argv[4]
ok = abs(s["cost"] - g["cost"]) <= 1e-9 * max(1.0, abs(s["cost"]))
print("%-12s %6s %10.4f %10.4f %7.3f  %.17g%s" % (
    kind, n, s["seconds"], g["seconds"], g["seconds"] / s["seconds"], g["cost"],
    "" if ok else "  MISMATCH: scipy %.17g" % s["cost"]))
sys.exit(0 if ok else 1)
EOF
		) || status=1
		echo "$line"
	done
done
exit $status
