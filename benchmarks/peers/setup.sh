#!/usr/bin/env bash
# Creates benchmarks/.venv-peers with the peer frameworks (PyTorch CPU + Hugging Face
# transformers) for benchmarks/hf_switch.py. Idempotent; run from anywhere:
#   bash benchmarks/peers/setup.sh
# torch comes as the CPU build on every machine: from a local wheel when pip's
# configured --find-links holds torch-2.13.0+cpu, else from PyTorch's CPU index.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/../.venv-peers"
python="${PYTHON:-python3.11}"
torch_spec="torch==2.13.0+cpu"
torch_index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
if ! command -v "$python" >/dev/null; then
  echo "setup.sh: $python not found; set PYTHON=/path/to/python3.11 (the peer venv needs Python 3.11)" >&2
  exit 1
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet)
if ! "${pip[@]}" --no-index "$torch_spec" 2>/dev/null; then
  "${pip[@]}" --index-url "$torch_index" "$torch_spec"
fi
"${pip[@]}" -r "$here/requirements.txt"
"$venv/bin/python" - "$venv" <<'PY'
import sys

import torch
import transformers

if torch.version.cuda is not None:
    sys.exit(f"setup.sh: the peer venv got torch {torch.__version__} built for CUDA {torch.version.cuda}; "
             f"remove {sys.argv[1]} and rerun (set TORCH_INDEX_URL to a PyTorch CPU index if the default is unreachable)")
print("peer venv ready:", sys.argv[1], "torch", torch.__version__, "(CPU build)", "transformers", transformers.__version__)
PY
