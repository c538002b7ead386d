#!/usr/bin/env bash
# Benchmark of issue 13: joint statistics, weight matching and PLeaS of two
# ResNet-18-sized checkpoints (torchvision resnet18 names, 11.7M
# parameters, random weights; bench/nn/mkresnet.py) on IMAGES random images
# of SIZE x SIZE:
#
#   stats:  wtool stats A B --calib IMAGES -o FILE (every module input as
#           unfolded patches and the default activation points, written to
#           /dev/shm: about 2.2 GB)
#   wm:     wtool align A B --method weight (weight matching, aligned B
#           written)
#   pleas:  wtool merge A B --method pleas --calib IMAGES (joint statistics,
#           activation matching, the least-squares refit of every
#           convolution and the head, BatchNorm statistics recomputed)
#
# and, in the same run, PyTorch computing the same statistics with the same
# arithmetic (bench/nn/stats_torch.py lean: float32 products of at most 2048
# rows summed in float64; and its forward passes alone). For each wtool
# command: wall time, CPU time (user + system, /usr/bin/time) and peak
# anonymous memory (the largest RssAnon of /proc/PID/status, sampled every
# 0.1 s: the mapped checkpoints are file pages, not anonymous memory).
#
#   bench/pleas18.sh [IMAGES [SIZE]]      (default 256 images of 64x64)
#
# The pair is made in $R18 (default /tmp/r18) when absent and kept; every
# output is deleted. WTOOL=BINARY times that build instead of this tree's
# (before/after comparisons); TORCH=0 leaves PyTorch out.
set -euo pipefail
n=${1:-256}
size=${2:-64}
r18=${R18:-/tmp/r18}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wtool-bench-pleas18.XXXXXX")
shm=$(mktemp -d /dev/shm/wtool-bench-pleas18.XXXXXX)
trap 'rm -rf "$tmp" "$shm"' EXIT
if [ ! -f "$r18/images.safetensors" ] || [ ! -f "$r18/a/model.safetensors" ] || [ ! -f "$r18/b/model.safetensors" ]; then
  /usr/bin/python3 bench/nn/mkresnet.py "$r18" "$n" "$size"
fi
if [ -n "${WTOOL:-}" ]; then
  cp "$WTOOL" "$tmp/wtool"
else
  go build -o "$tmp/wtool" ./cmd/wtool
fi

# measure NAME CMD...: prints NAME, wall s, CPU s, peak RssAnon MiB
measure() {
  local name=$1 max=0 v c pid
  shift
  /usr/bin/time -f "%e %U %S" -o "$tmp/time" "$@" > "$tmp/out" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for c in $(pgrep -P "$pid") "$pid"; do
      v=$(awk '/^RssAnon:/ {print $2}' "/proc/$c/status" 2>/dev/null || echo 0)
      [ -n "$v" ] && [ "$v" -gt "$max" ] && max=$v
    done
    sleep 0.1
  done
  if ! wait "$pid"; then
    cat "$tmp/out" >&2
    echo "$name failed" >&2
    exit 1
  fi
  read -r wall user sys < "$tmp/time"
  printf '%-34s wall %7.1f s   CPU %7.1f s   peak RssAnon %6d MiB\n' "$name" "$wall" "$(echo "$user + $sys" | bc -l)" $((max / 1024))
}

echo "pair: $r18 ($(/usr/bin/python3 -c "import json,struct,sys; f=open(sys.argv[1],'rb'); h=json.loads(f.read(struct.unpack('<Q', f.read(8))[0])); print('x', h['x']['shape'])" "$r18/images.safetensors")), load $(cut -d' ' -f1-3 /proc/loadavg)"
measure "wtool stats A B" "$tmp/wtool" stats "$r18/a" "$r18/b" --calib "$r18/images.safetensors" -o "$shm/joint.safetensors" --force -q
rm -f "$shm/joint.safetensors"
measure "wtool align --method weight" "$tmp/wtool" align "$r18/a" "$r18/b" --method weight -o "$tmp/b-wm" --force -q
rm -rf "$tmp/b-wm"
measure "wtool merge --method pleas" "$tmp/wtool" merge "$r18/a" "$r18/b" --method pleas --calib "$r18/images.safetensors" -o "$tmp/pleas" --force -q
rm -rf "$tmp/pleas"
if [ "${TORCH:-1}" != 0 ]; then # PyTorch (2 threads), model loading excluded
  read -r fw fc < <(/usr/bin/python3 bench/nn/stats_torch.py "$r18/a" "$r18/b" "$r18/images.safetensors" 64 forward)
  read -r lw lc < <(/usr/bin/python3 bench/nn/stats_torch.py "$r18/a" "$r18/b" "$r18/images.safetensors" 64 lean)
  printf '%-34s wall %7.1f s   CPU %7.1f s\n' "PyTorch: the same statistics" "$lw" "$lc"
  printf '%-34s wall %7.1f s   CPU %7.1f s\n' "PyTorch: the forward passes only" "$fw" "$fc"
fi
echo "load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
