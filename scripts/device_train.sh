#!/usr/bin/env bash
# Train a default-model candidate on a lent GPU machine in one call (device tool, `run`):
#   bash scripts/device_pack.sh                              # here, once
#   run(command="bash scripts/device_train.sh", carry=[".device"], timeout_s=600)
# builds a synthetic pool with all CPU cores, trains on the GPU (the paper's recipe by default:
# 50 epochs of 100 steps x 16 whole 224-px slices, Adam 1e-3), and leaves under $OUT the exported
# bundle (weights split in 15 MB parts: `cat model.safetensors.part-* > model.safetensors`), its
# training curve and the log; then score it here with scripts/validate_protocol.py --model BUNDLE.
# Settings (environment): N pool scans (150), SEED (3), EPOCHS (50), STEPS (100), LR (1e-3),
# INIT a bundle to fine-tune (default: from scratch, reference from the pool), JOBS (nproc).
set -euo pipefail
D=.device
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT/bundle"
exec > >(tee "$OUT/log.txt") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$D"/wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD NIPYPE_NO_ET=1 PYTHONUNBUFFERED=1
if [ ! -e /usr/share/mricron/templates/ch2bet.nii.gz ]; then
    mkdir -p /usr/share/mricron/templates && cp "$D"/data/ch2*.nii.gz /usr/share/mricron/templates/
fi
nvidia-smi --query-gpu=name,memory.total --format=csv || echo "no GPU: training runs on the CPU"
N=${N:-150}; SEED=${SEED:-3}; POOL=/tmp/device_pool; RUN=/tmp/device_run
init=(); ref=()  # fine-tuning INIT: its weights, and its quantile reference for the pool
if [ -n "${INIT:-}" ]; then init=(--init-bundle "$INIT"); ref=(--reference-from "$INIT"); fi
time python3 scripts/build_default_model.py pool --out "$POOL" --n "$N" --seed "$SEED" --jobs "${JOBS:-$(nproc)}" \
    --masks "$D/data/masks" --flair-average "$D/data/GG-853-FLAIR-2.0mm.nii.gz" \
    --flair-average-brain "$D/data/GG-853-brainmask-2.0mm_derived.nii.gz" "${ref[@]}"
time python3 scripts/build_default_model.py train --pool "$POOL" --run "$RUN" --epochs "${EPOCHS:-50}" \
    --steps "${STEPS:-100}" --batch 16 --lr "${LR:-1e-3}" --wait-for "$N" --max-val-scans 12 --seed "$SEED" "${init[@]}"
python3 scripts/build_default_model.py export --pool "$POOL" --run "$RUN" --bundle "$OUT/bundle" --seed-threshold 0.97
python3 scripts/build_default_model.py curve --run "$RUN" --out "$OUT/curve"
split -b 15M "$OUT/bundle/model.safetensors" "$OUT/bundle/model.safetensors.part-"
rm "$OUT/bundle/model.safetensors"
ls -la "$OUT" "$OUT/bundle"
