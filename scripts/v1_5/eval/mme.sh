#!/usr/bin/env bash
# MME: generate yes/no answers, then the perception score (also writes eval_tool-format results).
# Usage: [METHOD=globalcom2 RATIO=0.25 MODEL_PATH=... CKPT=... MME_GT_DIR=...] bash scripts/v1_5/eval/mme.sh
# Environment: see _common.sh; MME_GT_DIR = ground truth (default $DATA/MME/eval_tool/Your_Results).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

BENCH=$DATA/MME
DIR=$BENCH/answers/$TAG
MME_GT_DIR=${MME_GT_DIR:-$BENCH/eval_tool/Your_Results}

generate llava.eval.model_vqa_loader "$DIR" \
    --question-file "$BENCH/llava_mme.jsonl" \
    --image-folder "$BENCH/MME_Benchmark_release_version"

"$PYTHON" -m llava.eval.eval_mme \
    --gt-dir "$MME_GT_DIR" \
    --question-file "$BENCH/llava_mme.jsonl" \
    --result-file "$DIR/merge.jsonl" \
    --write-results-dir "$BENCH/eval_tool/answers/$TAG" \
    --score-file "$DIR/score_mme.json"
