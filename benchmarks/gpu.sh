#!/usr/bin/env bash
# Speed suite on a CUDA machine, bfloat16, full-size SAM3; prints the markdown table.
#
#   bash benchmarks/gpu.sh                      # full-size random weights (built once, ~3.4 GB)
#   SAM3_CHECKPOINT=/path/to/sam3 bash benchmarks/gpu.sh   # a real checkpoint folder instead
#   PYTHON=/path/to/python bash benchmarks/gpu.sh
#
# Goal: <= 50 ms per 1008-px image end to end on an H100 (encode + one concept + masks as a label
# image on the host): see the "end to end" line under the table. Every size and all 9 tiles of the
# 2048 x 2048 case are run (seconds on a GPU). The table is also written to $OUT (default
# benchmarks/results_gpu.md, or $OUT_DIR/results_gpu.md when OUT_DIR is set).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PYTHON="${PYTHON:-python}"
OUT="${OUT:-${OUT_DIR:-$HERE}/results_gpu.md}"
FULL_DIR="${FULL_DIR:-${TMPDIR:-/tmp}/napari-sam3-full-random}"

export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"

"$PYTHON" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu.sh: torch sees no CUDA device (torch %s)" % torch.__version__)
p = torch.cuda.get_device_properties(0)
print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, bf16 supported: {torch.cuda.is_bf16_supported()}")
PY
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv,noheader || true

if [[ -n "${SAM3_CHECKPOINT:-}" ]]; then
    SOURCE=(--checkpoint "$SAM3_CHECKPOINT")
else
    SOURCE=(--full --full-dir "$FULL_DIR")
fi

"$PYTHON" "$HERE/bench_speed.py" "${SOURCE[@]}" \
    --device cuda --dtype bf16 --warmup \
    --sizes 640x480 1024x768 1200x800 2048x2048-tiled --tiles 9 \
    --out "$OUT" "$@"
echo "table written to $OUT"

# Adapting SAM3 (core.sam3.adapt): time per adaptation step on cached features, bf16 autocast,
# full-size detector with random weights (benchmarks/results_adapt.md has the CPU numbers).
ADAPT_OUT="${ADAPT_OUT:-${OUT_DIR:-$HERE}/results_adapt_gpu.md}"
"$PYTHON" "$HERE/bench_adapt.py" --full --device cuda --steps 10 | tee "$ADAPT_OUT"
echo "adaptation table written to $ADAPT_OUT"
