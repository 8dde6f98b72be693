#!/usr/bin/env bash
# The prepared GPU check (issue 18 item 6): one script, under 8 minutes on one H100/H200.
#   1. the `gpu` tests (Triton kernels fwd+bwd vs the torch references, bf16 autocast loss),
#   2. benchmarks/gpu_train.py: BERT-base bf16 steps, ours vs HF SDPA (padded), MFU vs measured peak,
#   3. benchmarks/kernels.py: varlen attention fwd+bwd (Triton vs flash_attn vs padded SDPA) and
#      the fused loss vs materialised logits (time, peak CUDA memory).
# Writes one markdown file (default benchmarks/results_gpu.md) with every part and its exit code.
#   bash benchmarks/gpu_all.sh [OUT.md]          on a CUDA machine
#   bash benchmarks/gpu_all.sh --dry-run [OUT]   the same code on CPU at tiny shapes (CI keeps it alive)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
DRY=""
if [ "${1:-}" = "--dry-run" ]; then DRY="--dry-run"; shift; fi
OUT=${1:-benchmarks/results_gpu.md}
if [ -z "$DRY" ] && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_all.sh: no CUDA device visible to $PY (torch.cuda.is_available() is False); on CPU use --dry-run" >&2
    exit 2
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)
failed=()

part() {  # name, time limit (s), command...
    local name=$1 limit=$2; shift 2
    local t0=$(date +%s)
    timeout "$limit" "$@" > "$TMP/$name.log" 2>&1
    local rc=$?
    echo "[$name] exit $rc in $(( $(date +%s) - t0 ))s"
    [ $rc -eq 0 ] || failed+=("$name")
    echo "$rc" > "$TMP/$name.rc"
}

if [ -n "$DRY" ]; then
    part tests 120 $PY -m pytest -q -p no:cacheprovider -m gpu tests/gpu   # skip without CUDA: checks collection
else
    part tests 240 $PY -m pytest -q -p no:cacheprovider -m gpu tests
fi
part train 180 $PY -m benchmarks.gpu_train $DRY --steps 10 --out "$TMP/train.md"
part kernels 120 $PY -m benchmarks.kernels $DRY --out "$TMP/kernels.md"

{
    echo "# GPU check ($( [ -n "$DRY" ] && echo 'DRY RUN on CPU: not a measurement' || $PY -c 'import torch; print(torch.cuda.get_device_name())'))"
    echo
    echo "\`bash benchmarks/gpu_all.sh $DRY\` on commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC'), $(( $(date +%s) - start )) s in all."
    echo
    echo "## gpu tests (exit $(cat "$TMP/tests.rc"))"
    echo
    echo '```'
    tail -n 25 "$TMP/tests.log"
    echo '```'
    for p in train kernels; do
        echo
        if [ -f "$TMP/$p.md" ]; then cat "$TMP/$p.md"; else echo "## $p: failed (exit $(cat "$TMP/$p.rc"))"; echo; echo '```'; tail -n 25 "$TMP/$p.log"; echo '```'; fi
    done
} > "$OUT"
echo "wrote $OUT"
if [ ${#failed[@]} -gt 0 ]; then echo "failed: ${failed[*]}" >&2; exit 1; fi
