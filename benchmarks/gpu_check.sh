#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md in one run of at most 8 minutes on one GPU machine
# that has jax, flax, optax, orbax and torch but no TensorFlow, tfds, clu or ml_collections.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # from the repository root
#
# 1. the bare train step (benchmarks/train_step.py) of Attention-56 at 224 in bfloat16 at the
#    largest batch that fits, found from XLA's memory analysis, without and with remat:
#    images/s, MFU, memory;
# 2. the ratio to a PyTorch build of the official prototxt (benchmarks/versus_torch.py with
#    --device cuda --amp --channels-last), when TORCH_TOOL and PROTOTXT are given;
# 3. the whole `ran_jax.main` loop on configs/fake_data_benchmark.py at the same batch.
# Each part writes its output into OUT_DIR (default /tmp/gpu_check); summary.json holds the
# figures. Environment:
#   WHEELS       a folder of wheels to install first when ml_collections is missing
#                (pip download ml_collections, for the config files of part 3)
#   TORCH_TOOL, PROTOTXT   the PyTorch builder script and the Attention-56 prototxt (part 2)
#   TORCH_PYTHON the Python that has torch (default: python3)
#   MODEL, IMAGE_SIZE, DTYPE, REMAT   default attention56, 224, bfloat16, unit
#   CAPACITY_GIB memory per device for the batch search (default: what the GPU reports)
#   BATCH_MULTIPLE the per-device batches searched are its multiples (default 32)
#   START_BATCH  the first (global) batch of the search (default 256)
#   PYTHON       the interpreter (default python3)
# Time limits per part, in seconds: STEP_SECONDS (150 each), TORCH_SECONDS (80),
# MAIN_SECONDS (100): 480 s in all.
set -uo pipefail

OUT_DIR="${1:-${OUT_DIR:-/tmp/gpu_check}}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
MODEL="${MODEL:-attention56}"
IMAGE_SIZE="${IMAGE_SIZE:-224}"
DTYPE="${DTYPE:-bfloat16}"
REMAT="${REMAT:-unit}"
STEP_SECONDS="${STEP_SECONDS:-150}"
TORCH_SECONDS="${TORCH_SECONDS:-80}"
MAIN_SECONDS="${MAIN_SECONDS:-100}"
BATCH_MULTIPLE="${BATCH_MULTIPLE:-32}"
PYTHON="${PYTHON:-python3}"
TORCH_PYTHON="${TORCH_PYTHON:-python3}"
mkdir -p "$OUT_DIR"
cd "$REPO" || exit 1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if ! $PYTHON -c 'import ml_collections' 2>/dev/null && [ -n "${WHEELS:-}" ]; then
  $PYTHON -m pip install -q --no-index --no-deps --target "$OUT_DIR/site" "$WHEELS"/*.whl &&
    export PYTHONPATH="$PYTHONPATH:$OUT_DIR/site"
fi
$PYTHON -c 'import jax; print("devices:", jax.devices())' | tee "$OUT_DIR/devices.txt"

step() {  # NAME ARGS...: one train_step.py run, its JSON line in OUT_DIR/NAME.json
  local name="$1"; shift
  echo "== $name: train_step.py $*"
  timeout "$STEP_SECONDS" $PYTHON benchmarks/train_step.py --model "$MODEL" \
    --image-size "$IMAGE_SIZE" --dtype "$DTYPE" --largest-batch --batch "${START_BATCH:-256}" \
    --batch-multiple "$BATCH_MULTIPLE" ${CAPACITY_GIB:+--capacity-gib "$CAPACITY_GIB"} "$@" \
    > "$OUT_DIR/$name.json" 2> "$OUT_DIR/$name.log"
  local status=$?
  tail -n 1 "$OUT_DIR/$name.json"
  [ "$status" -eq 0 ] || echo "$name failed ($status): $(tail -n 3 "$OUT_DIR/$name.log")"
}
step step_no_remat
step step_remat --remat "$REMAT"

BATCH=$($PYTHON -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["batch"])' \
  "$OUT_DIR/step_no_remat.json" 2>/dev/null || echo 256)

if [ -n "${TORCH_TOOL:-}" ] && [ -n "${PROTOTXT:-}" ]; then
  echo "== versus_torch.py at batch $BATCH"
  timeout "$TORCH_SECONDS" $PYTHON benchmarks/versus_torch.py --torch-python "$TORCH_PYTHON" \
    --torch-tool "$TORCH_TOOL" --prototxt "$PROTOTXT" --model "$MODEL" --batch "$BATCH" \
    --image-size "$IMAGE_SIZE" --dtype "$DTYPE" --steps 10 --rounds 2 \
    -- --device cuda --amp --channels-last > "$OUT_DIR/versus_torch.json" \
    2> "$OUT_DIR/versus_torch.log" || echo "versus_torch failed: $(tail -n 3 "$OUT_DIR/versus_torch.log")"
  tail -n 1 "$OUT_DIR/versus_torch.json"
else
  echo "== versus_torch.py skipped: set TORCH_TOOL and PROTOTXT"
fi

echo "== ran_jax.main on configs/fake_data_benchmark.py at batch $BATCH"
rm -rf "$OUT_DIR/fake_run"
timeout "$MAIN_SECONDS" $PYTHON -m ran_jax.main --config=configs/fake_data_benchmark.py \
  --workdir="$OUT_DIR/fake_run" --config.model.name="$MODEL" --config.dtype="$DTYPE" \
  --config.image_size="$IMAGE_SIZE" --config.eval_image_size="$IMAGE_SIZE" \
  --config.batch_size="$BATCH" --config.eval_batch_size="$BATCH" \
  --config.num_train_steps=100 --config.log_every_steps=20 > "$OUT_DIR/main.log" 2>&1
echo "main exited with $?"
grep -E 'images_per_second' "$OUT_DIR/main.log" | tail -n 5

$PYTHON - "$OUT_DIR" <<'EOF'
import json, pathlib, re, sys
out = pathlib.Path(sys.argv[1])
summary = {}
for name in ('step_no_remat', 'step_remat', 'versus_torch'):
  path = out / f'{name}.json'
  lines = path.read_text().splitlines() if path.exists() else []
  if lines:
    summary[name] = json.loads(lines[-1])
log = out / 'main.log'
rates = re.findall(r'train/images_per_second=([0-9.e+]+)', log.read_text()) if log.exists() else []
summary['main_images_per_second'] = [float(r) for r in rates]
bare = summary.get('step_no_remat', {}).get('images_per_s')
if bare and len(rates) > 1:  # the first interval holds the compilation
  later = [float(r) for r in rates[1:]]
  summary['main_over_bare_step'] = round(sum(later) / len(later) / bare, 4)
(out / 'summary.json').write_text(json.dumps(summary, indent=2))
print(json.dumps(summary))
EOF
