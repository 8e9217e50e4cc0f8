#!/usr/bin/env bash
# Zero-shot evaluation of SAM 3 on MVTec AD and VisA (configs/mvtec.yaml, configs/visa.yaml).
#
#   bash test.sh                                   # both datasets, defaults below
#   MODEL_PATH=/data/sam3 DATASET_PATH=/data/datasets DATASETS=visa bash test.sh --visualize
#
# Environment: MODEL_PATH (default ~/autodl-tmp/download/sam3), DATASET_PATH (default: dataset_dir.txt),
# OUTPUT_ROOT (default results; results land in $OUTPUT_ROOT/<dataset>/results.md), DATASETS (default
# "mvtec visa"), CHECKPOINT (trained embeddings from train.sh; empty = zero-shot), PYTHON (default python).
# Extra arguments are passed to scripts/test.py. Reruns resume where they stopped.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python}"
MODEL_PATH="${MODEL_PATH:-$HOME/autodl-tmp/download/sam3}"
OUTPUT_ROOT="${OUTPUT_ROOT:-results}"
DATASETS="${DATASETS:-mvtec visa}"
for dataset in $DATASETS; do
  echo "== zero-shot test on $dataset =="
  "$PYTHON" scripts/test.py --config "configs/$dataset.yaml" --model_path "$MODEL_PATH" \
    --output_dir "$OUTPUT_ROOT/$dataset" ${DATASET_PATH:+--dataset_path "$DATASET_PATH"} \
    ${CHECKPOINT:+--checkpoint "$CHECKPOINT"} "$@"
done
