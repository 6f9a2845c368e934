#!/usr/bin/env bash
# The whole Flickr8k pipeline behind the README's results and the bundled default model, with the
# wall clock of each stage:
#   1. encoder features of every image, cached once (EfficientNet-Lite0, float16), and of the
#      mirror images of the training split
#   2. cross-entropy training of the attention LSTM, each image seen mirrored half of the time
#      (dev CIDEr-D picks the best epoch)
#   3. self-critical sequence training from it, twice (CIDEr-D reward that also scores how a
#      caption ends, 5 samples per image, mirror images too): at a constant learning rate, and
#      with a cosine decay
#   4. the model: the mean of the two self-critical models' weights (matrices stored as int8),
#      with its decoding settings
#   5. the decoding ablation on Flickr8k dev and COCO dev (when ../shared/data/coco_dev exists)
#   6. the test scores with the model's own decoding settings
# Making the result the default model is one more command (printed at the end).
# Usage: scripts/reproduce_flickr8k.sh [FLICKR8K_DIR] [COCO_DEV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/flickr8k}
COCO=${2:-../shared/data/coco_dev}
BIN=.venv/bin
# beam 5, no word pair twice, classifier guidance 3.0, and no caption ending on a function word,
# a colour or another word that needs a noun after it
DECODING='{"beam_size": 5, "no_repeat_ngram": 2, "guidance": 3.0, "guidance_threshold": 0.3,
  "no_end_after": ["a", "an", "the", "of", "in", "on", "with", "and", "at", "to", "is", "are",
  "his", "her", "their", "its", "while", "near", "into", "through", "from", "by", "for", "some",
  "under", "over", "behind", "next", "as", "or", "red", "blue", "white", "black", "green",
  "yellow", "brown", "pink", "orange", "purple", "gray", "grey", "young", "little", "small",
  "large", "big", "two", "three"]}'
mkdir -p runs/eval
stage() { echo "== $1: $(( $(date +%s) - t0 )) s" | tee -a runs/stages.txt; t0=$(date +%s); }
t0=$(date +%s); start=$t0

$BIN/rnncap features --data "$DATA" --format flickr8k --split all \
    --encoder efficientnet_lite0 --out cache/features
$BIN/rnncap features --data "$DATA" --format flickr8k --split train \
    --encoder efficientnet_lite0 --out cache/features --mirrored
if [ -d "$COCO" ]; then
    $BIN/rnncap features --data "$COCO" --format coco --split dev \
        --encoder efficientnet_lite0 --out cache/features
fi
stage features

COMMON=(--data "$DATA" --features cache/features --max-caption-words 16 --seed 0)
$BIN/rnncap train --cell-type attn --out runs/attn "${COMMON[@]}" --epochs 10 --patience 3 \
    --dropout 0.5 --mirror 0.5
stage "cross-entropy training"

$BIN/rnncap train --objective scst --init runs/attn/best --out runs/scst "${COMMON[@]}" \
    --epochs 12 --patience 3 --lr 2e-4 --warmup-steps 0 --min-lr-ratio 1 --weight-decay 0 \
    --samples-per-image 5 --reward-end --mirror 0.5
stage "self-critical training"

$BIN/rnncap train --objective scst --init runs/attn/best --out runs/scst-cosine "${COMMON[@]}" \
    --epochs 10 --patience 4 --lr 2e-4 --warmup-steps 0 --min-lr-ratio 0.1 --weight-decay 0 \
    --samples-per-image 5 --reward-end --mirror 0.5
stage "self-critical training, cosine decay"

$BIN/python scripts/bundle_model.py runs/scst/best runs/scst-cosine/best runs/bundle \
    --decoding "$DECODING"
SETS=(--set "flickr8k:$DATA:dev")
[ -d "$COCO" ] && SETS+=(--set "coco:$COCO:dev")
$BIN/python scripts/decoding_ablation.py --model runs/attn/best --model runs/scst/best \
    --features cache/features "${SETS[@]}" --full --grid '[{"beam_size": 1}, {"beam_size": 3},
      {"beam_size": 3, "no_repeat_ngram": 2},
      {"beam_size": 3, "no_repeat_ngram": 2, "length_penalty": 0.5},
      {"beam_size": 3, "no_repeat_ngram": 2, "length_penalty": 1.0},
      {"beam_size": 3, "no_repeat_ngram": 2, "guidance": 2.0},
      {"beam_size": 3, "no_repeat_ngram": 2, "length_penalty": 0.5, "guidance": 2.0},
      {"beam_size": 5, "no_repeat_ngram": 2, "guidance": 2.0},
      {"beam_size": 5, "no_repeat_ngram": 2, "guidance": 3.0}]' \
    | tee runs/eval/ablation.jsonl
$BIN/python scripts/decoding_ablation.py --model runs/scst-cosine/best --model runs/bundle \
    --features cache/features "${SETS[@]}" --full --grid "[$DECODING]" \
    | tee -a runs/eval/ablation.jsonl
stage "decoding ablation"

$BIN/rnncap evaluate --model runs/bundle --data "$DATA" --split test \
    --features cache/features --json runs/eval/flickr8k-test.json
if [ -d "$COCO" ]; then
    $BIN/rnncap evaluate --model runs/bundle --data "$COCO" --format coco --split dev \
        --features cache/features --json runs/eval/coco-dev.json
fi
stage evaluation
echo "pipeline wall-clock: $(( $(date +%s) - start )) s (stages in runs/stages.txt)"
echo "to make it the default model: cp runs/bundle/* src/rnncap/assets/default/"
