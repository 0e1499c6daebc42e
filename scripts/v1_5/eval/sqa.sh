#!/usr/bin/env bash
# ScienceQA (SQA-IMG): generate (letter answers; text-only questions asked without an image), then accuracy.
# Usage: [METHOD=globalcom2 RATIO=0.25 MODEL_PATH=... CKPT=...] bash scripts/v1_5/eval/sqa.sh
# Environment: see _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

BENCH=$DATA/scienceqa
DIR=$BENCH/answers/$TAG

generate llava.eval.model_vqa_science "$DIR" \
    --question-file "$BENCH/llava_test_CQM-A.json" \
    --image-folder "$BENCH/images/test" \
    --single-pred-prompt

"$PYTHON" -m llava.eval.eval_science_qa \
    --base-dir "$BENCH" \
    --result-file "$DIR/merge.jsonl" \
    --output-file "$DIR/output.jsonl" \
    --output-result "$DIR/result.json" \
    --score-file "$DIR/score_sqa.json"
