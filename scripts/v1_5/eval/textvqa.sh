#!/usr/bin/env bash
# TextVQA val: generate (prompts keep the "Reference OCR token" line; EXTRA_ARGS=--drop-ocr-line
# reproduces the released GlobalCom² loader), then VQA soft accuracy.
# Usage: [METHOD=globalcom2 RATIO=0.25 MODEL_PATH=... CKPT=...] bash scripts/v1_5/eval/textvqa.sh
# Environment: see _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

BENCH=$DATA/textvqa
DIR=$BENCH/answers/$TAG

generate llava.eval.model_vqa_loader "$DIR" \
    --question-file "$BENCH/llava_textvqa_val_v051_ocr.jsonl" \
    --image-folder "$BENCH/train_images"

"$PYTHON" -m llava.eval.eval_textvqa \
    --annotation-file "$BENCH/TextVQA_0.5.1_val.json" \
    --result-file "$DIR/merge.jsonl" \
    --score-file "$DIR/score_textvqa.json"
