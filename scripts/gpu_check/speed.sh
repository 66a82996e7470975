#!/bin/bash
# GPU speed of a `--features cuda` build (issue #25), from the repository root:
#   scripts/gpu_check/speed.sh PIPE [OUT_DIR]
# `pipe bench train --phases` at 32×128 in each of PRECISIONS (default "f32 bf16"), beside
# PyTorch f32 and PyTorch AMP on the same GPU, with the cost of one small op and each part
# of pipe's step timed alone. PIPE may be an .xz file (the carry limit); it is unpacked
# beside it. SHAPES, STEPS, BENCH_S (seconds per run) adjust the runs; ENCODERS (default
# "minilm"; "minilm bert-base" for both) picks the random encoders; KERNELS="one-node
# reference" adds a run of each with burn's reference forms (`--reference-kernels`, PyTorch
# not rerun).
set -u
PIPE=$1 OUT=${2:-gpucheck/out}
mkdir -p "$OUT"
if [[ $PIPE == *.xz ]]; then
  xz -dkf "$PIPE" && PIPE=${PIPE%.xz} && chmod +x "$PIPE"
fi
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
for e in ${ENCODERS:-minilm}; do
  for p in ${PRECISIONS:-f32 bf16}; do
    for k in ${KERNELS:-one-node}; do
      flag="" torch=${PIPE_TORCH_PYTHON:-python3}
      [ "$k" = reference ] && flag=--reference-kernels torch=false
      echo "== bench train --encoder $e --precision $p $flag"
      start=$(date +%s)
      PIPE_TORCH_PYTHON=$torch timeout "${BENCH_S:-150}" "$PIPE" bench train --device cuda:0 \
        --encoder "$e" --shapes "${SHAPES:-32x128}" --warmup 2 --steps "${STEPS:-8}" --phases \
        --precision "$p" $flag 2>&1 | tee "$OUT/bench_${e}_${p}_$k.txt"
      echo "(run took $(( $(date +%s) - start )) s, exit ${PIPESTATUS[0]})"
    done
  done
done
