#!/usr/bin/env bash
# Creates benchmarks/.venv-peers with the peer frameworks (PyTorch CPU + Hugging Face
# transformers) for benchmarks/hf_switch.py. Idempotent; run from anywhere:
#   bash benchmarks/peers/setup.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/../.venv-peers"
python="${PYTHON:-python3.11}"
if ! command -v "$python" >/dev/null; then
  echo "setup.sh: $python not found; set PYTHON=/path/to/python3.11 (the peer venv needs Python 3.11)" >&2
  exit 1
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install --quiet -r "$here/requirements.txt"
"$venv/bin/python" -c "import torch, transformers; print('peer venv ready:', '$venv', 'torch', torch.__version__, 'transformers', transformers.__version__)"
