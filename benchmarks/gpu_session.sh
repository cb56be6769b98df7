#!/usr/bin/env bash
# What a session lent a GPU runs first, as one call of the device tool: at most 9 minutes and
# 10 seconds (the steps' timeouts), inside the 10 a call may take and a session's 15 of device
# time, the machine's start included:
#
#     bash benchmarks/gpu_session.sh "$OUT"
#
# The machine's own torch and triton, with this checkout on PYTHONPATH (nothing is installed).
# Steps in order of what they decide, each bounded by a timeout and logged under OUT; a step that
# fails does not stop the next one:
#   1. the persistent kernel at every launch benchmarks/gpu_lstm.py --tune sweeps, against cuDNN
#      (issue 7's last bar: <= 0.33 of cuDNN's latency at B = 1..8, H = 256..1024, T = 100);
#   2. the GPU tests of the Triton backend;
#   3. `lstmkit bench --device cuda`'s Triton rows (training and inference, ratios to cuDNN).
set -u
out=${1:?usage: bash benchmarks/gpu_session.sh OUT_DIR}
if [ -n "$(ls -A "$out" 2>/dev/null)" ]; then  # its logs, and lstmkit bench's --out, would replace a run's
    echo "OUT_DIR: $out is not empty; pass a new or empty directory" >&2
    exit 2
fi
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"

echo "## 1. persistent kernel launches"
SECONDS=0
timeout 200 python3 benchmarks/gpu_lstm.py --quick --skip-train --tune --json "$out/tune.json" 2>&1 \
    | tee "$out/tune.md" | grep '^# '
echo "($SECONDS s)"; SECONDS=0
echo "## 2. GPU tests"
timeout 200 python3 -m pytest -q -o addopts= -p no:cacheprovider tests/kernels/test_lstm_triton.py \
    tests/utils/test_checkpoint.py tests/data/test_prefetch.py -k "gpu_ or cuda_" \
    >"$out/tests.log" 2>&1
tail -n 15 "$out/tests.log"
echo "($SECONDS s)"; SECONDS=0
echo "## 3. lstmkit bench --device cuda"
timeout 150 python3 -m lstmkit bench --device cuda --impls 'lstmkit-triton*' --max-impl-s 2 --out "$out/bench" \
    >"$out/bench.log" 2>&1
tail -n 40 "$out/bench.log"
echo "($SECONDS s)"
