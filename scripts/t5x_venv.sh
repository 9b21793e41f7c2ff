#!/usr/bin/env bash
# A side environment with real T5X next to mtmoe, for `python -m t5x.train --gin_file=gin/mswitch_base.gin`
# and tests/test_t5x_interop.py. The project itself never depends on T5X (README, "T5X").
#
#   bash scripts/t5x_venv.sh VENV_DIR              # T5X and its git-only dependencies from GitHub
#   bash scripts/t5x_venv.sh VENV_DIR SOURCES_DIR  # from checkouts: SOURCES_DIR/{t5x,airio,jestimator,CommonLoopUtils}
#
# T5X is not on PyPI, and its setup.py asks for airio, clu, jestimator, flax, optax and seqio
# from git. Here mtmoe is installed first with the exact versions CI tested (constraints.txt:
# jax, flax, optax, orbax-checkpoint, seqio, tensorflow), then T5X's remaining PyPI dependencies
# under the same constraints, then T5X and its git dependencies with --no-deps, so that nothing
# replaces those versions. The revisions below are the ones this was tested with (the newest on
# GitHub at the time); T5X runs on jax 0.10.2 / flax 0.12.8 from that revision on.
set -euo pipefail
VENV=${1:?usage: scripts/t5x_venv.sh VENV_DIR [SOURCES_DIR]}
SOURCES=${2:-}
PYTHON=${PYTHON:-python3.11}
REPO=$(cd "$(dirname "$0")/.." && pwd)

T5X_REV=cc342d419ec3e3e9c4bf1df33c82330cafdc1e16          # google-research/t5x, 2026-04-21
AIRIO_REV=69897df7d9a427b947a9f7bb4164c7782b43e601        # google/airio, 2026-04-09
JESTIMATOR_REV=326824a477feef6d92e6f44175000907a72899ca   # google-research/jestimator, 2024-05-15
CLU_REV=04ad2f9edbd5c80f2307746d15a947fea43cb5e5          # google/CommonLoopUtils, 2026-07-07

if [ -n "$SOURCES" ]; then
  T5X=$SOURCES/t5x AIRIO=$SOURCES/airio JESTIMATOR=$SOURCES/jestimator CLU=$SOURCES/CommonLoopUtils
else
  T5X=git+https://github.com/google-research/t5x@$T5X_REV
  AIRIO=git+https://github.com/google/airio@$AIRIO_REV
  JESTIMATOR=git+https://github.com/google-research/jestimator@$JESTIMATOR_REV
  CLU=git+https://github.com/google/CommonLoopUtils@$CLU_REV
fi

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade "pip>=24"
# mtmoe (editable: the T5X run imports mtmoe and tasks from this checkout) and its tested versions.
$PIP install --quiet -c "$REPO/constraints.txt" -e "$REPO[test]"
# T5X's PyPI dependencies that mtmoe does not bring (tensorboard: t5x.checkpoints imports it;
# grain: airio's data loader).
$PIP install --quiet -c "$REPO/constraints.txt" fiddle chex jaxtyping cached_property grain tensorboard
# T5X and its git-only dependencies, without letting their setup.py pull flax/optax/seqio from git.
$PIP install --quiet --no-deps "$CLU" "$JESTIMATOR" "$AIRIO" "$T5X"
"$VENV/bin/python" -c "import t5x.train, t5x.contrib.moe.models, mtmoe.t5x_module; print('T5X ready in $VENV')"
