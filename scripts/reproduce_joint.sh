#!/usr/bin/env bash
# The jointly trained model of the results page ("Everyday text", rows 26-30): Flickr8k, 409 COCO
# photos and COCO's caption text. Not the default model (it trades Flickr8k test CIDEr 0.608 for
# 0.515 against COCO dev 0.424 -> 0.600). The stages, with their wall clock (runs/stages.txt):
#   1. encoder features (EfficientNet-Lite0, float16) of Flickr8k, of the 409 COCO training
#      photos and of COCO dev, and of the mirror images of both training sets
#   2. cross-entropy training of the attention LSTM on Flickr8k's 6,000 training photos, the 409
#      COCO photos (each drawn 3 times an epoch) and, beside every batch of 32 photos, 16 groups
#      of COCO captions without photos (an all-zero feature grid); the vocabulary is every word
#      seen 5 times in all of them. One epoch at the peak learning rate, then 4 epochs of cosine
#      decay from it (dev CIDEr-D picks the best epoch)
#   3. self-critical training from it on the same photos (CIDEr-D with each source's own
#      document frequencies, a reward that also scores the ending, 5 samples per image, mirrors),
#      3 epochs at a constant learning rate
#   4. two word-level language models with the model's vocabulary: COCO's caption text (the
#      target) and Flickr8k's training captions (the source), fused at decoding time
#   5. the model folder: int8 matrices, the language models, the default's decoding settings
#   6. the decoding ablation on Flickr8k dev and COCO dev (rows 28-30), then the scores on
#      Flickr8k test and COCO dev
# Usage: scripts/reproduce_joint.sh [DATA_DIR (holding flickr8k, coco_train409, coco_text, coco_dev)]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_mixed_data.sh "${1:-}"  # DATA, F8K, COCO409, TEXT, COCO, BIN, DECODING
# the default model's decoding settings (DECODING), and rows 29 and 30's variations of them
GRID=$($BIN/python -c 'import json, sys; d = json.loads(sys.argv[1])
print(json.dumps([d, {**d, "guidance": 6.0}, {**d, "lm_weight": 0.2, "source_lm_weight": 0.2}]))' "$DECODING")
mkdir -p runs/eval
stage() { echo "== $1: $(( $(date +%s) - t0 )) s" | tee -a runs/stages.txt; t0=$(date +%s); }
t0=$(date +%s); start=$t0

ENC=(--encoder efficientnet_lite0 --out cache/features --quiet)
$BIN/rnncap features --data "$F8K" --format flickr8k --split all "${ENC[@]}"
$BIN/rnncap features --data "$F8K" --format flickr8k --split train --mirrored "${ENC[@]}"
$BIN/rnncap features --data "$COCO409" --format coco --split train "${ENC[@]}"
$BIN/rnncap features --data "$COCO409" --format coco --split train --mirrored "${ENC[@]}"
$BIN/rnncap features --data "$COCO" --format coco --split dev "${ENC[@]}"
stage features

MIX=(--data "$F8K" --features cache/features --extra-data "coco:$COCO409@3" --mirror 0.5
     --max-caption-words 16)
# the first epoch of a 10-epoch schedule (warm-up, then cosine decay that has barely begun: the
# same learning rate to 0.04%), then 4 epochs of cosine decay from that model
$BIN/rnncap train --cell-type attn --out runs/joint-1 "${MIX[@]}" --text-data "$TEXT" \
    --text-ratio 0.5 --dropout 0.5 --seed 0 --epochs 1 --min-lr-ratio 1 --no-progress
$BIN/rnncap train --init runs/joint-1/last --out runs/joint "${MIX[@]}" --text-data "$TEXT" \
    --text-ratio 0.5 --seed 1 --epochs 4 --warmup-steps 0 --patience 3 --no-progress
stage "cross-entropy training"

$BIN/rnncap train --objective scst --init runs/joint/best --out runs/scst-joint "${MIX[@]}" \
    --seed 0 --epochs 3 --patience 2 --lr 2e-4 --warmup-steps 0 --min-lr-ratio 1 \
    --weight-decay 0 --samples-per-image 5 --reward-end --no-progress
stage "self-critical training"

LM=(--vocab runs/joint/best/vocab.json --epochs 3 --embed 128 --hidden 256 --dropout 0.2
    --sample 3 --no-progress)
$BIN/rnncap lm --text "$TEXT" --out runs/lm-coco "${LM[@]}"
$BIN/rnncap lm --data "$F8K" --out runs/lm-flickr "${LM[@]}"
stage "language models"

$BIN/python scripts/bundle_model.py runs/scst-joint/best runs/bundle --decoding "$DECODING" \
    --lm runs/lm-coco --source-lm runs/lm-flickr
stage bundle

SETS=(--set "flickr8k:$F8K:dev" --set "coco:$COCO:dev")
$BIN/python scripts/decoding_ablation.py --model runs/bundle --features cache/features \
    "${SETS[@]}" --grid "$GRID" | tee runs/eval/ablation.jsonl
$BIN/rnncap evaluate --model runs/bundle --data "$F8K" --split test --features cache/features \
    --json runs/eval/flickr8k-test.json
$BIN/rnncap evaluate --model runs/bundle --data "$COCO" --format coco --split dev \
    --features cache/features --json runs/eval/coco-dev.json
stage evaluation
echo "pipeline wall-clock: $(( $(date +%s) - start )) s (stages in runs/stages.txt)"
