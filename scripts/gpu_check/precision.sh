#!/bin/bash
# A GPU check of mixed precision (issue #25) for a `--features cuda` build, from the
# repository root: scripts/gpu_check/precision.sh PIPE MODEL_DIR CHEMPROT_BLURB_DIR [OUT_DIR]
# 1. `pipe bench train` in f32 and in bf16, each beside PyTorch f32 and PyTorch AMP on the
#    same GPU; 2. su2020's cpu-profile ChemProt cells (cls, sll_att; 2,000 training
#    sentences, 3 epochs) fine-tuned in f32 and in bf16 from the same weights, their epoch
#    losses and dev/test F1 side by side. DEV (default cuda:0) picks the device;
#    PRECISIONS (default "f32 bf16") the arms.
set -u
PIPE=$1 MODEL=$2 BLURB=$3 OUT=${4:-gpucheck/out} DEV=${DEV:-cuda:0}
PRECISIONS=${PRECISIONS:-f32 bf16}
mkdir -p gpucheck "$OUT"
[ "$(realpath "$MODEL")" = "$(realpath -m gpucheck/model)" ] || ln -sfn "$(realpath "$MODEL")" gpucheck/model
[ "$(realpath "$BLURB")" = "$(realpath -m gpucheck/blurb)" ] || ln -sfn "$(realpath "$BLURB")" gpucheck/blurb
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for p in $PRECISIONS; do
  echo "== bench train --precision $p"
  timeout "${BENCH_S:-150}" "$PIPE" bench train --device "$DEV" --warmup 3 --steps 10 --precision "$p" 2>&1 | tee "$OUT/bench_$p.txt"
done
Y=scripts/gpu_check/chemprot.yaml
export PIPE_CACHE=${PIPE_CACHE:-gpucheck/cache}
for p in $PRECISIONS; do
  profile=(); [ "$p" = f32 ] || profile=(--profile "$p")
  echo "== fine-tune, $p"
  timeout "${FT_S:-150}" "$PIPE" run $Y "${profile[@]}" --device "$DEV" -j 1 2>&1 | tr '\r' '\n' | grep -E "✓|✗|epoch [0-9]|failed|error|ran " | tail -12
  for h in cls sll_att; do
    "$PIPE" show $Y "${profile[@]}" "ft_chemprot[head=$h,seed=1]" history.json --device "$DEV" > "$OUT/history_${p}_$h.json" 2>/dev/null
    "$PIPE" show $Y "${profile[@]}" "eval_chemprot[head=$h,seed=1]" metrics.json --device "$DEV" > "$OUT/metrics_${p}_$h.json" 2>/dev/null
  done
done
python3 - "$OUT" $PRECISIONS <<'PY'
import json, os, sys
out, arms = sys.argv[1], sys.argv[2:]
def load(name):
    path = os.path.join(out, name)
    try:
        return json.load(open(path))
    except Exception:
        return None
for h in ["cls", "sll_att"]:
    for p in arms:
        hist, m = load(f"history_{p}_{h}.json"), load(f"metrics_{p}_{h}.json")
        epochs = hist if isinstance(hist, list) else (hist or {}).get("epochs", [])
        losses = " ".join(f"{e.get('train_loss', float('nan')):.4f}" for e in epochs)
        dev = " ".join(f"{100 * (e.get('dev_f1') or 0):.1f}" for e in epochs)
        secs = sum(e.get("seconds", 0) for e in epochs)
        test = f"P {100*m['precision']:.1f} R {100*m['recall']:.1f} F1 {100*m['f1']:.1f}" if m else "no metrics"
        print(f"{h:8} {p:5} losses {losses} | dev F1 {dev} | test {test} | {secs:.0f} s training")
PY
