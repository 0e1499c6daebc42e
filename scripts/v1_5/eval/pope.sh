#!/usr/bin/env bash
# POPE (adversarial / random / popular): generate yes/no answers, then F1 per split and their mean.
# Usage: [METHOD=globalcom2 RATIO=0.25 MODEL_PATH=... CKPT=...] bash scripts/v1_5/eval/pope.sh
# Environment: see _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

BENCH=$DATA/pope
DIR=$BENCH/answers/$TAG

generate llava.eval.model_vqa_loader "$DIR" \
    --question-file "$BENCH/llava_pope_test.jsonl" \
    --image-folder "$BENCH/val2014"

"$PYTHON" -m llava.eval.eval_pope \
    --annotation-dir "$BENCH/coco" \
    --question-file "$BENCH/llava_pope_test.jsonl" \
    --result-file "$DIR/merge.jsonl" \
    --score-file "$DIR/score_pope.json"
