#!/usr/bin/env bash
# Everything the CUDA paths need, in one call on a GPU machine (a lent H200 through the device
# tool). Nothing else exercises CUDA for real. Run it from the repository's root, or anywhere:
#
#   BENCH_SUITE_COMMIT=<sha> bash scripts/gpu_check.sh
#
# STEP BUDGET (typical on one H200 / timeout; steps get at most what is left of TOTAL_S,
# default 540 s, less RESERVE_S; the summary always runs, within 30 s; so the whole script ends
# within about TOTAL_S + 45 s: give the device tool timeout_s=600. Typical total about 5.3 min):
#   step            typical  timeout  what                                          files (under $WORK/<gpu>/)
#   preflight          10 s     60 s  torch sees CUDA? device facts, commit          $OUT/facts.json
#   clocks             15 s     60 s  NVML every 20 ms: 3 s idle, 2 s bf16 n=8192;   validate.json "clocks"
#                                     TF32 probe (ieee vs tf32; the suite's tf32 case)
#   tests              40 s    150 s  pytest -m gpu -rA                              $OUT/tests.txt
#   compare            45 s    120 s  bf16/fp16/fp32/tf32 matmul n=4096,8192: suite,  validate.json "compare"
#                                     suite cold, do_bench, Timer; Hadamard / copy
#   tiny               15 s     90 s  small cases: events, graphs, host enqueue,      validate.json "tiny"
#                                     profiler kernel time
#   graphs             35 s    120 s  backward ops --cuda-graphs --isolate           run-graphs.json
#   peaks              30 s    120 s  bench-suite peaks --backends torch-cuda        peaks.json
#   sweep-matmul       40 s    150 s  matmul(+_backward) f32,tf32,bf16,f16 n=1024..   run-gpu-matmul.json
#   sweep-hadamard     30 s     90 s  hadamard(+_backward) f32,bf16,f16 n<=4096,     run-gpu-hadamard.json
#                                     2 rounds (fresh processes); the others 1 round
#   cpu                25 s     90 s  numpy, torch-cpu: threads=all, f32, n=1024,4096 run-cpu.json
#   newops             30 s     90 s  linear(+_backward), mlp_step, bmm, h2d, d2h,     run-gpu-newops.json
#                                     create (quick sizes) on the card and numpy
#   doctor             20 s     60 s  bench-suite doctor: the card against healthy     doctor.json
#                                     H200s (clocks, power, PCIe, ECC, others)
#   report             10 s     90 s  bench-suite report of the runs                 report/
#   summary             3 s     30 s  the short table, printed LAST                  $OUT/summary.txt
#
# What comes back ($OUT; the device tool returns at most 8 files): log.txt (everything printed),
# facts.json, tests.txt, validate.json (the side-by-side figures), results.tar.gz (all of
# $WORK/<gpu>/: runs, peaks, validate.json, report, command.txt; re-packed after EVERY step, so
# a step that hangs or a run cut short loses nothing finished) and summary.txt. Two slots stay
# free for later steps. Unpack results.tar.gz into reports/ and commit reports/<gpu>/.
#
# Without CUDA it stops within seconds with one line, its log in $OUT/log.txt, exit status 2.
# Otherwise: 0 when every step passed, 1 when one failed or timed out (the others still ran).
# Needs torch with CUDA, numpy, pandas, matplotlib, scipy, threadpoolctl, rich, pytest; uses
# triton and nvidia-ml-py where present. Runs from the copied tree without installing
# (PYTHONPATH); the copy has no .git, so the commit comes in as BENCH_SUITE_COMMIT. Never
# touches the card's clocks, power limit or modes.
#
# Adding a step: one `run_step NAME TIMEOUT_S COMMAND...` line below (and a line in the budget
# above); its files go under "$DIR", which is packed when it ends. GPU_CHECK_MAX_STEP_S caps
# every step's timeout but the summary's (a quick smoke run; the tests).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu-check}
WORK=${WORK:-/tmp/bench-suite-gpu}
TOTAL_S=${TOTAL_S:-540}
RESERVE_S=${RESERVE_S:-25}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
LOG="$OUT/log.txt"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
if [[ -z "${BENCH_SUITE_COMMIT:-}" ]]; then
  BENCH_SUITE_COMMIT=$(git rev-parse HEAD 2>/dev/null || true)
fi
export BENCH_SUITE_COMMIT
START=$SECONDS
STEPS="$WORK/steps.tsv"
FAILED=0
DIR=""

elapsed() { echo $(( SECONDS - START )); }

# Refresh $OUT/results.tar.gz from $WORK/<gpu>/ (written aside, then moved in).
pack() {
  [[ -n "$DIR" && -d "$DIR" ]] || return 0
  tar czf "$WORK/results.tar.gz" -C "$WORK" "$(basename "$DIR")" 2>/dev/null \
    && cp "$WORK/results.tar.gz" "$OUT/results.tar.gz.part" \
    && mv -f "$OUT/results.tar.gz.part" "$OUT/results.tar.gz"
  [[ -f "$DIR/validate.json" ]] && cp "$DIR/validate.json" "$OUT/validate.json"
  return 0
}

# run_step NAME TIMEOUT_S COMMAND...: run with a timeout (SIGINT first: a run saves what it
# measured; SIGKILL 15 s later), within what is left of TOTAL_S; record, pack, go on.
run_step() {
  local name=$1 limit=$2
  shift 2
  local left=$(( TOTAL_S - $(elapsed) - RESERVE_S ))
  [[ -n "${NO_DEADLINE:-}" ]] && left=$limit
  if (( left < 10 )); then
    printf '%s\tskipped\t-\t0\t%s\tno time left of TOTAL_S=%s\n' "$name" "$limit" "$TOTAL_S" >> "$STEPS"
    echo "== $name: SKIPPED (no time left of ${TOTAL_S}s)"
    FAILED=1
    return 0
  fi
  (( limit > left )) && limit=$left
  [[ -n "${GPU_CHECK_MAX_STEP_S:-}" && -z "${NO_DEADLINE:-}" ]] && (( limit > GPU_CHECK_MAX_STEP_S )) \
    && limit=$GPU_CHECK_MAX_STEP_S
  echo "== [$(elapsed)s] $name (timeout ${limit}s): $*"
  local t0=$SECONDS rc status note=""
  timeout --signal=INT --kill-after=15 "$limit" "$@"
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status=timeout; note="stopped after ${limit}s"; FAILED=1 ;;
    *) status=failed; note="exit status $rc"; FAILED=1 ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$(( SECONDS - t0 ))" "$limit" "$note" >> "$STEPS"
  pack
  echo "== [$(elapsed)s] $name: $status in $(( SECONDS - t0 ))s"
  return 0
}

main() {
  : > "$STEPS"
  rm -f "$OUT/results.tar.gz.part"
  echo "== gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname 2>/dev/null || echo '?'), commit ${BENCH_SUITE_COMMIT:-UNKNOWN}"

  # preflight: without CUDA, one line and exit 2, within seconds
  local t0=$SECONDS pre rc
  pre=$(timeout 60 "$PY" scripts/gpu_validate.py preflight --facts "$OUT/facts.json" --work "$WORK" 2>&1)
  rc=$?
  if (( rc != 0 )); then
    # one line: why, how long it took, where the log is
    echo "gpu_check: FAILED at preflight after $(( SECONDS - t0 ))s (exit $rc): $(tail -n 1 <<< "$pre" | sed 's/^gpu_check: //') (log: $LOG)"
    printf 'preflight\tfailed\t%s\t%s\t60\t%s\n' "$rc" "$(( SECONDS - t0 ))" "$(tail -n 1 <<< "$pre")" > "$OUT/summary.txt"
    return 2
  fi
  echo "$pre"
  local gpu
  gpu=$(cat "$WORK/gpu-name")
  DIR="$WORK/$gpu"
  rm -rf "$DIR" && mkdir -p "$DIR"
  cp "$OUT/facts.json" "$DIR/facts.json"
  printf 'preflight\tok\t0\t%s\t60\t%s\n' "$(( SECONDS - t0 ))" "$gpu" >> "$STEPS"
  {
    echo "BENCH_SUITE_COMMIT=${BENCH_SUITE_COMMIT:-UNKNOWN} bash scripts/gpu_check.sh"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "gpu: $gpu"
    echo "TOTAL_S=$TOTAL_S RESERVE_S=$RESERVE_S WORK=$WORK OUT=$OUT"
  } > "$DIR/command.txt"
  local V=(scripts/gpu_validate.py --json "$DIR/validate.json")
  # one round, in this process: a round re-makes and re-verifies every input (seconds at n=8192);
  # the hadamard sweep alone runs 2 rounds, so that rounds in fresh processes meet CUDA once
  local RUN=("$PY" -m bench_suite run --machine "$gpu")
  local plugin=()
  "$PY" -c 'import importlib.metadata as m; m.version("bench-suite")' 2>/dev/null || plugin=(-p bench_suite.frontends.pytest_plugin)
  pack

  run_step clocks 60 "$PY" "${V[@]}" clocks
  run_step tests 150 bash -c "set -o pipefail; $PY -m pytest -m gpu -rA -p no:cacheprovider --continue-on-collection-errors ${plugin[*]} tests \
    > '$OUT/tests.txt' 2>&1; rc=\$?; tail -n 25 '$OUT/tests.txt'; exit \$rc"
  run_step compare 120 "$PY" "${V[@]}" compare
  run_step tiny 90 "$PY" "${V[@]}" tiny
  run_step graphs 120 "${RUN[@]}" --rounds 1 --time-budget 0.3 --backends torch-cuda --ops matmul_backward,hadamard_backward \
    --dtypes float32,bfloat16 --sizes 256,2048 --cuda-graphs --isolate --out "$DIR/run-graphs.json"
  run_step peaks 120 "$PY" -m bench_suite peaks --backends torch-cuda --sizes 4096,8192 \
    --dtypes float64,float32,tf32,float16,bfloat16 --machine "$gpu" --out "$DIR/peaks.json"
  run_step sweep-matmul 150 "${RUN[@]}" --rounds 1 --time-budget 0.3 --backends torch-cuda --ops matmul,matmul_backward \
    --dtypes float32,tf32,bfloat16,float16 --sizes 1024,4096,8192 --grad-modes no_grad \
    --out "$DIR/run-gpu-matmul.json"
  run_step sweep-hadamard 90 "${RUN[@]}" --rounds 2 --time-budget 0.4 --backends torch-cuda \
    --ops hadamard,hadamard_backward --dtypes float32,bfloat16,float16 --sizes 256,1024,4096 \
    --out "$DIR/run-gpu-hadamard.json"
  run_step cpu 90 "${RUN[@]}" --rounds 1 --time-budget 0.5 --backends numpy,torch-cpu --dtypes float32 \
    --sizes 1024,4096 --threads all --grad-modes no_grad --out "$DIR/run-cpu.json"
  run_step newops 90 "${RUN[@]}" --preset quick --rounds 1 --time-budget 0.2 --backends torch-cuda,numpy \
    --ops linear,linear_backward,mlp_step,bmm,h2d,d2h,create --threads all --out "$DIR/run-gpu-newops.json"
  run_step doctor 60 bash -c "$PY -m bench_suite doctor --backends torch-cuda --json > '$DIR/doctor.json'; \
    rc=\$?; head -c 2000 '$DIR/doctor.json'; exit \$(( rc == 1 ? 0 : rc ))"
  run_step report 90 bash -c "$PY -m bench_suite report '$DIR'/run-* -o '$DIR/report'"

  # summary: always, last; what the device tool's reply shows
  NO_DEADLINE=1 run_step summary 30 "$PY" "${V[@]}" summary --steps "$STEPS" --facts "$OUT/facts.json" \
    --tests "$OUT/tests.txt" --out "$OUT/summary.txt"
  echo "total $(elapsed)s; files: $(cd "$OUT" && ls | tr '\n' ' ')"
  return $FAILED
}

main "$@" 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
