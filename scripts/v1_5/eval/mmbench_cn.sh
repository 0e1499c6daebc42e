#!/usr/bin/env bash
# MMBench-CN (dev): generate letter answers (Chinese instruction), then CircularEval accuracy + submission xlsx.
# Usage: [METHOD=globalcom2 RATIO=0.25 MODEL_PATH=... CKPT=... SPLIT=mmbench_dev_cn_20231003] bash scripts/v1_5/eval/mmbench_cn.sh
# Environment: see _common.sh. The same pipeline as mmbench.sh, in Chinese.
set -euo pipefail
MMBENCH_LANG=cn exec bash "$(dirname "${BASH_SOURCE[0]}")/mmbench.sh"
