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
# Modes (utils/evaluation/modes.py, the table results.md and compare.md name them by): text (text prompts only,
# --visual none), mutual (visual map alone, zero-shot: the other test images of the category), text+mutual (the
# two fused, --visual_weight default), fewshot (the visual map against normal train images, fused with the text
# map; one run per seed of SHOT_SEEDS and their mean).
# Environment: DATASETS (default "mvtec visa"; any names that have a configs/<name>.yaml), MODES (default
# "text"), OUTPUT_ROOT (default: the declared output_dir; runs land in $OUTPUT_ROOT/<mode>/<dataset>/results.md,
# few-shot seeds in its seed_<s>/, the comparison, a block per dataset, in $OUTPUT_ROOT/compare.md), NPROC
# (processes, one per GPU, under torchrun; default 1), PYTHON (default python), META_JSON_DIRS (for DATASETS
# meta_json: the folders holding a meta.json, one run each into $OUTPUT_ROOT/<mode>/<folder name>, or
# <folder name>_meta_json for a folder named like a dataset; default DATASET_PATH). Passed to scripts/test.py only
# when set (else the config decides): MODEL_PATH, DATASET_PATH, CHECKPOINT (trained embeddings from train.sh),
# SHOTS, SHOT_SEEDS ("0 1 2"). Extra arguments are passed to scripts/test.py. Reruns resume.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python}"
DATASETS="${DATASETS:-mvtec visa}"
MODES="${MODES:-text}"
NPROC="${NPROC:-1}"
if ! [[ "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: NPROC '$NPROC' is not a number of processes: use 1, or the number of GPUs" >&2
  exit 2
fi
OUTPUT_ROOT="${OUTPUT_ROOT:-$("$PYTHON" -m utils.evaluation.modes root)}"
if [ "$NPROC" -gt 1 ]; then  # one process per GPU, launched by torchrun (utils/distributed.py)
  LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC")
else
  LAUNCH=("$PYTHON")
fi
seeds="$(echo ${SHOT_SEEDS:-} | tr ' ' ',')"

evaluate() {  # evaluate DATASET OUTPUT_DIR [test.py flags...]
  local dataset="$1" out="$2"
  shift 2
  "${LAUNCH[@]}" scripts/test.py --config "configs/$dataset.yaml" --output_dir "$out" \
    ${MODEL_PATH:+--model_path "$MODEL_PATH"} ${DATASET_PATH:+--dataset_path "$DATASET_PATH"} \
    ${CHECKPOINT:+--checkpoint "$CHECKPOINT"} "$@"
}

for dataset in $DATASETS; do  # every name checked before the first (long) run starts
  if [ "$dataset" = config ] || [ ! -f "configs/$dataset.yaml" ]; then
    known="$(cd configs && ls *.yaml | grep -v '^config.yaml$' | sed 's/\.yaml$//' | tr '\n' ' ')"
    echo "error: unknown dataset '$dataset' in DATASETS: use any of ${known% }" >&2
    exit 2
  fi
  if [ "$dataset" = meta_json ] && [ -z "${META_JSON_DIRS:-${DATASET_PATH:-}}" ]; then
    echo "error: DATASETS meta_json needs META_JSON_DIRS (folders holding a meta.json) or DATASET_PATH" >&2
    exit 2
  fi
done
# shellcheck disable=SC2086  # MODES is a word list on purpose
"$PYTHON" -m utils.evaluation.modes flags $MODES >/dev/null  # an unknown mode: one line, exit 2

for mode in $MODES; do
  read -ra flags <<<"$("$PYTHON" -m utils.evaluation.modes flags "$mode")"
  if [ "$mode" = fewshot ]; then  # one run per seed in $out/seed_<s>/, their mean in $out
    flags+=(${SHOTS:+--shots "$SHOTS"} ${seeds:+--shot_seeds "$seeds"})
  fi
  for dataset in $DATASETS; do
    if [ "$dataset" = meta_json ]; then  # one run per meta.json folder, named after the folder
      for dir in ${META_JSON_DIRS:-$DATASET_PATH}; do
        name="$(basename "${dir%/meta.json}")"
        [ -f "configs/$name.yaml" ] && name="${name}_meta_json"  # never the folder of a native run
        echo "== $mode on $name =="
        DATASET_PATH="$dir" evaluate meta_json "$OUTPUT_ROOT/$mode/$name" "${flags[@]}" "$@"
      done
      continue
    fi
    echo "== $mode on $dataset =="
    evaluate "$dataset" "$OUTPUT_ROOT/$mode/$dataset" "${flags[@]}" "$@"
  done
done
"$PYTHON" -m utils.evaluation.compare "$OUTPUT_ROOT"
