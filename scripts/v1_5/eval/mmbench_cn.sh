#!/usr/bin/env bash
# MMBench-CN (dev): generate letter answers (Chinese instruction), then CircularEval accuracy + submission xlsx.
# Usage: [METHOD=globalcom2 RATIO=0.25 MODEL_PATH=... CKPT=... SPLIT=mmbench_dev_cn_20231003] bash scripts/v1_5/eval/mmbench_cn.sh
# Environment: see _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

SPLIT=${SPLIT:-mmbench_dev_cn_20231003}
BENCH=$DATA/mmbench
DIR=$BENCH/answers/$SPLIT/$TAG

generate llava.eval.model_vqa_mmbench "$DIR" \
    --question-file "$BENCH/$SPLIT.tsv" \
    --single-pred-prompt --lang cn

"$PYTHON" -m llava.eval.eval_mmbench \
    --annotation-file "$BENCH/$SPLIT.tsv" \
    --result-file "$DIR/merge.jsonl" \
    --lang cn \
    --upload-xlsx "$BENCH/answers_upload/$SPLIT/$TAG.xlsx" \
    --score-file "$DIR/score_mmbench_cn.json"
