#!/usr/bin/env bash
# The whole Flickr8k pipeline behind the README's results table and the bundled default model:
# cache EfficientNet-Lite0 features once, train the three cell types on them, select each on dev
# CIDEr, score the test split greedy and with beam 3 and 5.
# Usage: scripts/reproduce_flickr8k.sh [FLICKR8K_DIR]   (default ../shared/data/flickr8k)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/flickr8k}
BIN=.venv/bin
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # the two training queues below get a core each

start=$(date +%s)
$BIN/rnncap features --data "$DATA" --format flickr8k --split all \
    --encoder efficientnet_lite0 --out cache/features

COMMON=(--data "$DATA" --features cache/features --max-caption-words 16 --epochs 6
        --patience 2 --dropout 0.5 --seed 0)
$BIN/rnncap train --cell-type attn --out runs/attn "${COMMON[@]}" &
( $BIN/rnncap train --cell-type lstm --out runs/lstm "${COMMON[@]}" &&
  $BIN/rnncap train --cell-type rnn --out runs/rnn "${COMMON[@]}" ) &
wait

mkdir -p runs/eval
for cell in attn lstm rnn; do
    for beam in 1 3 5; do
        $BIN/rnncap evaluate --model runs/$cell --data "$DATA" --split test --beam $beam \
            --features cache/features --json runs/eval/$cell-beam$beam.json
    done
done
echo "pipeline wall-clock: $(( $(date +%s) - start )) s"
