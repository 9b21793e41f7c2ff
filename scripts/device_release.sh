#!/usr/bin/env bash
# Train the release mSwitch and its equal-FLOPs dense baseline at once on one GPU (issue 9).
#
# Needs (made here, on the CPU, and carried to the device machine in .release/):
#   python -m mtmoe.pretokenized export --mixture translate_all --out .release/data
#   python -m mtmoe.train_pretokenized config --gin_file gin/experiments/release.gin --out .release/configs/release.json
#   python -m mtmoe.train_pretokenized config --gin_file gin/experiments/release_dense.gin --out .release/configs/release_dense.json
# Run (device tool, carry .release):  OUT=<dir> MAX_STEPS=6000 TRAIN_SECONDS=330 bash scripts/device_release.sh
# Writes $OUT/moe/{params.msgpack.NN, log.json}, $OUT/dense/log.json (its params stay in /tmp:
# the tool returns at most 64 MiB), $OUT/device.log. Both models train for the same MAX_STEPS
# steps of the same batches (equal FLOPs per token x equal tokens = equal training FLOPs), side by
# side on the one GPU; TRAIN_SECONDS after this script starts is a safety deadline for both. Then
# each one validates, saves and scores greedy translations of the first DEV_SENTENCES dev pairs
# of every direction (chrF++, in its log.json).
set -uo pipefail
START=$(date +%s)
: "${OUT:?set OUT to the output directory}"
TRAIN_SECONDS=${TRAIN_SECONDS:-330}
MAX_STEPS=${MAX_STEPS:-6000}
NUM_EXAMPLES=${NUM_EXAMPLES:-5000000}
DEV_SENTENCES=${DEV_SENTENCES:-100}
SEED=${SEED:-0}                   # data sampling, batch order, init and dropout
EXTRA=${EXTRA:-}                  # e.g. "--batch_size 16 --eval_batches 1" (with MAX_STEPS=3) for a CPU smoke run
PY=${PY:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}   # two processes share the GPU
mkdir -p "$OUT/moe" "$OUT/dense"
exec > >(tee "$OUT/device.log") 2>&1
echo "start $(date -u) on $(hostname); $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)"
$PY -c "import jax; print('jax', jax.__version__, jax.devices())"
PACKED=/tmp/release_packed.npz
$PY -m mtmoe.train_pretokenized prepare --data .release/data --out $PACKED --num_examples "$NUM_EXAMPLES" --seed "$SEED" \
    --processes "$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))" || exit 1
DEADLINE=$(( START + TRAIN_SECONDS ))
echo "prepared at +$(( $(date +%s) - START ))s; training $MAX_STEPS steps, at the latest until +${TRAIN_SECONDS}s"
$PY -m mtmoe.train_pretokenized train --config .release/configs/release.json --packed $PACKED --data .release/data \
    --out "$OUT/moe" --deadline $DEADLINE --max_steps "$MAX_STEPS" --seed "$SEED" --dev_sentences "$DEV_SENTENCES" $EXTRA &
MOE=$!
$PY -m mtmoe.train_pretokenized train --config .release/configs/release_dense.json --packed $PACKED --data .release/data \
    --out "$OUT/dense" --params_out /tmp/dense_params --deadline $DEADLINE --max_steps "$MAX_STEPS" --seed "$SEED" --dev_sentences "$DEV_SENTENCES" $EXTRA &
DENSE=$!
wait $MOE; MOE_RC=$?
wait $DENSE; DENSE_RC=$?
echo "done at +$(( $(date +%s) - START ))s: moe rc $MOE_RC, dense rc $DENSE_RC"
nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv 2>/dev/null
exit $(( MOE_RC || DENSE_RC ))
