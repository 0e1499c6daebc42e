#!/usr/bin/env bash
# MMBench (dev, English): generate letter answers, then CircularEval accuracy + submission xlsx.
# The dev TSV already holds the rotated copies of each question; EXTRA_ARGS=--all-rounds rotates in-process instead.
# Usage: [METHOD=globalcom2 RATIO=0.25 MODEL_PATH=... CKPT=... SPLIT=mmbench_dev_20230712] bash scripts/v1_5/eval/mmbench.sh
# Environment: see _common.sh. MMBENCH_LANG=cn (set by mmbench_cn.sh) runs MMBench-CN.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

MMBENCH_LANG=${MMBENCH_LANG:-en}
if [ "$MMBENCH_LANG" = "cn" ]; then
    SPLIT=${SPLIT:-mmbench_dev_cn_20231003}
    SCORE_NAME=mmbench_cn
else
    SPLIT=${SPLIT:-mmbench_dev_20230712}
    SCORE_NAME=mmbench
fi
BENCH=$DATA/mmbench
DIR=$BENCH/answers/$SPLIT/$TAG

generate llava.eval.model_vqa_mmbench "$DIR" \
    --question-file "$BENCH/$SPLIT.tsv" \
    --single-pred-prompt --lang "$MMBENCH_LANG"

"$PYTHON" -m llava.eval.eval_mmbench \
    --annotation-file "$BENCH/$SPLIT.tsv" \
    --result-file "$DIR/merge.jsonl" \
    --lang "$MMBENCH_LANG" \
    --upload-xlsx "$BENCH/answers_upload/$SPLIT/$TAG.xlsx" \
    --score-file "$DIR/score_$SCORE_NAME.json"
