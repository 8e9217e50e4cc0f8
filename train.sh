#!/usr/bin/env bash
# Cross-dataset fine-tuning: train concept embeddings on one dataset, test zero-shot on the other
# (MVTec AD -> VisA and VisA -> MVTec AD), as in AnomalyCLIP / APRIL-GAN.
#
#   bash train.sh
#   MODEL_PATH=/data/sam3 DATASET_PATH=/data/datasets DIRECTIONS="mvtec:visa" TRAIN_ARGS="--num_epochs 3" bash train.sh
#
# Environment: RUN_ROOT (checkpoints, default runs), OUTPUT_ROOT (test results, default: the declared
# output_dir), DIRECTIONS (default "mvtec:visa visa:mvtec"), TRAIN_ARGS / TEST_ARGS (extra flags for
# scripts/train.py / scripts/test.py), PYTHON (default python); MODEL_PATH and DATASET_PATH are passed only when
# set (else the config decides). Reruns resume from $RUN_ROOT/<dataset>/last.safetensors and from finished
# test categories.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python}"
RUN_ROOT="${RUN_ROOT:-runs}"
DIRECTIONS="${DIRECTIONS:-mvtec:visa visa:mvtec}"
known="$(cd configs && ls *.yaml | grep -v '^config.yaml$' | sed 's/\.yaml$//' | tr '\n' ' ')"
for direction in $DIRECTIONS; do  # bad directions and old checkpoints are refused before anything runs
  source_set="${direction%%:*}"
  target_set="${direction#*:}"
  if [[ "$direction" != *:* ]] || [ -z "$source_set" ] || [ -z "$target_set" ] || [[ "$target_set" == *:* ]]; then
    echo "error: DIRECTIONS entry '$direction' is not SOURCE:TARGET (e.g. mvtec:visa)" >&2
    exit 2
  fi
  if [ "$source_set" = "$target_set" ]; then  # the protocol tests zero-shot on a set not trained on
    echo "error: DIRECTIONS entry '$direction' tests on the set it trains on: use two datasets (e.g. mvtec:visa)" >&2
    exit 2
  fi
  for set in "$source_set" "$target_set"; do
    if [ "$set" = config ] || [ ! -f "configs/$set.yaml" ]; then
      echo "error: unknown dataset '$set' in DIRECTIONS: use any of ${known% }" >&2
      exit 2
    fi
  done
  run_dir="$RUN_ROOT/$source_set"
  if [ -f "$run_dir/last.pt" ] && [ ! -f "$run_dir/last.safetensors" ]; then
    echo "error: $run_dir/last.pt is an old checkpoint: convert it with" \
      "\`$PYTHON scripts/convert_checkpoint.py $run_dir/last.pt\`, then rerun" >&2
    exit 2
  fi
done
OUTPUT_ROOT="${OUTPUT_ROOT:-$("$PYTHON" -m utils.evaluation.modes root)}"
for direction in $DIRECTIONS; do
  source_set="${direction%%:*}"
  target_set="${direction##*:}"
  run_dir="$RUN_ROOT/$source_set"
  resume=()
  [ -f "$run_dir/last.safetensors" ] && resume=(--resume "$run_dir/last.safetensors")
  echo "== train on $source_set =="
  # shellcheck disable=SC2086  # TRAIN_ARGS / TEST_ARGS are word lists on purpose
  "$PYTHON" scripts/train.py --config "configs/$source_set.yaml" ${MODEL_PATH:+--model_path "$MODEL_PATH"} \
    --output_dir "$run_dir" ${DATASET_PATH:+--dataset_path "$DATASET_PATH"} "${resume[@]}" ${TRAIN_ARGS:-}
  echo "== test on $target_set with the $source_set checkpoint =="
  # shellcheck disable=SC2086
  "$PYTHON" scripts/test.py --config "configs/$target_set.yaml" ${MODEL_PATH:+--model_path "$MODEL_PATH"} \
    --checkpoint "$run_dir/last.safetensors" --output_dir "$OUTPUT_ROOT/${source_set}_to_${target_set}" \
    ${DATASET_PATH:+--dataset_path "$DATASET_PATH"} ${TEST_ARGS:-}
done
