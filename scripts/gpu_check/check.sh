#!/bin/bash
# A GPU check of a `--features cuda` build, from the repository root:
#   scripts/gpu_check/check.sh PIPE MODEL_DIR CHEMPROT_BLURB_DIR [OUT_DIR]
# 1. `pipe encode` on the GPU against pipe on the CPU and Hugging Face's BertModel on the
#    GPU (needs python3 with torch and transformers); 2. `pipe bench train` beside PyTorch
#    on the same GPU; 3. su2020's cpu-profile ChemProt cells (cls, sll_att) fine-tuned on
#    the GPU, with their metrics. DEV (default cuda:0) picks the device.
set -u
PIPE=$1 MODEL=$2 BLURB=$3 OUT=${4:-gpucheck/out} DEV=${DEV:-cuda:0}
mkdir -p gpucheck "$OUT"
ln -sfn "$(realpath "$MODEL")" gpucheck/model
ln -sfn "$(realpath "$BLURB")" gpucheck/blurb
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
S='Ketoconazole, a potent inhibitor of CYP3A4, increases the plasma concentration of @CHEMICAL$ in healthy volunteers.'
echo "== encode"
"$PIPE" encode --model path:gpucheck/model --json "$S" > "$OUT/enc_cpu.json"
timeout 100 "$PIPE" encode --device "$DEV" --model path:gpucheck/model --json "$S" > "$OUT/enc_gpu.json"
python3 scripts/gpu_check/parity.py gpucheck/model "$S" "$OUT/enc_cpu.json" "$OUT/enc_gpu.json" 2>&1 | grep "max\|tokens"
echo "== bench"
timeout "${BENCH_S:-120}" "$PIPE" bench train --device "$DEV" --warmup 2 --steps 10
echo "== fine-tune"
Y=scripts/gpu_check/chemprot.yaml
PIPE_CACHE=${PIPE_CACHE:-gpucheck/cache} timeout "${FT_S:-240}" "$PIPE" run $Y --device "$DEV" -j 1 2>&1 | tr '\r' '\n' | grep -E "✓|✗|epoch|failed|error|ran "
for h in cls sll_att; do
  PIPE_CACHE=${PIPE_CACHE:-gpucheck/cache} "$PIPE" show $Y "eval_chemprot[head=$h,seed=1]" metrics.json --device "$DEV" > "$OUT/metrics_$h.json" &&
    python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[2], 'P %.1f R %.1f F1 %.1f' % (100*m['precision'], 100*m['recall'], 100*m['f1']))" "$OUT/metrics_$h.json" $h
done
