#!/usr/bin/env bash
# VizWiz-VQA test: generate, then write the EvalAI submission file (scored on the server).
# Usage: [METHOD=globalcom2 RATIO=0.25 MODEL_PATH=... CKPT=...] bash scripts/v1_5/eval/vizwiz.sh
# Environment: see _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

BENCH=$DATA/vizwiz
DIR=$BENCH/answers/$TAG

generate llava.eval.model_vqa_loader "$DIR" \
    --question-file "$BENCH/llava_test.jsonl" \
    --image-folder "$BENCH/test"

UPLOAD=$BENCH/answers_upload/$TAG.json
"$PYTHON" -m llava.eval.convert_vizwiz_for_submission \
    --annotation-file "$BENCH/llava_test.jsonl" \
    --result-file "$DIR/merge.jsonl" \
    --result-upload-file "$UPLOAD"
echo "VizWiz: upload $UPLOAD to EvalAI, then record the score with:"
echo "  $PYTHON -m llava.eval.scoring_utils --benchmark vizwiz --score <acc> --result-file $DIR/merge.jsonl --score-file $DIR/score_vizwiz.json"
