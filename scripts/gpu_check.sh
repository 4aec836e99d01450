#!/usr/bin/env bash
# Everything the CUDA paths need, in one call on a GPU machine (e.g. a lent H100/H200 through
# the device tool: `bash scripts/gpu_check.sh`). Nothing else exercises CUDA for real.
#
#   1. the gpu-marked tests            -> $OUT/gpu-tests.txt
#   2. the environment                 -> $OUT/env.json
#   3. measured peaks (matmul, copy)   -> <gpu>/peaks.json      (all of <gpu>/ comes back as
#                                                                  $OUT/<gpu>.tar.gz)
#   4. real sweeps: every backend, and torch-cuda alone at more dtypes and sizes
#                                      -> <gpu>/run-all.json, run-gpu.json
#   5. its report                      -> <gpu>/report/ (index.html, summary.md, ...)
#   and, last, a short table of the GPU cases.
#
# Runs from the copied tree without installing (PYTHONPATH); needs torch with CUDA, numpy,
# pandas, matplotlib, scipy, threadpoolctl, rich and pytest. Never touches clocks or modes.
# Unpack $OUT/<gpu>.tar.gz into reports/ afterwards; commit it with this command line.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}   # what comes back: logs, env.json and one tarball of the results
WORK=${WORK:-/tmp/bench-suite-gpu}
SIZES_ALL=${SIZES_ALL:-256,1024,4096}
SIZES_GPU=${SIZES_GPU:-256,1024,4096,8192}
BUDGET=${BUDGET:-1.0}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}

gpu=$($PY -c 'import torch, re; n = torch.cuda.get_device_name(0); print(re.sub(r"[^A-Za-z0-9._-]+", "-", n).strip("-"))') \
  || { echo "no CUDA device visible: nothing to check"; exit 2; }
dir="$WORK/$gpu"
mkdir -p "$dir"
echo "== GPU: $gpu"

echo "== 1. gpu-marked tests"
$PY -m pytest -m gpu -q -p no:cacheprovider -p no:randomly 2>&1 | tee "$OUT/gpu-tests.txt" | tail -15
tests_rc=${PIPESTATUS[0]}

echo "== 2. environment"
$PY -m bench_suite env --json --machine "$gpu" > "$OUT/env.json"

echo "== 3. peaks"
$PY -m bench_suite peaks --machine "$gpu" --out "$dir/peaks.json" --quiet | tail -20

echo "== 4a. sweep: every backend, float32 and bfloat16, sizes $SIZES_ALL"
# numpy's float16 matmul has no BLAS (minutes at n=4096): CPU backends stay at float32/bf16
$PY -m bench_suite run --preset full --dtypes float32,bfloat16 --sizes "$SIZES_ALL" --threads 1,all \
  --time-budget "$BUDGET" --machine "$gpu" --out "$dir/run-all.json" --quiet > "$OUT/run-all.txt" 2>&1
run_rc=$?
tail -3 "$OUT/run-all.txt"
echo "== 4b. sweep: torch-cuda alone, float64 and float16, sizes $SIZES_GPU"
$PY -m bench_suite run --preset full --backends torch-cuda --dtypes float64,float16 --sizes "$SIZES_GPU" \
  --time-budget "$BUDGET" --machine "$gpu" --out "$dir/run-gpu.json" --quiet > "$OUT/run-gpu.txt" 2>&1
run_rc=$(( run_rc || $? ))
tail -3 "$OUT/run-gpu.txt"

echo "== 5. report"
$PY -m bench_suite report "$dir" -o "$dir/report" | tail -2

echo "== summary (GPU cases)"
$PY - "$dir" <<'PY'
import sys
import bench_suite
df = bench_suite.load_results([sys.argv[1]])
g = df[df.backend.str.startswith("torch-cuda")]
cols = ["case_id", "status", "median_s", "gflops", "gbps", "rel_error"]
print(g[cols].to_string(index=False, max_rows=80, float_format=lambda v: f"{v:.4g}"))
print(df.groupby(["backend", "status"]).size().to_string())
PY
tar czf "$OUT/$gpu.tar.gz" -C "$WORK" "$gpu" && echo "results: $OUT/$gpu.tar.gz (unpack into reports/)"
echo "tests rc=$tests_rc run rc=$run_rc"
exit $(( tests_rc != 0 || run_rc != 0 ))
