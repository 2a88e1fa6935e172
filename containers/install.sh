#!/bin/sh
# Install bids_msseg into a Debian bookworm root: the ONE recipe shared by the Dockerfile, the
# Singularity/Apptainer definition (`singularity`) and containers/chroot_proof.sh, so that what was
# proven on a clean Debian root is what the container builds run.
#
# Usage: sh containers/install.sh SOURCE_DIR        (as root, inside the target root)
#
# Environment:
#   TORCH_VARIANT     cpu (default): torch 2.13.0+cpu from the PyTorch CPU index;
#                     cuda: torch 2.13.0 from PyPI (the CUDA build; it brings the CUDA runtime as
#                     nvidia-* wheels, the host driver comes in with `docker run --gpus` or `apptainer --nv`).
#   TORCH_FIND_LINKS  a folder that holds the torch wheel; pip takes it from there instead of the
#                     PyTorch index (used by the chroot proof, whose machine only reaches PyPI).
#   PREFIX            the virtual environment (default /opt/bids_msseg).
#   APP_USER, APP_UID the non-root user the containers run as (default bids, 1000).
#
# Result: root-owned, read-only software in $PREFIX (bytecode compiled at install, nothing written
# at run time), the default model inside the package, `bids_msseg` on $PREFIX/bin, and the user.
set -eu

SRC=${1:?usage: install.sh SOURCE_DIR}
TORCH_VARIANT=${TORCH_VARIANT:-cpu}
PREFIX=${PREFIX:-/opt/bids_msseg}
APP_USER=${APP_USER:-bids}
APP_UID=${APP_UID:-1000}
TORCH_VERSION=2.13.0
export DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

echo "[install] system packages"
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates >/dev/null
rm -rf /var/lib/apt/lists/*

echo "[install] virtual environment $PREFIX ($(python3 --version))"
python3 -m venv "$PREFIX"
PIP="$PREFIX/bin/python -m pip"

echo "[install] torch $TORCH_VERSION ($TORCH_VARIANT)"
case "$TORCH_VARIANT" in
  cpu)
    if [ -n "${TORCH_FIND_LINKS:-}" ]; then
      $PIP install -q --find-links "$TORCH_FIND_LINKS" "torch==$TORCH_VERSION+cpu"
    else
      $PIP install -q --index-url https://download.pytorch.org/whl/cpu \
        --extra-index-url https://pypi.org/simple "torch==$TORCH_VERSION+cpu"
    fi ;;
  cuda)
    $PIP install -q "torch==$TORCH_VERSION" ;;
  *)
    echo "TORCH_VARIANT must be cpu or cuda, not $TORCH_VARIANT" >&2; exit 64 ;;
esac

echo "[install] bids_msseg and its dependencies (constraints.txt keeps torch $TORCH_VERSION)"
# Build from a copy: the source may be a read-only mount, and no build litter stays behind.
BUILD=$(mktemp -d)
cp -r "$SRC/setup.py" "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/constraints.txt" \
      "$SRC/bids_msseg" "$BUILD/"
$PIP install -q -c "$BUILD/constraints.txt" "$BUILD"
rm -rf "$BUILD"

echo "[install] checks"
"$PREFIX/bin/bids_msseg" --version
"$PREFIX/bin/python" - <<'PY'
import os
from bids_msseg._compat import import_smp
from bids_msseg.cli.run import resolve_bundle
import torch
smp = import_smp()
path, card = resolve_bundle(None)  # the packaged default model, sha256 checked
print(f"[install] torch {torch.__version__} (cuda build: {torch.version.cuda}), smp {smp.__version__}, "
      f"default model {card.model_id} at {path}")
PY

# Software read-only for everyone but root; nothing under $PREFIX may be written at run time.
chmod -R go-w "$PREFIX"

if ! id "$APP_USER" >/dev/null 2>&1; then
  useradd --uid "$APP_UID" --create-home --shell /bin/sh "$APP_USER"
fi
echo "[install] done: $PREFIX, user $APP_USER ($APP_UID)"
