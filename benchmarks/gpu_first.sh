#!/usr/bin/env bash
# The one device command (issue 31): runs on the GPU image's own python3 with the carried wheels and this
# checkout (PYTHONPATH, no install). Total <= 7 minutes on one H100, so one rerun fits in 15.
#   bash benchmarks/gpu_first.sh             on the GPU machine ($OUT: the folder that comes back)
#   bash benchmarks/gpu_first.sh --dry-run   the same stages on CPU at tiny shapes (CI: tests/benchmarks)
# Carried (git-ignored): gpu_wheels/*.whl (`make gpu-wheels`), optionally triton_cache/ (TRITON_CACHE_DIR):
# a run returns $OUT/triton_cache.tgz (when <= 15 MB); unpacked into triton_cache/ it saves a rerun compiling.
# Every stage runs under its own `timeout` and appends to $OUT/summary.md and $OUT/results.jsonl when it
# ends; the whole output is tee'd to $OUT/log.txt. Nothing under $OUT is ever deleted.
#   preflight (30 s, exit 3)  nvidia-smi, versions, CUDA, interpreter off, masklab importable
#   1 smoke (40 s)            compiled Triton kernels once vs torch
#   2 correctness (150 s)     pytest -m gpu tests/gpu, interpreter asserted off (pinned rows, NaN poison, ...)
#   3 timings (60 s)          attention vs padded SDPA / flash_attn at L=128/512/1024; fused loss vs logits
#   4 train (100 s)           BERT-base bf16 step: eager, compiled, HF SDPA; MFU; host syncs
#   5 smoke training (rest)   30 steps end to end, if at least 30 s of the 420 s are left
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=""
if [ "${1:-}" = "--dry-run" ]; then DRY="--dry-run"; fi
OUT=${OUT:-$ROOT/runs/gpu_first}
mkdir -p "$OUT"
PY=${PY:-python3}
BUDGET=${GPU_FIRST_BUDGET:-420}
# the limits are the device's; a dry run on a shared 2-core CI box gets SCALE times each (imports alone
# take seconds there)
SCALE=${GPU_FIRST_SCALE:-$( [ -n "$DRY" ] && echo 8 || echo 1 )}
BUDGET=$(( BUDGET * SCALE ))
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg

run_all() {
    local start rc
    start=$(date +%s)
    echo "# gpu_first ${DRY:-(device run)}: commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC')" | tee -a "$OUT/summary.md"
    # the carried wheels: installed beside the image's packages, never over them (--no-deps, --target)
    if ls gpu_wheels/*.whl > /dev/null 2>&1; then
        SITE=${GPU_SITE:-/tmp/masklab_site}
        $PY -m pip install -q --no-index --no-deps --upgrade --target "$SITE" gpu_wheels/*.whl || echo "wheel install failed"
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    # compiled kernels land in triton_cache/ (carried back in, if a previous run's tarball was unpacked there)
    export TRITON_CACHE_DIR="$ROOT/triton_cache"
    if [ -n "$DRY" ]; then
        export TRITON_INTERPRET=1  # CPU: the kernels run in Triton's interpreter
    else
        unset TRITON_INTERPRET
        export MASKLAB_GPU_RUN=1  # tests/conftest.py: leave the interpreter off
        timeout 10 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
    fi
    if ! timeout $(( 30 * SCALE )) $PY -m benchmarks.gpu_first preflight $DRY --out "$OUT"; then
        echo "gpu_first: preflight failed (see the line above and $OUT/summary.md); nothing else ran" >&2
        echo '{"stage": "gpu_first", "rc": 3, "failed": ["preflight"]}' >> "$OUT/results.jsonl"
        return 3
    fi
    local failed=()
    stage() {  # name, limit (s), command...
        local name=$1 limit=$(( $2 * SCALE )) t0 rc; shift 2
        t0=$(date +%s)
        echo "=== stage $name (limit ${limit}s) ==="
        timeout --kill-after=5 "$limit" "$@"
        rc=$?
        local dt=$(( $(date +%s) - t0 ))
        [ $rc -eq 124 ] && echo "stage $name TIMED OUT after ${limit}s"
        echo "{\"stage\": \"$name\", \"rc\": $rc, \"seconds\": $dt, \"limit_s\": $limit}" >> "$OUT/results.jsonl"
        printf '\n- stage **%s**: exit %s in %ss (limit %ss)%s\n' "$name" "$rc" "$dt" "$limit" \
            "$( [ $rc -eq 124 ] && echo ': TIMED OUT' )" >> "$OUT/summary.md"
        [ $rc -eq 0 ] || failed+=("$name")
    }
    stage smoke 40 $PY -m benchmarks.gpu_first smoke $DRY --out "$OUT"
    if [ -n "$DRY" ]; then  # no CUDA: the gpu tests skip; this checks they collect and import here
        stage correctness 150 $PY -m pytest -q -p no:cacheprovider -rs -m gpu tests/gpu
    else
        # the pinned table rows first: if compilation eats the 150 s, the most telling results are in
        stage correctness 150 $PY -m pytest -q -p no:cacheprovider -rs --durations=10 -m gpu \
            tests/gpu/test_gpu_pinned.py tests/gpu/test_gpu_kernels.py -k "not smoke_training" \
            --junitxml="$OUT/gpu_tests.xml"
    fi
    grep -E "passed|failed|skipped|error" "$OUT/log.txt" 2>/dev/null | tail -n 1 | sed 's/^/  pytest: /' >> "$OUT/summary.md"
    stage timings 60 $PY -m benchmarks.gpu_first timings $DRY --out "$OUT"
    stage train 100 $PY -m benchmarks.gpu_first train $DRY --out "$OUT"
    local left=$(( BUDGET - ($(date +%s) - start) ))
    if [ $left -ge $(( 30 * SCALE )) ]; then
        stage smoke_training $(( (left < 60 * SCALE ? left : 60 * SCALE) / SCALE )) $PY -m pytest -q -p no:cacheprovider -rs -m gpu \
            tests/gpu/test_gpu_kernels.py -k smoke_training
    else
        printf '\n- stage **smoke_training**: skipped (%ss of %ss left)\n' "$left" "$BUDGET" >> "$OUT/summary.md"
    fi
    if [ -z "$DRY" ] && [ -d triton_cache ]; then  # for a rerun: unpack into triton_cache/ and carry it
        tar czf "$OUT/triton_cache.tgz" -C triton_cache . 2> /dev/null
        if [ "$(stat -c %s "$OUT/triton_cache.tgz" 2> /dev/null || echo 0)" -gt 15000000 ]; then
            rm -f "$OUT/triton_cache.tgz"; echo "triton cache over 15 MB: not returned"
        fi
    fi
    local total=$(( $(date +%s) - start ))
    printf '\nTotal %ss (budget %ss). Failed stages: %s\n' "$total" "$BUDGET" "${failed[*]:-none}" >> "$OUT/summary.md"
    echo "{\"stage\": \"gpu_first\", \"rc\": ${#failed[@]}, \"seconds\": $total, \"failed\": \"${failed[*]:-}\"}" >> "$OUT/results.jsonl"
    echo "gpu_first: done in ${total}s; failed: ${failed[*]:-none}; results in $OUT"
    [ ${#failed[@]} -eq 0 ]
}

run_all 2>&1 | tee -a "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
