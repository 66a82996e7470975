#!/usr/bin/env bash
# Tools the test suite uses beyond the Rust toolchain, installed from Debian's packages
# (called by .ci/run; harmless to run again). Without them the tests that need them say
# "SKIPPED" and pass.
#   qemu-user: tests/simd_levels.rs trains on an emulated CPU with AVX2 and no AVX-512
#              (`qemu-x86_64 -cpu max`), to check gemm's and pipe's AVX2 paths on a
#              machine that has AVX-512.
#   mesa-vulkan-drivers: lavapipe, Mesa's Vulkan on the CPU, on which .ci/run runs
#              tests/gpu_kernels.rs with `--features wgpu` (the GPU code paths on a real
#              cubecl backend, without a GPU).
set -euo pipefail
need=()
command -v qemu-x86_64 >/dev/null || need+=(qemu-user)
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  "${as_root[@]}" apt-get install -y -q "${need[@]}" \
    || { "${as_root[@]}" apt-get update -q && "${as_root[@]}" apt-get install -y -q "${need[@]}"; } \
    || echo "warning: could not install ${need[*]}; the tests that need it will say SKIPPED" >&2
fi
