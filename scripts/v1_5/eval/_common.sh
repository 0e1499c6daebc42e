# Sourced by the benchmark scripts in this folder; not run on its own.
#
# Environment (all optional):
#   CKPT        run/model name recorded in the answers        (llava-v1.6-vicuna-7b)
#   MODEL_PATH  local checkpoint folder                       (liuhaotian/$CKPT)
#   METHOD      compression method, or "none" = uncompressed  (globalcom2); any name the drivers'
#               --compression accepts (globalcom2 fastervlm visionzip hired prumerge prumerge_plus ...),
#               passed through as is
#   RATIO       retention ratio R (ignored for METHOD=none)   (0.25); set but empty (RATIO=): no
#               --retention-ratio, for a method without one (pdrop: its own staged ratios)
#   DATA        evaluation data root                          (./playground/data/eval)
#   PYTHON      interpreter                                   (python)
#   CONV_MODE   conversation template                         (vicuna_v1)
#   TAG         answers sub-folder name                       ($CKPT-$METHOD-r$RATIO, $CKPT-$METHOD, or $CKPT-none)
#   EXTRA_ARGS  extra generation flags, space-separated (e.g. "--batch-size 4 --max-new-tokens 16"), and
#               the method's options (e.g. "--merge mean" for visionzip); a run with other options
#               needs its own TAG (a folder holds one run: a differing config.json is refused)
#   GPULIST     comma-separated GPU ids, one chunk per id     ($CUDA_VISIBLE_DEVICES)
#   CHUNKS      number of chunks (processes) to shard the questions into (number of GPUs in GPULIST, or 1)
#   NPROC       >1: run each chunk data-parallel under torch.distributed.run with NPROC processes
#
# Answers go to $DATA/<bench>/answers/[<split>/]$TAG/merge.jsonl, with config.json (the run's
# checkpoint identity + compression config, read by the scorers and llava.eval.summarize) and the
# score record score_<bench>.json next to them. Re-running resumes; a re-run whose checkpoint or
# settings differ from that folder's config.json stops with "error: ..." (exit code 2) before
# generating or scoring: give each checkpoint its own CKPT (or TAG).

CKPT=${CKPT:-llava-v1.6-vicuna-7b}
MODEL_PATH=${MODEL_PATH:-liuhaotian/$CKPT}
METHOD=${METHOD:-globalcom2}
RATIO=${RATIO-0.25}
DATA=${DATA:-./playground/data/eval}
PYTHON=${PYTHON:-python}
CONV_MODE=${CONV_MODE:-vicuna_v1}
EXTRA_ARGS=${EXTRA_ARGS:-}
NPROC=${NPROC:-1}
GPULIST=${GPULIST:-${CUDA_VISIBLE_DEVICES:-}}

if [ -n "$GPULIST" ]; then
    IFS=',' read -ra GPUS <<< "$GPULIST"
else
    GPUS=()
fi
CHUNKS=${CHUNKS:-$(( ${#GPUS[@]} > 0 ? ${#GPUS[@]} : 1 ))}

if [ "$METHOD" = "none" ]; then
    COMPRESSION_ARGS=(--compression none)
    TAG=${TAG:-$CKPT-none}
    SCORE_RATIO=1.0
elif [ -z "$RATIO" ]; then  # the method's own settings (no retention ratio)
    COMPRESSION_ARGS=(--compression "$METHOD")
    TAG=${TAG:-$CKPT-$METHOD}
    SCORE_RATIO=
else
    COMPRESSION_ARGS=(--compression "$METHOD" --retention-ratio "$RATIO")
    TAG=${TAG:-$CKPT-$METHOD-r$RATIO}
    SCORE_RATIO=$RATIO
fi
read -ra EXTRA <<< "$EXTRA_ARGS"

# Run one generation driver (python module) as a single process, or as one process per chunk
# (one GPU each) whose answers are concatenated in chunk order (a chunk beyond the number of
# questions is an empty file). Resumable: re-running the script skips the questions already
# answered and asks the error entries again.
#   generate MODULE ANSWERS_DIR [driver flags...]   -> ANSWERS_DIR/merge.jsonl
generate() {
    local module=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    local args=(--model-path "$MODEL_PATH" --model-name "$CKPT" --conv-mode "$CONV_MODE" --temperature 0
                "${COMPRESSION_ARGS[@]}" "$@" ${EXTRA[@]+"${EXTRA[@]}"})
    if [ "$CHUNKS" -le 1 ]; then
        _launch "$module" "${args[@]}" --answers-file "$dir/merge.jsonl"
        return
    fi
    local pids=() idx status=0
    for idx in $(seq 0 $((CHUNKS - 1))); do
        if [ ${#GPUS[@]} -gt 0 ]; then
            CUDA_VISIBLE_DEVICES=${GPUS[$((idx % ${#GPUS[@]}))]} _launch "$module" "${args[@]}" \
                --num-chunks "$CHUNKS" --chunk-idx "$idx" --answers-file "$dir/${CHUNKS}_${idx}.jsonl" &
        else
            _launch "$module" "${args[@]}" \
                --num-chunks "$CHUNKS" --chunk-idx "$idx" --answers-file "$dir/${CHUNKS}_${idx}.jsonl" &
        fi
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || status=1
    done
    if [ "$status" -ne 0 ]; then
        echo "error: a generation chunk failed; re-run the script to resume" >&2
        return 1
    fi
    : > "$dir/merge.jsonl.tmp"
    for idx in $(seq 0 $((CHUNKS - 1))); do
        cat "$dir/${CHUNKS}_${idx}.jsonl" >> "$dir/merge.jsonl.tmp"
    done
    mv "$dir/merge.jsonl.tmp" "$dir/merge.jsonl"
}

_launch() {
    local module=$1
    shift
    if [ "$NPROC" -gt 1 ]; then
        "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m "$module" "$@"
    else
        "$PYTHON" -m "$module" "$@"
    fi
}

# Flags that tell a scorer the run's method / ratio / model explicitly (for scorers whose result
# file is not next to config.json).
SCORE_META_ARGS=(--method "$METHOD" --model-name "$CKPT")
if [ -n "$SCORE_RATIO" ]; then
    SCORE_META_ARGS+=(--retention-ratio "$SCORE_RATIO")
fi
