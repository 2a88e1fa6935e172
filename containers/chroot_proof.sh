#!/usr/bin/env bash
# Prove the container recipe without a container engine: debootstrap a clean Debian bookworm root,
# run containers/install.sh in it exactly as the Dockerfile and `singularity` do, then run the app
# the way a container runs it: as the non-root user, with a read-only HOME and read-only software,
# the Dockerfile's ENV lines as the whole environment, and no network (`unshare -n`).
#
# Usage (as root): bash containers/chroot_proof.sh [ROOT_DIR]     (default /tmp/bids_msseg_chroot)
#
# Environment:
#   DEBIAN_MIRROR    default http://deb.debian.org/debian
#   TORCH_WHEEL_DIR  a folder holding torch-2.13.0+cpu-*.whl (default /opt/wheels). This machine
#                    reaches PyPI but not the PyPI-external PyTorch CPU index the Dockerfile uses,
#                    so the wheel is copied into the root and install.sh gets TORCH_FIND_LINKS;
#                    every other package comes from PyPI as in a real build.
#   HOST_CA_BUNDLE   CA bundle given to pip in the chroot as PIP_CERT (default: the host's
#                    /etc/ssl/certs/ca-certificates.crt): this machine reaches PyPI through a
#                    TLS-intercepting proxy whose CA only the host's bundle holds. A real build
#                    needs nothing of the kind. The copy is removed after the install.
#   KEEP_ROOT=1      leave the root in place at the end (default: removed).
# Needs: debootstrap, chroot, unshare, mount (root). Prints timed steps; exits non-zero on failure.
set -euo pipefail

ROOT=${1:-/tmp/bids_msseg_chroot}
REPO=$(cd "$(dirname "$0")/.." && pwd)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TORCH_WHEEL_DIR=${TORCH_WHEEL_DIR:-/opt/wheels}
T0=$(date +%s)
step() { echo "[proof +$(( $(date +%s) - T0 ))s] $*"; }

[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap, chroot, mount)" >&2; exit 77; }
for tool in debootstrap chroot unshare mount; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y debootstrap)" >&2; exit 77; }
done
ls "$TORCH_WHEEL_DIR"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1 \
  || { echo "no torch-2.13.0+cpu wheel in $TORCH_WHEEL_DIR (set TORCH_WHEEL_DIR)" >&2; exit 77; }

cleanup() {
  for m in dev/shm dev/pts dev proc; do
    mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m"
  done
  if [ "${KEEP_ROOT:-0}" != 1 ] && [ -d "$ROOT" ]; then rm -rf "$ROOT"; fi
}
trap cleanup EXIT

if [ -e "$ROOT" ]; then
  step "removing an earlier root $ROOT"
  cleanup
  rm -rf "$ROOT"
fi
step "debootstrap --variant=minbase bookworm $ROOT $MIRROR"
debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
  || { tail -20 "$ROOT.debootstrap.log"; exit 1; }
rm -f "$ROOT.debootstrap.log"
step "clean root: $(chroot "$ROOT" sh -c '. /etc/os-release; echo "$PRETTY_NAME"'), $(du -xsh "$ROOT" | cut -f1)"

mount -t proc proc "$ROOT/proc"
mount --bind /dev "$ROOT/dev"
mount -t devpts devpts "$ROOT/dev/pts" 2>/dev/null || true
mount -t tmpfs -o mode=1777 tmpfs "$ROOT/dev/shm"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

# What the Dockerfile bind-mounts at /src: the working tree (tracked and new files, not ignored ones).
mkdir -p "$ROOT/src" "$ROOT/wheels"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$ROOT/src/")
cp "$TORCH_WHEEL_DIR"/torch-2.13.0+cpu-*.whl "$ROOT/wheels/"
cp "${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" "$ROOT/host-ca.pem"

step "containers/install.sh (TORCH_VARIANT=cpu, TORCH_FIND_LINKS=/wheels) in the chroot"
chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TORCH_VARIANT=cpu \
  TORCH_FIND_LINKS=/wheels PIP_CERT=/host-ca.pem sh /src/containers/install.sh /src
rm -rf "$ROOT/src" "$ROOT/wheels" "$ROOT/host-ca.pem" "$ROOT/etc/resolv.conf"
step "installed: $(du -xsh "$ROOT/opt/bids_msseg" | cut -f1) in /opt/bids_msseg, root total $(du -xsh "$ROOT" | cut -f1)"

# The container's run-time environment: exactly the Dockerfile's ENV lines.
mapfile -t RUNTIME_ENV < <(sed -n 's/^ENV \([A-Z_][A-Z0-9_]*=.*\)$/\1/p' "$REPO/Dockerfile")
APP_UID=$(chroot "$ROOT" id -u bids)
APP_HOME=/home/bids
chmod 0555 "$ROOT$APP_HOME"                    # read-only HOME (as under many HPC/Apptainer set-ups)
mkdir -p "$ROOT/data" && chown "$APP_UID:$APP_UID" "$ROOT/data"   # the bind-mounted data folder
touch "$ROOT/.before_run"

as_user() {  # UID HOME COMMAND: run in the root as UID, offline, with the container's environment only
  local uid=$1 home=$2
  shift 2
  unshare -n chroot --userspec="$uid:$uid" "$ROOT" /usr/bin/env -i "${RUNTIME_ENV[@]}" \
    HOME="$home" sh -c "cd /data && $*"
}
as_app() { as_user "$APP_UID" "$APP_HOME" "$@"; }
mask_sha256() {  # sha256 of the lesion mask's voxel data (not of the gzip stream)
  as_app "python3 -c \"import hashlib, nibabel as nib, numpy as np; \
d = np.asanyarray(nib.load('$1').dataobj); print(hashlib.sha256(d.tobytes()).hexdigest(), d.shape, d.dtype, int(d.sum()), 'lesion voxels')\""
}

step "offline check: $(as_app 'python3 -c "import socket; socket.create_connection((\"pypi.org\", 443), 3)" 2>&1 | tail -1')"
step "as user $(as_app 'id -un') (uid $APP_UID), HOME $APP_HOME read-only, no network: bids_msseg --version"
as_app 'bids_msseg --version'

step "demo dataset (bids_msseg.demo.make_demo_dataset, 1 subject)"
as_app 'python3 -c "from pathlib import Path; from bids_msseg.demo import make_demo_dataset; make_demo_dataset(Path(\"/data/bids\"), n_subjects=1)"'

RUN_ARGS="participant --nprocs 1 --omp-nthreads 2 --random-seed 7"
MASK=sub-demo01/anat/sub-demo01_space-orig_label-lesion_mask.nii.gz
step "participant run: bids_msseg /data/bids /data/out $RUN_ARGS -w /data/work"
as_app "bids_msseg /data/bids /data/out $RUN_ARGS -w /data/work" 2>&1
step "outputs"
as_app 'find /data/out -name "*.nii.gz" | sort; python3 -c "import json; print(json.dumps(json.load(open(\"/data/out/dataset_description.json\"))[\"GeneratedBy\"]))"'
as_app 'echo "caches (HOME read-only): $(ls -d /data/work/home/*)"'
RUN1=$(mask_sha256 "/data/out/$MASK")

# An arbitrary user id without a passwd entry and HOME=/ (as `docker run -u UID:GID` gives), in
# fresh output and work folders: the same command, and the same mask to the byte.
chmod 1777 "$ROOT/data"
step "second run as uid 4321 (no passwd entry, HOME=/), fresh work and output folders"
as_user 4321 / "bids_msseg /data/bids /data/out2 $RUN_ARGS -w /data/work2" 2>&1 | tail -2
RUN2=$(mask_sha256 "/data/out2/$MASK")
echo "mask data sha256, run 1: $RUN1"
echo "mask data sha256, run 2: $RUN2"
[ "$RUN1" = "$RUN2" ] || { echo "the two runs' masks differ" >&2; exit 1; }
step "the two runs' lesion masks are identical"

written=$(find "$ROOT/opt" "$ROOT$APP_HOME" "$ROOT/usr" -newer "$ROOT/.before_run" 2>/dev/null | head -5)
if [ -n "$written" ]; then
  echo "files written outside /data and /tmp during the run:"; echo "$written"; exit 1
fi
step "nothing was written under /opt, /usr or HOME during the run"
step "PROOF OK in $(( $(date +%s) - T0 )) s"
