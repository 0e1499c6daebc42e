#!/usr/bin/env bash
# GQA testdev-balanced: generate, then exact-match accuracy (also writes the official predictions file).
# Usage: [METHOD=globalcom2 RATIO=0.25 MODEL_PATH=... CKPT=... GPULIST=0,1] bash scripts/v1_5/eval/gqa.sh
# Environment: see _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

SPLIT=${SPLIT:-llava_gqa_testdev_balanced}
BENCH=$DATA/gqa
DIR=$BENCH/answers/$SPLIT/$TAG

generate llava.eval.model_vqa_loader "$DIR" \
    --question-file "$BENCH/$SPLIT.jsonl" \
    --image-folder "$BENCH/data/images"

"$PYTHON" -m llava.eval.eval_gqa \
    --questions "$BENCH/data/testdev_balanced_questions.json" \
    --predictions "$DIR/merge.jsonl" \
    --convert "$DIR/testdev_balanced_predictions.json" \
    --score-file "$DIR/score_gqa.json"
