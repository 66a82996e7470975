#!/bin/bash
# One device call's worth of GPU checks (issue #25), from the repository root, with the
# files scripts/gpu_check/build_cuda.sh built carried xz-compressed:
#   scripts/gpu_check/session.sh PIPE.xz GPU_KERNELS.xz [OUT_DIR]
# 1. tests/gpu_kernels.rs (the encoder's steps, linear, attention and flat AdamW held to
#    the CPU); 2. speed.sh, f32 with pipe's one-node forms and with burn's reference forms,
#    beside PyTorch; 3. profile.sh: the kernels of one step and their GPU time, per phase;
#    4. speed.sh in bf16. About 3 minutes on an H200 after the machine starts.
set -u
PIPE=$1 TESTS=$2 OUT=${3:-gpucheck/out}
here=$(dirname "$0")
mkdir -p "$OUT"
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
for f in "$PIPE" "$TESTS"; do
  [[ $f == *.xz ]] && xz -dkf "$f" && chmod +x "${f%.xz}"
done
PIPE=${PIPE%.xz} TESTS=${TESTS%.xz}
echo "== tests/gpu_kernels.rs"
timeout 150 "$TESTS" --test-threads 1 --nocapture 2>&1 | grep -E "max|^test |result|SKIPPED|panicked"
KERNELS="one-node reference" PRECISIONS=f32 STEPS=8 "$here/speed.sh" "$PIPE" "$OUT"
FORMS=one-node TOP=14 "$here/profile.sh" "$PIPE" "$OUT" >"$OUT/profile-all.txt" 2>&1
grep -A15 -E "segment [3456]:" "$OUT/profile-all.txt" | cut -c1-120
PRECISIONS=bf16 STEPS=8 "$here/speed.sh" "$PIPE" "$OUT" 2>&1 | grep -E "pipe|torch"
