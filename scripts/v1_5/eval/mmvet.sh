#!/usr/bin/env bash
# MM-Vet: generate free-form answers, convert them to the grader's format and, when a grader
# endpoint is configured (MMVET_API_BASE + MMVET_API_KEY [+ MMVET_MODEL]), grade them.
# Usage: [METHOD=globalcom2 RATIO=0.25 MODEL_PATH=... CKPT=...] bash scripts/v1_5/eval/mmvet.sh
# Environment: see _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

BENCH=$DATA/mm-vet
DIR=$BENCH/answers/$TAG

generate llava.eval.model_vqa "$DIR" \
    --question-file "$BENCH/llava-mm-vet.jsonl" \
    --image-folder "$BENCH/images"

mkdir -p "$BENCH/results"
"$PYTHON" -m llava.eval.convert_mmvet_for_eval \
    --src "$DIR/merge.jsonl" \
    --dst "$BENCH/results/$TAG.json"

if [ -n "${MMVET_API_BASE:-}" ] && [ -n "${MMVET_API_KEY:-}" ]; then
    "$PYTHON" -m llava.eval.eval_mmvet \
        --mmvet-data "$BENCH" \
        --result-file "$BENCH/results/$TAG.json" \
        --output "$BENCH/results/${TAG}_grades.json" \
        --score-file "$DIR/score_mmvet.json" "${SCORE_META_ARGS[@]}"
else
    echo "MM-Vet: answers converted to $BENCH/results/$TAG.json; set MMVET_API_BASE and MMVET_API_KEY to grade them"
    echo "  (or submit that file to the official MM-Vet evaluator)."
fi
