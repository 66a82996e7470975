#!/bin/bash
# Builds `pipe --features cuda` (and, with TESTS=1, the tests/gpu_kernels.rs test binary) on a
# machine that cannot download cubecl's LLVM bundle (issue #25), from the repository root:
#   scripts/gpu_check/build_cuda.sh
# `DOCS_RS=1` is cubecl-llvm's switch to skip the download; the LLVM functions it would have
# linked are then missing, so the first link collects them and each becomes a stub that
# aborts (the cuda runtime never calls them: they serve cubecl's CPU runtime). Prints the
# path of the binary; target/cuda keeps the build for the next run (~2.5 min when only this
# crate changed, ~20 min cold on 2 cores).
set -euo pipefail
export DOCS_RS=1 CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
FEATURES=${FEATURES:-cuda}
mkdir -p "$CARGO_TARGET_DIR"
STUBS=$(realpath "$CARGO_TARGET_DIR")/llvm_stubs.o
if [ ! -f "$STUBS" ]; then
  log=$CARGO_TARGET_DIR/first-link.log
  cargo rustc --release --features "$FEATURES" --bin pipe -- -C link-arg=-Wl,--error-limit=0 \
    >"$log" 2>&1 || true
  src=$CARGO_TARGET_DIR/llvm_stubs.c
  {
    echo '#include <stdlib.h>'
    grep -oE "undefined (symbol|reference to)[: \`']+[A-Za-z_][A-Za-z0-9_]*" "$log" \
      | grep -oE "[A-Za-z_][A-Za-z0-9_]*$" | sort -u \
      | awk '{print "void " $1 "(void) { abort(); }"}'
  } >"$src"
  n=$(grep -c abort "$src" || true)
  if [ "$n" = 0 ]; then
    tail -30 "$log"; echo "build_cuda.sh: the first link failed without undefined symbols (see $log)"; exit 1
  fi
  echo "build_cuda.sh: $n LLVM functions linked as aborting stubs"
  cc -c -fPIC -o "$STUBS" "$src"
fi
cargo rustc --release --features "$FEATURES" --bin pipe -- -C link-arg="$STUBS"
echo "$CARGO_TARGET_DIR/release/pipe"
if [ "${TESTS:-0}" = 1 ]; then
  # the bin link step of this target fails without the stubs; the test binary is what counts
  cargo rustc --release --features "$FEATURES" --test gpu_kernels -- -C link-arg="$STUBS" || true
  ls -t "$CARGO_TARGET_DIR"/release/deps/gpu_kernels-* | grep -v '\.d$' | head -1
fi
