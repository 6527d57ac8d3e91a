#!/usr/bin/env bash
# The NeMo decoding peer of bench_greedy_decoding.py, in its own environment (NeMo pins lightning, hydra, ...
# that must not enter avalign's). Usage: benchmarks/peers/make_nemo_env.sh [ENV_DIR]   (default benchmarks/peers/.venv-nemo)
set -euo pipefail
ENV_DIR=${1:-"$(dirname "$0")/.venv-nemo"}
PYTHON=${PYTHON:-python3}
test -x "$ENV_DIR/bin/python" || "$PYTHON" -m venv "$ENV_DIR"
# torch first and pinned: an unpinned one resolves to a multi-GB CUDA build
"$ENV_DIR/bin/python" -m pip install --quiet "torch==2.13.0"
"$ENV_DIR/bin/python" -m pip install --quiet "nemo-toolkit[asr]==3.0.0"
"$ENV_DIR/bin/python" -c "from nemo.collections.asr.parts.submodules.tdt_beam_decoding import *" 2>/dev/null || true
"$ENV_DIR/bin/python" -c "from nemo.collections.asr.parts.submodules.rnnt_greedy_decoding import GreedyBatchedTDTInfer; print('NeMo peer ready:', '$ENV_DIR')"
