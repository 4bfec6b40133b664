#!/usr/bin/env bash
# One command for a machine with a GPU (issue 20): prints one table, exits non-zero on any failure.
#
#   scripts/gpu_check.sh [--dry-run] [--out DIR] [--skip-tests] [--skip-bench]
#
# Steps (each logged to DIR/<step>.log):
#   tests     the test suite (not the slow marker) with CUDA visible, then scripts/gpu_check.py layer:
#             DyMoELinear on CUDA, sparse vs dense path and fp32/bf16 vs an fp64 CPU reference
#   sequence  scripts/gpu_check.py sequence: DyMoE task 1 then task 2 through upstream train() on a
#             7B-shaped 2-layer LLaVA built from config (d 4096, MLP 11008, 32 heads), bf16, DeepSpeed
#             ZeRO-2 (scripts/zero2.json), flash-attention 2 when flash_attn imports (else sdpa); task 1's
#             banks must be bit-identical in task 2's checkpoint
#   bench     benchmarks/bench_step.py --device cuda --dtype bf16 (tiny, mid and 7B-shaped sizes)
# --dry-run runs the same Python on the CPU (fp32, tiny model, tests/core only, bench_step on the tiny size):
# it checks the script and its Python parts on a machine without a GPU (tests/integration/test_gpu_check.py).
# PYTHON (default: python) picks the interpreter.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

DRY=0
SKIP_TESTS=0
SKIP_BENCH=0
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --skip-tests) SKIP_TESTS=1 ;;
    --skip-bench) SKIP_BENCH=1 ;;
    --out) OUT="${2:?--out needs a directory}"; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-python}
OUT=${OUT:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$OUT" || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
: > "$OUT/steps.tsv"
FAILED=0

if [[ $DRY -eq 0 ]]; then
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check.sh: torch sees no CUDA device (use --dry-run to check the script on a CPU)" >&2
    exit 2
  fi
  DRYFLAG=()
  TESTS=(tests -m "not slow")
  BENCH=(benchmarks/bench_step.py --device cuda --dtype bf16 --threads 8)
else
  DRYFLAG=(--dry-run)
  TESTS=(tests/core/test_sparse_path.py tests/core/test_layer.py)
  BENCH=(benchmarks/bench_step.py --sizes tiny --repeats 1 --warmup 0 --methods lora128 dymoe1 dymoe2)
fi

# step NAME CMD...: run, log, record "NAME<TAB>ok|FAIL<TAB>seconds<TAB>summary"
step() {
  local name=$1; shift
  local log="$OUT/$name.log" start end status summary
  start=$(date +%s)
  echo "== $name: $*" >&2
  if "$@" > "$log" 2>&1; then status=ok; else status=FAIL; FAILED=1; fi
  end=$(date +%s)
  summary=$(grep -h '^RESULT ' "$log" | tail -n 3 | cut -c8- | tr '\n' ' ')
  [[ -n "$summary" ]] || summary=$(tail -n 1 "$log" | cut -c1-160)
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((end - start))" "$summary" >> "$OUT/steps.tsv"
}

tests_step() {
  "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" || return 1
  "$PY" scripts/gpu_check.py layer "${DRYFLAG[@]}"
}

[[ $SKIP_TESTS -eq 1 ]] || step tests tests_step
step sequence "$PY" scripts/gpu_check.py sequence --out "$OUT/sequence" "${DRYFLAG[@]}"
[[ $SKIP_BENCH -eq 1 ]] || step bench "$PY" "${BENCH[@]}" --workdir "$OUT/bench"

echo
printf '%-9s %-5s %8s  %s\n' step status seconds summary
while IFS=$'\t' read -r name status secs summary; do
  printf '%-9s %-5s %8s  %s\n' "$name" "$status" "$secs" "$summary"
done < "$OUT/steps.tsv"
if [[ -f "$OUT/bench.log" ]]; then
  echo
  sed -n '/^ size /,$p' "$OUT/bench.log"
fi
echo
echo "logs: $OUT"
exit $FAILED
