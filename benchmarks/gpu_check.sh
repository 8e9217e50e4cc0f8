#!/usr/bin/env bash
# The checks that need a GPU, in one command, with one summary table at the end:
#
#     bash benchmarks/gpu_check.sh            # OUT=/path/to/keep/logs  META_DIR=.../sam3  PYTHON=python
#
# DEVICE=cpu runs the same steps on the CPU (gloo instead of nccl; a smoke test of this script only).
#
# 1. bench_full_size: the real SAM 3 architecture with random weights, bf16 autocast on cuda, after one
#    warm-up pass: s/image, s/row and peak GPU memory (needs facebook/sam3's config.json + tokenizer in
#    META_DIR: the sam3_hf_meta folder beside the repository, else $MODEL_PATH, else the default download
#    folder ~/autodl-tmp/download/sam3; its weights are not read).
# 2. bench_visual: one image-vs-image pass at the real grid (old and new default) and the projected mutual time.
# 3. scripts/test.py on the tiny random SAM 3 and a synthetic MVTec-like set, --device cuda, in the text,
#    fewshot and mutual modes (pixel AUROC from results.json).
# 4. a 1-GPU torchrun of test.py (nccl backend), visual mutual (`$PYTHON -m torch.distributed.run`: the
#    torchrun of $PYTHON's environment, not whichever is first on PATH).
# Each step's output is in $OUT/<step>.log; a failed step is reported and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$OUT"
if [[ -z "${META_DIR:-}" ]]; then
    for dir in {,../}shared/data/sam3_hf_meta "${MODEL_PATH:-}" "$HOME/autodl-tmp/download/sam3"; do
        [[ -f "$dir/config.json" ]] && META_DIR=$dir && break
    done
fi
SUMMARY=()

step() {  # step NAME FIGURE_COMMAND -- COMMAND...: run COMMAND into $OUT/NAME.log, then FIGURE_COMMAND on it
    local name=$1 figure=$2
    shift 3
    local start=$SECONDS status=ok
    "$@" >"$OUT/$name.log" 2>&1 || status="FAILED ($?)"
    local took=$((SECONDS - start)) value
    value=$(eval "$figure" 2>/dev/null | tr '\n' ' ' | cut -c1-220)
    SUMMARY+=("$(printf '%-22s | %-11s | %5d s | %s' "$name" "$status" "$took" "$value")")
    echo "== $name: $status in ${took}s (log: $OUT/$name.log)"
}

auroc() {  # mean pixel AUROC over the categories of a results.json
    "$PYTHON" -c "import json,sys; c=json.load(open(sys.argv[1]))['categories']; \
print('pixel AUROC', ', '.join(f'{k} {v[\"pixel_auroc\"]:.3f}' for k, v in c.items()))" "$1"
}

if [[ $DEVICE == cuda* ]]; then
    "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible (DEVICE=cpu: smoke test)'; \
print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)" || exit 1
fi

if [[ -n "${META_DIR:-}" && $DEVICE == cuda* ]]; then
    # encode_images, predict, detect: s/image or s/row and the peak GPU memory so far; GPU memory per row
    figures='s/^(encode_images|predict|detect): [0-9.]+ s \(.*, ([0-9.]+ s\/(image|row))[,)].*(peak GPU)/\1 \2 \4/'
    figures+='; s/peak GPU memory growth during predict per prompt row:/GPU per row +/'
    step full_size_bf16 "grep -E '^(encode_images|predict|detect):|per prompt row' $OUT/full_size_bf16.log \
        | sed -E '$figures'" -- \
        "$PYTHON" benchmarks/bench_full_size.py --device "$DEVICE" --dtype bf16 --n_images 2 --n_prompts 4 \
        --chunk_size 4 --meta_dir "$META_DIR"
else
    SUMMARY+=("$(printf '%-22s | %-11s | %5s   | %s' full_size_bf16 skipped - 'needs cuda and a META_DIR with config.json')")
fi

step bench_visual "grep -E '^(old|new):|N= 500: few' $OUT/bench_visual.log \
    | sed -E 's/one image-vs-image pass ([0-9.]+ s).*/pair \1/; s/.*(N= 500).*mutual +([0-9]+ s).*/\1 mutual \2/'" -- \
    "$PYTHON" benchmarks/bench_visual.py --device "$DEVICE" --sizes 16,64 --real_pairs 5 --project 100,500

"$PYTHON" scripts/make_tiny_sam3.py "$OUT/tiny" >/dev/null
"$PYTHON" -c "from dataset.synthetic import make_mvtec_like; make_mvtec_like('$OUT/data/mvtec', \
categories=('bottle', 'wood'), n_train=6, n_good=4, n_defect=6, size=64, seed=0)"
TEST_ARGS=(--dataset mvtec --dataset_path "$OUT/data" --model_path "$OUT/tiny" --device "$DEVICE" --eval_size 64)
for mode in none fewshot mutual; do
    step "tiny_test_$mode" "auroc $OUT/tiny_$mode/results.json" -- \
        "$PYTHON" scripts/test.py "${TEST_ARGS[@]}" --visual "$mode" --output_dir "$OUT/tiny_$mode"
done
step torchrun_1gpu_mutual "auroc $OUT/torchrun/results.json" -- \
    "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 scripts/test.py "${TEST_ARGS[@]}" \
    --visual mutual --output_dir "$OUT/torchrun"

echo
printf '%-22s | %-11s | %7s | %s\n' step status time figures
printf '%s\n' "-----------------------+-------------+---------+------------------------------------------"
printf '%s\n' "${SUMMARY[@]}"
echo "logs: $OUT"
