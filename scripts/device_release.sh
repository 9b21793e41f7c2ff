#!/usr/bin/env bash
# Train the release mSwitch and its equal-FLOPs dense baseline side by side on one accelerator,
# with the one trainer (python -m mtmoe.train) reading the pre-tokenized cache (no TensorFlow there).
#
# On a machine with TensorFlow (this one), write the cache once; both runs read the same rows:
#   python -m mtmoe.token_cache --gin_file=gin/experiments/release.gin --steps 6000 --out .release/cache
# Then on the accelerator machine (carry .release):
#   OUT=<dir> TRAIN_SECONDS=330 bash scripts/device_release.sh
# Writes $OUT/moe and $OUT/dense: ordinary MODEL_DIRs (Orbax checkpoints, metrics.jsonl, config.gin).
set -euo pipefail
: "${OUT:?set OUT to the output directory}"
CACHE=${CACHE:-.release/cache}
TRAIN_SECONDS=${TRAIN_SECONDS:-330}
PY=${PY:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}   # two processes share the device
mkdir -p "$OUT"
run() {  # $1: name, $2: experiment gin file
  $PY -m mtmoe.train --gin_file="$2" --gin.MODEL_DIR="'$OUT/$1'" --gin.TRAIN_CACHE_DIR="'$CACHE'" \
      --gin.MAX_TRAIN_SECONDS="$TRAIN_SECONDS" > "$OUT/$1.log" 2>&1
}
run moe gin/experiments/release.gin & MOE=$!
run dense gin/experiments/release_dense.gin & DENSE=$!
MOE_RC=0; DENSE_RC=0
wait $MOE || MOE_RC=$?
wait $DENSE || DENSE_RC=$?
echo "moe rc $MOE_RC, dense rc $DENSE_RC (logs: $OUT/moe.log, $OUT/dense.log)"
exit $(( MOE_RC || DENSE_RC ))
