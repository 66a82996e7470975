#!/bin/bash
# Which kernels one MiniLM training step (32×128) launches on the GPU and their GPU time,
# with pipe's one-node forms and with burn's reference forms (issue #25), from the
# repository root:
#   scripts/gpu_check/profile.sh PIPE [OUT_DIR]
# cubecl's profiler logs every kernel; `--phases` syncs after the forward pass, the backward
# pass and the update, and kernel_census.py counts each part. PIPE may be an .xz file;
# FORMS="one-node" skips the reference run.
set -u
PIPE=$1 OUT=${2:-gpucheck/out}
mkdir -p "$OUT"
if [[ $PIPE == *.xz ]]; then
  xz -dkf "$PIPE" && PIPE=${PIPE%.xz} && chmod +x "$PIPE"
fi
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
here=$(dirname "$0")
for forms in ${FORMS:-one-node reference}; do
  flag=""; [ $forms = reference ] && flag=--reference-kernels
  echo "== profile, $forms forms"
  CUBECL_DEBUG_LOG="$OUT/cubecl-$forms.log" CUBECL_DEBUG_OPTION=profile PIPE_TORCH_PYTHON=false \
    timeout "${PROFILE_S:-120}" "$PIPE" bench train --device cuda:0 --shapes "${SHAPES:-32x128}" \
    --warmup 1 --steps 1 --phases $flag >"$OUT/profile-$forms.txt" 2>&1
  echo "(exit $?)"
  tail -3 "$OUT/profile-$forms.txt"
  python3 "$here/kernel_census.py" "$OUT/cubecl-$forms.log" "${TOP:-25}" | tee "$OUT/census-$forms.txt"
  xz -T4 -f "$OUT/cubecl-$forms.log"
done
