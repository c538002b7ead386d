#!/usr/bin/env bash
# Benchmark for the built-in engine (fisher/nn): joint statistics of two
# ResNet-18-sized checkpoints (torchvision resnet18 names, 11.7M parameters)
# on IMAGES random images, with `wtool stats A B` (every module input as
# unfolded patches and the default activation points, as docs/stats.md
# defines them), against PyTorch in the same run: the forward passes alone,
# the same statistics with the same arithmetic (float32 products of 2048
# rows summed in float64), and tools/wtool_collect.py (float64 products).
# Peak anonymous memory (RssAnon) of wtool is sampled from /proc.
#
#   bench/nn/stats.sh [RUNS [IMAGES [SIZE [BATCH]]]]   (default 3 runs, 256 images of 64x64, batch 32)
#
# Outputs go to /dev/shm (about 2 GiB of statistics) and are deleted.
set -euo pipefail
runs=${1:-3}
n=${2:-256}
size=${3:-64}
bs=${4:-32}
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wtool-bench-nn.XXXXXX")
out=$(mktemp -d /dev/shm/wtool-bench-nn.XXXXXX)
trap 'rm -rf "$tmp" "$out"' EXIT
go build -o "$tmp/wtool" ./cmd/wtool
/usr/bin/python3 bench/nn/mkresnet.py "$tmp" "$n" "$size"
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# peak RssAnon (KiB) of a command, sampled every 50 ms; CPU seconds (user +
# system) from /usr/bin/time
peak() {
  /usr/bin/time -f "%U %S" -o "$tmp/cpu" "$@" & local pid=$! max=0 v c
  while kill -0 "$pid" 2>/dev/null; do
    for c in $(pgrep -P "$pid") "$pid"; do
      v=$(awk '/^RssAnon/ {print $2}' "/proc/$c/status" 2>/dev/null || echo 0)
      [ -n "$v" ] && [ "$v" -gt "$max" ] && max=$v
    done
    sleep 0.05
  done
  wait "$pid"
  echo "$max" > "$tmp/peak"
}
ws=() fs=() ls=() cs=() wc=() fc=() lc=() cc=()
for i in $(seq "$runs"); do
  s=$(date +%s.%N)
  peak "$tmp/wtool" stats "$tmp/a" "$tmp/b" --calib "$tmp/images.safetensors" -o "$out/go.safetensors" --force -q --batch-size "$bs"
  e=$(date +%s.%N)
  wt=$(echo "$e - $s" | bc -l); wm=$(( $(cat "$tmp/peak") / 1024 ))
  wcpu=$(awk '{print $1 + $2}' "$tmp/cpu")
  rm -f "$out/go.safetensors"
  read -r ft fcpu < <(/usr/bin/python3 bench/nn/stats_torch.py "$tmp/a" "$tmp/b" "$tmp/images.safetensors" "$bs" forward)
  read -r lt lcpu < <(/usr/bin/python3 bench/nn/stats_torch.py "$tmp/a" "$tmp/b" "$tmp/images.safetensors" "$bs" lean)
  read -r ct ccpu < <(/usr/bin/python3 bench/nn/stats_torch.py "$tmp/a" "$tmp/b" "$tmp/images.safetensors" "$bs" collector "$out/py.safetensors")
  rm -f "$out/py.safetensors"
  ws+=("$wt"); fs+=("$ft"); ls+=("$lt"); cs+=("$ct"); wc+=("$wcpu"); fc+=("$fcpu"); lc+=("$lcpu"); cc+=("$ccpu")
  printf 'run %d: wtool stats %.1f s, %.1f CPU s (whole command, file written; peak RssAnon %d MiB) | PyTorch: forward passes %.1f s (%.1f CPU s), same statistics %.1f s (%.1f CPU s), wtool_collect.py %.1f s (%.1f CPU s)\n' \
    "$i" "$wt" "$wcpu" "$wm" "$ft" "$fcpu" "$lt" "$lcpu" "$ct" "$ccpu"
done
mw=$(median "${ws[@]}"); mf=$(median "${fs[@]}"); ml=$(median "${ls[@]}"); mc=$(median "${cs[@]}")
mwc=$(median "${wc[@]}"); mfc=$(median "${fc[@]}"); mlc=$(median "${lc[@]}"); mcc=$(median "${cc[@]}")
printf 'median wall: wtool %.1f s; PyTorch forward only %.1f s, same statistics %.1f s (ratio %.2f), wtool_collect.py %.1f s (ratio %.2f)\n' \
  "$mw" "$mf" "$ml" "$(echo "$mw / $ml" | bc -l)" "$mc" "$(echo "$mw / $mc" | bc -l)"
printf 'median CPU:  wtool %.1f s; PyTorch forward only %.1f s, same statistics %.1f s (ratio %.2f), wtool_collect.py %.1f s (ratio %.2f)\n' \
  "$mwc" "$mfc" "$mlc" "$(echo "$mwc / $mlc" | bc -l)" "$mcc" "$(echo "$mwc / $mcc" | bc -l)"
