#!/usr/bin/env bash
# The bundled default model, from the images and the caption text, with each stage's wall clock
# (runs/stages.txt):
#   0. the Flickr8k model (scripts/reproduce_flickr8k.sh: features, cross-entropy, two
#      self-critical runs averaged) unless runs/bundle already holds it
#   1. encoder features of the 409 COCO training photos, of their mirror images, and of COCO dev
#   2. cross-entropy fine-tuning of the Flickr8k model on Flickr8k's 6,000 training photos, the
#      409 COCO photos (each drawn 3 times an epoch) and, beside every batch of 32 photos, 16
#      groups of COCO captions without photos (an all-zero feature grid). Its vocabulary grows by
#      the words seen 5 times in all of them (--grow-vocab: 2,539 -> 4,517 words; the known
#      words keep their rows). 2 epochs from 5e-4, cosine decay; dev CIDEr-D picks the epoch
#   3. self-critical training from it on the same photos (CIDEr-D with each source's own
#      document frequencies, the ending scored, 5 samples per image, mirrors), twice: 3 epochs
#      at a constant 2e-4, and 3 epochs decaying from 2e-4 to 2e-5
#   4. the model: the mean of the two self-critical models' weights (matrices stored as int8),
#      with its decoding settings
#   5. the decoding ablation on Flickr8k dev and COCO dev, then the scores on Flickr8k test and
#      COCO dev with the model's own settings
# Usage: scripts/reproduce_default.sh [DATA_DIR (holding flickr8k, coco_train409, coco_text, coco_dev)]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_mixed_data.sh "${1:-}"  # DATA, F8K, COCO409, TEXT, COCO, BIN, DECODING
start=$(date +%s)
if [ ! -f runs/bundle/model.safetensors ]; then
    scripts/reproduce_flickr8k.sh "$F8K" "$COCO"
fi
mkdir -p runs/eval
stage() { echo "== $1: $(( $(date +%s) - t0 )) s" | tee -a runs/stages.txt; t0=$(date +%s); }
t0=$(date +%s)

ENC=(--encoder efficientnet_lite0 --out cache/features --quiet)
$BIN/rnncap features --data "$COCO409" --format coco --split train "${ENC[@]}"
$BIN/rnncap features --data "$COCO409" --format coco --split train --mirrored "${ENC[@]}"
$BIN/rnncap features --data "$COCO" --format coco --split dev "${ENC[@]}"
stage "COCO features"

MIX=(--data "$F8K" --features cache/features --extra-data "coco:$COCO409@3" --mirror 0.5
     --max-caption-words 16 --no-progress)
$BIN/rnncap train --init runs/bundle --grow-vocab --out runs/everyday-ce "${MIX[@]}" \
    --text-data "$TEXT" --text-ratio 0.5 --seed 0 --epochs 2 --lr 5e-4 --warmup-steps 0 \
    --min-lr-ratio 0.1 --patience 2
stage "cross-entropy fine-tuning"

SCST=(--objective scst --init runs/everyday-ce/best "${MIX[@]}" --epochs 3 --patience 2
      --lr 2e-4 --warmup-steps 0 --weight-decay 0 --samples-per-image 5 --reward-end)
$BIN/rnncap train "${SCST[@]}" --out runs/everyday-scst --seed 0 --min-lr-ratio 1
stage "self-critical training"
$BIN/rnncap train "${SCST[@]}" --out runs/everyday-scst-cosine --seed 1 --min-lr-ratio 0.1
stage "self-critical training, cosine decay"

$BIN/python scripts/bundle_model.py runs/everyday-scst/best runs/everyday-scst-cosine/best \
    runs/everyday --decoding "$DECODING"
stage bundle

SETS=(--set "flickr8k:$F8K:dev" --set "coco:$COCO:dev")
GRID=$($BIN/python -c 'import json, sys; d = json.loads(sys.argv[1])
print(json.dumps([{**d, "guidance": g} for g in (0.0, 3.0, 6.0)]))' "$DECODING")
$BIN/python scripts/decoding_ablation.py --model runs/everyday-ce/best \
    --model runs/everyday-scst/best --model runs/everyday --features cache/features "${SETS[@]}" \
    --grid "$GRID" | tee runs/eval/everyday-ablation.jsonl
$BIN/rnncap evaluate --model runs/everyday --data "$F8K" --split test --features cache/features \
    --json runs/eval/everyday-flickr8k-test.json
$BIN/rnncap evaluate --model runs/everyday --data "$COCO" --format coco --split dev \
    --features cache/features --json runs/eval/everyday-coco-dev.json
stage evaluation
echo "pipeline wall-clock: $(( $(date +%s) - start )) s (stages in runs/stages.txt)"
echo "to make it the default model: cp runs/everyday/* src/rnncap/assets/default/"
