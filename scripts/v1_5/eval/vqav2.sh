#!/usr/bin/env bash
# VQAv2 test-dev: generate, then write the EvalAI submission file (scored on the server).
# Usage: [METHOD=globalcom2 RATIO=0.25 MODEL_PATH=... CKPT=... GPULIST=0,1] bash scripts/v1_5/eval/vqav2.sh
# Environment: see _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

SPLIT=${SPLIT:-llava_vqav2_mscoco_test-dev2015}
BENCH=$DATA/vqav2
DIR=$BENCH/answers/$SPLIT/$TAG

generate llava.eval.model_vqa_loader "$DIR" \
    --question-file "$BENCH/$SPLIT.jsonl" \
    --image-folder "$BENCH/test2015"

UPLOAD=$BENCH/answers_upload/$SPLIT/$TAG.json
"$PYTHON" -m llava.eval.convert_vqav2_for_submission \
    --src "$DIR/merge.jsonl" \
    --test-split "$BENCH/llava_vqav2_mscoco_test2015.jsonl" \
    --question-file "$BENCH/$SPLIT.jsonl" \
    --dst "$UPLOAD"
echo "VQAv2: upload $UPLOAD to EvalAI (test-dev), then record the score with:"
echo "  $PYTHON -m llava.eval.scoring_utils --benchmark vqav2 --score <acc> --result-file $DIR/merge.jsonl --score-file $DIR/score_vqav2.json"
