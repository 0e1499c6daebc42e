#!/usr/bin/env bash
# MMBench (dev, English): generate letter answers, then CircularEval accuracy + submission xlsx.
# The dev TSV already holds the rotated copies of each question; EXTRA_ARGS=--all-rounds rotates in-process instead.
# Usage: [METHOD=globalcom2 RATIO=0.25 MODEL_PATH=... CKPT=... SPLIT=mmbench_dev_20230712] bash scripts/v1_5/eval/mmbench.sh
# Environment: see _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

SPLIT=${SPLIT:-mmbench_dev_20230712}
BENCH=$DATA/mmbench
DIR=$BENCH/answers/$SPLIT/$TAG

generate llava.eval.model_vqa_mmbench "$DIR" \
    --question-file "$BENCH/$SPLIT.tsv" \
    --single-pred-prompt --lang en

"$PYTHON" -m llava.eval.eval_mmbench \
    --annotation-file "$BENCH/$SPLIT.tsv" \
    --result-file "$DIR/merge.jsonl" \
    --lang en \
    --upload-xlsx "$BENCH/answers_upload/$SPLIT/$TAG.xlsx" \
    --score-file "$DIR/score_mmbench.json"
