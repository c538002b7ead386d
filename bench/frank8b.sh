#!/bin/bash
# Passthrough frankenmerge at Llama-3-8B shapes (wtool merge --config with
# slices:): layers 0-3 of /work/ckpt8b/a stacked on layers 28-31 of
# /work/ckpt8b/b, plus the embeddings and the head (5.6 GB of bf16), from a
# cold page cache; time, peak RssAnon, next to cp (+ sync) of one 5 GB shard
# in the same run. Holds /work/ckpt8b/.lock; deletes its output.
# Usage: bench/frank8b.sh   (as root, for drop_caches)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
CK=${CK:-/work/ckpt8b}
OUT=$CK/out-$(whoami)-frank
BIN=$(mktemp -d)/wtool
go build -o "$BIN" ./cmd/wtool
CFG=$(mktemp --suffix=.yml)
cat > "$CFG" <<YML
slices:
  - sources: [{model: $CK/a, layer_range: [0, 4]}]
  - sources: [{model: $CK/b, layer_range: [28, 32]}]
merge_method: passthrough
dtype: bfloat16
YML
run() {
  mkdir -p "$OUT"
  sync; echo 3 > /proc/sys/vm/drop_caches
  sample_run 0.1 "$BIN" merge --config "$CFG" -o "$OUT/frank" -q
  local start=$run_start end=$run_end peak=$run_peak_kib rc=$run_rc
  local bytes; bytes=$(du -sb "$OUT/frank" | cut -f1)
  echo "frankenmerge: rc=$rc $(echo "$end - $start" | bc) s, $bytes bytes, peak RssAnon ${peak} kB, num_hidden_layers $(python3 -c "import json;print(json.load(open('$OUT/frank/config.json'))['num_hidden_layers'])")"
  rm -rf "$OUT/frank"
  sync; echo 3 > /proc/sys/vm/drop_caches
  start=$(date +%s.%N)
  cp "$CK/a/model-00001-of-00004.safetensors" "$OUT/cp.bin"; sync
  end=$(date +%s.%N)
  echo "cp: $(stat -c %s "$OUT/cp.bin") bytes, $(echo "$end - $start" | bc) s"
  rm -rf "$OUT"
}
export -f run 2>/dev/null || true
flock "$CK/.lock" bash -c "$(declare -f sample_run run); BIN=$BIN CFG=$CFG OUT=$OUT CK=$CK; run"
rm -f "$CFG"
