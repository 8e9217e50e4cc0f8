#!/usr/bin/env bash
# Evaluation of SAM 3 on the benchmarks (configs/<dataset>.yaml: mvtec visa mvtec_ad2 mvtec_loco mpdd btad
# ksdd2 real_iad; layouts and protocols in docs/datasets.md), one run per mode and dataset.
#
#   bash test.sh                                   # text only, both datasets
#   MODES="text mutual text+mutual fewshot" SHOT_SEEDS="0 1 2" bash test.sh
#   MODEL_PATH=/data/sam3 DATASET_PATH=/data/datasets DATASETS=visa bash test.sh --visualize
#   DATASETS="mvtec_loco mpdd btad" bash test.sh
#   DATASETS=meta_json META_JSON_DIRS="/data/CVC-ColonDB /data/ISIC /data/mvtec" bash test.sh
#
# Modes: text (text prompts only, --visual none), mutual (visual map alone, zero-shot: the other test images
# of the category), text+mutual (the two fused, --visual_weight default), fewshot (the visual map against
# SHOTS normal train images, fused with the text map), one run per seed of SHOT_SEEDS (--shot_seeds) and
# their mean.
# Environment: MODEL_PATH (default ~/autodl-tmp/download/sam3), DATASET_PATH (default: dataset_dir.txt),
# OUTPUT_ROOT (default results; runs land in $OUTPUT_ROOT/<mode>/<dataset>/results.md, few-shot seeds in
# its seed_<s>/, and the comparison, a block per dataset, in $OUTPUT_ROOT/compare.md), DATASETS (default
# "mvtec visa"; any names that have a configs/<name>.yaml), META_JSON_DIRS (for DATASETS meta_json: the folders
# holding a meta.json, one run each into $OUTPUT_ROOT/<mode>/<folder name>, <folder name>_meta_json for a folder
# named like a dataset; default DATASET_PATH),
# MODES (default "text"), SHOTS (default 4), SHOT_SEEDS (default "0"), NPROC (processes, one per GPU, under torchrun; default 1),
# CHECKPOINT (trained embeddings from train.sh; empty = zero-shot), PYTHON (default python). Extra arguments are passed to scripts/test.py. Reruns resume.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python}"
MODEL_PATH="${MODEL_PATH:-$HOME/autodl-tmp/download/sam3}"
OUTPUT_ROOT="${OUTPUT_ROOT:-results}"
DATASETS="${DATASETS:-mvtec visa}"
MODES="${MODES:-text}"
SHOTS="${SHOTS:-4}"
SHOT_SEEDS="${SHOT_SEEDS:-0}"
NPROC="${NPROC:-1}"
if [ "$NPROC" -gt 1 ]; then  # one process per GPU, launched by torchrun (utils/distributed.py)
  LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC")
else
  LAUNCH=("$PYTHON")
fi

evaluate() {  # evaluate DATASET OUTPUT_DIR [test.py flags...]
  local dataset="$1" out="$2"
  shift 2
  "${LAUNCH[@]}" scripts/test.py --config "configs/$dataset.yaml" --model_path "$MODEL_PATH" \
    --output_dir "$out" ${DATASET_PATH:+--dataset_path "$DATASET_PATH"} \
    ${CHECKPOINT:+--checkpoint "$CHECKPOINT"} "$@"
}

for dataset in $DATASETS; do  # every name checked before the first (long) run starts
  if [ ! -f "configs/$dataset.yaml" ]; then
    known="$(cd configs && ls *.yaml | grep -v '^config.yaml$' | sed 's/\.yaml$//' | tr '\n' ' ')"
    echo "error: unknown dataset '$dataset' in DATASETS: use any of ${known% }" >&2
    exit 2
  fi
  if [ "$dataset" = meta_json ] && [ -z "${META_JSON_DIRS:-${DATASET_PATH:-}}" ]; then
    echo "error: DATASETS meta_json needs META_JSON_DIRS (folders holding a meta.json) or DATASET_PATH" >&2
    exit 2
  fi
done

run_mode() {  # run_mode MODE DATASET OUTPUT_DIR [test.py flags...]
  local mode="$1" dataset="$2" out="$3"
  shift 3
  echo "== $mode on $(basename "$out") =="
  case "$mode" in
    text) evaluate "$dataset" "$out" --visual none "$@" ;;
    mutual) evaluate "$dataset" "$out" --visual mutual --visual_weight 1 "$@" ;;
    text+mutual) evaluate "$dataset" "$out" --visual mutual "$@" ;;
    fewshot)  # one run per seed in $out/seed_<s>/, their mean in $out
      seeds="$(echo $SHOT_SEEDS | tr ' ' ',')"
      evaluate "$dataset" "$out" --visual fewshot --shots "$SHOTS" --shot_seeds "$seeds" "$@" ;;
    *) echo "error: unknown mode '$mode' in MODES: use text, mutual, text+mutual or fewshot" >&2; exit 2 ;;
  esac
}

for mode in $MODES; do
  for dataset in $DATASETS; do
    if [ "$dataset" = meta_json ]; then  # one run per meta.json folder, named after the folder
      for dir in ${META_JSON_DIRS:-$DATASET_PATH}; do
        name="$(basename "${dir%/meta.json}")"
        [ -f "configs/$name.yaml" ] && name="${name}_meta_json"  # never the folder of a native run
        DATASET_PATH="$dir" run_mode "$mode" meta_json "$OUTPUT_ROOT/$mode/$name" "$@"
      done
    else
      run_mode "$mode" "$dataset" "$OUTPUT_ROOT/$mode/$dataset" "$@"
    fi
  done
done
"$PYTHON" -m utils.evaluation.compare "$OUTPUT_ROOT"
