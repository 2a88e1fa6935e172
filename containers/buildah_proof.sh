#!/usr/bin/env bash
# Build the unchanged Dockerfile with a real OCI engine (buildah, no Docker daemon), run the image
# as a non-root user without network on a real FLAIR with the input read-only (participant, then
# group), and compare its lesion mask with a native run of the same version byte for byte.
#
# Usage (as root): bash containers/buildah_proof.sh [PROOF_DIR]   (default /var/tmp/bids_msseg_buildah)
#
# PROOF_DIR holds everything: buildah's vfs storage (storage/, run/), the cached debootstrap
# root (base/), the BIDS dataset, outputs and logs. Reruns reuse the cached base root.
#
# Steps (each is logged with its time; one that fails or is refused by the machine is reported
# with the reason and the steps that do not depend on it still run; the exit status is 1 then):
#   1. apt-get install buildah debootstrap when missing.
#   2. base: no registry is reachable, so debootstrap a minimal bookworm root from Debian's archive
#      (--variant=minbase, slimmed like the official -slim image: no docs, man pages, locales),
#      cache it as a tar and import it into buildah's storage as docker.io/library/debian:bookworm-slim.
#   3. `buildah bud --isolation=chroot --pull=never --format=docker` of the Dockerfile as it is in
#      the repository (TORCH_VARIANT=cpu), timed; image size and layers. (The docker format, as
#      `docker build` writes, keeps the SHELL line that the OCI format drops.)
#      This machine reaches PyPI (through a TLS-intercepting proxy) but not download.pytorch.org,
#      the index the Dockerfile's CPU build uses. The build therefore gets three build-time-only
#      bind mounts (`bud -v`; they leave empty mount points): the torch-2.13.0+cpu wheel folder at /wheels,
#      the host's CA bundle at /host-ca.pem and an /etc/pip.conf naming both (find-links, cert).
#      pip still asks the PyTorch index first; the log shows it being refused.
#   3b. The `singularity` recipe (no Apptainer here): its %files and %post applied with buildah to
#      the same base, and the result compared with the Dockerfile image (SINGULARITY_CHECK=0 skips).
#   4. CUDA variant: `pip install --dry-run --report` of what install.sh installs for
#      TORCH_VARIANT=cuda (torch==2.13.0 from PyPI, then the package with constraints.txt), run
#      in a container of the built image with network: the full dependency resolution, no download
#      of the CUDA wheels (several GB), no image.
#   5. The image, run with `buildah run --isolation=chroot --user 1000:1000`, without network, the
#      dataset bind-mounted read-only, the image's ENV: offline check, write check on the input,
#      `bids_msseg --version`, participant, group. buildah 1.28 refuses `--network=none` with chroot
#      isolation ("cannot set --network other than host with --isolation chroot"), so buildah runs
#      in a network namespace of its own (`unshare -n`: a loopback device that is down, nothing else).
#   6. The same version natively (NATIVE_BIDS_MSSEG, default: bids_msseg on PATH), same arguments.
#   7. Comparison of every participant-level NIfTI: the .nii.gz files, the decompressed NIfTI
#      header (348 bytes) and the voxel data (bytes after vox_offset), each by sha256. The step
#      fails when the lesion mask's header or voxel data differ; other differences are listed.
#   8. Clean-up: the run container and dangling images are removed; the built image and the base
#      stay in PROOF_DIR for reruns (CLEAN=1 removes the whole storage at the end).
#
# Environment:
#   FLAIR              the input (default ../shared/data/3d-mr-ms/patient26/patient26_FLAIR_mni.nii.gz,
#                      3D-MR-MS, Lesjak et al. 2017, CC-BY); copied into PROOF_DIR/bids as sub-p26.
#   NATIVE_BIDS_MSSEG  the native bids_msseg to compare with (default: `command -v bids_msseg`).
#   TORCH_WHEEL_DIR    folder with torch-2.13.0+cpu-*.whl (default /opt/wheels).
#   HOST_CA_BUNDLE     CA bundle for pip during the build (default /etc/ssl/certs/ca-certificates.crt).
#   DEBIAN_MIRROR      default http://deb.debian.org/debian
#   REUSE_IMAGE=1      skip the build when localhost/bids_msseg:cpu is already in the storage.
#   CLEAN=1            remove PROOF_DIR's storage at the end.
# Heavy steps run under `nice -n ${NICE:-10}`.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PROOF_DIR=$(realpath -m "${1:-/var/tmp/bids_msseg_buildah}")
FLAIR=${FLAIR:-$REPO/../shared/data/3d-mr-ms/patient26/patient26_FLAIR_mni.nii.gz}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TORCH_WHEEL_DIR=${TORCH_WHEEL_DIR:-/opt/wheels}
HOST_CA_BUNDLE=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
NICE="nice -n ${NICE:-10}"
BASE_IMAGE=docker.io/library/debian:bookworm-slim
IMAGE=localhost/bids_msseg:cpu
RUN_ARGS=(--nprocs 2 --omp-nthreads 2 --random-seed 7)
T0=$(date +%s)
FAILED=()

step() { echo "[proof +$(( $(date +%s) - T0 ))s] $*"; }
fail() { FAILED+=("$1"); echo "[proof +$(( $(date +%s) - T0 ))s] FAILED: $1${2:+ ($2)}"; }
# attempt NAME COMMAND...: run a step; on failure say so and go on (the caller checks the status).
attempt() {
  local name=$1 rc
  shift
  "$@"
  rc=$?
  [ "$rc" = 0 ] || fail "$name" "exit status $rc"
  return "$rc"
}
# Build output without apt's debconf notices; pip's retries of the unreachable PyTorch index are
# counted, the first one shown.
quiet_refusals() {
  awk '/^(debconf|dpkg-preconfigure): / || /^[[:space:]]*$/ {next}
       /Retrying .*Name or service not known.*\/whl\/cpu\// {if (!n++) print; next}
       /Could not fetch URL https:\/\/download\.pytorch\.org/ {if (!f++) print; next}
       {print} END {if (n) printf "(%d such retries, %d such fetch failures, for every package: download.pytorch.org does not resolve here)\n", n, f}'
}
bah() { buildah --root "$PROOF_DIR/storage" --runroot "$PROOF_DIR/run" --storage-driver=vfs "$@"; }

[ "$(id -u)" = 0 ] || { echo "run as root (buildah with vfs storage, debootstrap)" >&2; exit 77; }
mkdir -p "$PROOF_DIR"
step "proof directory $PROOF_DIR, repository $REPO at $(git -C "$REPO" rev-parse --short HEAD)$(
  git -C "$REPO" diff --quiet HEAD -- Dockerfile containers/install.sh constraints.txt || echo ' (recipe files modified)')"
step "machine: $(nproc) CPUs, $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------ 1. tools
missing=()
for tool in buildah debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null; } || { echo "cannot install ${missing[*]}" >&2; exit 77; }
fi
step "$(buildah --version); debootstrap $(dpkg-query -W -f '${Version}' debootstrap)"

# ------------------------------------------------------------------ 2. base image
BASE_TAR=$PROOF_DIR/base/bookworm-minbase-slim.tar
make_base_tar() {
  local root=$PROOF_DIR/base/root
  rm -rf "$root" && mkdir -p "$root"
  step "debootstrap --variant=minbase bookworm $MIRROR (cached as $BASE_TAR)"
  $NICE debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$PROOF_DIR/base/debootstrap.log" 2>&1 \
    || { tail -20 "$PROOF_DIR/base/debootstrap.log"; return 1; }
  # What makes the official image "-slim": dpkg leaves out documentation, man pages and locales.
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
  rm -rf "$root/usr/share/man/"* "$root/usr/share/info/"* "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  : >"$root/etc/resolv.conf"
  tar --numeric-owner -C "$root" -cf "$BASE_TAR.part" . && mv "$BASE_TAR.part" "$BASE_TAR" && rm -rf "$root"
}
import_base() {
  local ctr
  ctr=$(bah from scratch) || return 1
  bah add "$ctr" "$BASE_TAR" / >/dev/null \
    && bah config --cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr" \
    && bah commit --rm -q "$ctr" "$BASE_IMAGE" >/dev/null \
    || { bah rm "$ctr" >/dev/null 2>&1; return 1; }
}
mkdir -p "$PROOF_DIR/base"
if bah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  step "base image $BASE_IMAGE already in the storage"
else
  [ -s "$BASE_TAR" ] || attempt "debootstrap of the base root" make_base_tar
  [ -s "$BASE_TAR" ] && step "importing $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1)) as $BASE_IMAGE" \
    && attempt "import of the base root" import_base
fi
bah images

# ------------------------------------------------------------------ 3. build (CPU)
build_cpu() {
  local tmp=$PROOF_DIR/build-mounts
  mkdir -p "$tmp"
  printf '[global]\nfind-links = /wheels\ncert = /host-ca.pem\n' >"$tmp/pip.conf"
  ls "$TORCH_WHEEL_DIR"/torch-2.13.0+cpu-*.whl >/dev/null || { echo "no torch-2.13.0+cpu wheel in $TORCH_WHEEL_DIR"; return 1; }
  step "buildah bud --isolation=chroot --pull=never --format=docker -f Dockerfile -t $IMAGE $REPO" \
       "(build-time mounts: $TORCH_WHEEL_DIR:/wheels:ro, $HOST_CA_BUNDLE:/host-ca.pem:ro, pip.conf:/etc/pip.conf:ro)"
  local start=$SECONDS
  # The same Dockerfile with the same build context as `docker build .` (.dockerignore applies).
  $NICE buildah --root "$PROOF_DIR/storage" --runroot "$PROOF_DIR/run" --storage-driver=vfs \
    bud --isolation=chroot --pull=never --format=docker --build-arg TORCH_VARIANT=cpu \
    -v "$TORCH_WHEEL_DIR:/wheels:ro" -v "$HOST_CA_BUNDLE:/host-ca.pem:ro" -v "$tmp/pip.conf:/etc/pip.conf:ro" \
    -f "$REPO/Dockerfile" -t "$IMAGE" "$REPO" 2>&1 | quiet_refusals
  local rc=${PIPESTATUS[0]}
  step "build finished with status $rc in $(( SECONDS - start )) s"
  return "$rc"
}
if [ "${REUSE_IMAGE:-0}" = 1 ] && bah inspect --type image "$IMAGE" >/dev/null 2>&1; then
  step "REUSE_IMAGE=1: $IMAGE already built, no build"
elif bah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  attempt "buildah bud of the Dockerfile (CPU)" build_cpu
else
  fail "buildah bud of the Dockerfile (CPU)" "no base image"
fi
HAVE_IMAGE=0
if bah inspect --type image "$IMAGE" >/dev/null 2>&1; then
  HAVE_IMAGE=1
  step "image: $(bah images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' "$IMAGE")"
  bah inspect --type image --format \
    'layers: {{len .OCIv1.RootFS.DiffIDs}}; user {{.OCIv1.Config.User}}; entrypoint {{.OCIv1.Config.Entrypoint}}; cmd {{.OCIv1.Config.Cmd}}; workdir {{.OCIv1.Config.WorkingDir}}{{"\n"}}' "$IMAGE"
  bah inspect --type image --format '{{range .OCIv1.Config.Env}}ENV {{.}}{{"\n"}}{{end}}' "$IMAGE"
  step "build-time mount points left in the image (empty, none expected to hold data):"
  bah run --isolation=chroot "$(bah from --pull=never -q "$IMAGE")" -- sh -c \
    'ls -ld /wheels /host-ca.pem /etc/pip.conf /src 2>&1; du -sh /opt/bids_msseg 2>/dev/null' \
    ; bah rm --all >/dev/null
fi

# ------------------------------------------------------------------ 3b. the `singularity` recipe
# No Apptainer exists for bookworm. What its build does with the recipe is done here with buildah:
# a container from the From: image, every %files line copied (source relative to the repository,
# as `apptainer build` from the repository root), %post run by /bin/sh -e with {{ ARG }} replaced by
# the %arguments defaults. Then the two images are compared: Debian packages, pip freeze, users,
# and every file under /opt/bids_msseg except bytecode and pip's RECORD/direct_url.json (they hold
# file times and the random build folder). %environment, %runscript and %test are not executed
# (tests/e2e/test_containers.py reads them against the Dockerfile).
SING_IMAGE=localhost/bids_msseg:singularity-recipe
build_singularity_recipe() {
  local tmp=$PROOF_DIR/singularity-recipe ctr src dst
  rm -rf "$tmp" && mkdir -p "$tmp"
  python3 - "$REPO/singularity" "$tmp" <<'PY' || return 1
"""Split the definition file into %files pairs and a %post script with the %arguments defaults."""
import re
import sys
from pathlib import Path

text, out = Path(sys.argv[1]).read_text(), Path(sys.argv[2])
sections, current = {}, None
for line in text.splitlines():
    header = re.match(r"^%(\w+)\s*$", line)
    if header:
        current = sections.setdefault(header.group(1), [])
    elif current is not None:
        current.append(line)
args = dict(line.strip().split("=", 1) for line in sections.get("arguments", []) if line.strip())
post = "\n".join(sections["post"])
post = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: args[m.group(1)], post)
(out / "post.sh").write_text(post + "\n")
files = [line for line in sections["files"] if line.strip()]
(out / "files.txt").write_text("\n".join(" ".join(line.split()) for line in files) + "\n")
print(f"%arguments {args}; %files: {len(files)} lines; %post:\n{post.strip()}")
PY
  printf '[global]\nfind-links = /wheels\ncert = /host-ca.pem\n' >"$tmp/pip.conf"
  local start=$SECONDS
  ctr=$(bah from --pull=never -q "$(sed -n 's/^From: *//p' "$REPO/singularity")") || return 1
  while read -r src dst; do
    bah copy "$ctr" "$REPO/$src" "$dst" >/dev/null || { bah rm "$ctr"; return 1; }
  done <"$tmp/files.txt"
  step "%post (same build-time mounts as the Dockerfile build)"
  $NICE buildah --root "$PROOF_DIR/storage" --runroot "$PROOF_DIR/run" --storage-driver=vfs \
    run --isolation=chroot -v "$TORCH_WHEEL_DIR:/wheels:ro" -v "$HOST_CA_BUNDLE:/host-ca.pem:ro" \
    -v "$tmp/pip.conf:/etc/pip.conf:ro" -v "$tmp/post.sh:/.post.sh:ro" "$ctr" -- /bin/sh -e /.post.sh 2>&1 \
    | quiet_refusals
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] && bah commit --rm -q "$ctr" "$SING_IMAGE" >/dev/null || { bah rm "$ctr" >/dev/null; return 1; }
  step "singularity recipe built in $(( SECONDS - start )) s: $(bah images --format '{{.Size}}' "$SING_IMAGE")"
}
inventory() {  # what an image installed: Debian packages, pip freeze, users, files of /opt/bids_msseg
  local ctr
  ctr=$(bah from --pull=never -q "$1") || return 1
  unshare -n buildah --root "$PROOF_DIR/storage" --runroot "$PROOF_DIR/run" --storage-driver=vfs \
    run --isolation=chroot "$ctr" -- sh -c '
    dpkg-query -W -f "deb \${Package} \${Version}\n"
    /opt/bids_msseg/bin/python -m pip freeze --all | sed "s/^/pip /; s/ @ file:.*/ @ local/"
    getent passwd 1000 | sed "s/^/user /"
    cd /opt/bids_msseg && find . -type f ! -name "*.pyc" ! -name RECORD ! -name direct_url.json -print0 \
      | sort -z | xargs -0 sha256sum | sed "s/^/file /"' 2>&1
  bah rm "$ctr" >/dev/null
}
compare_recipes() {
  inventory "$IMAGE" >"$PROOF_DIR/inventory-dockerfile.txt"
  inventory "$SING_IMAGE" >"$PROOF_DIR/inventory-singularity.txt"
  step "inventories: $(grep -c '^deb ' "$PROOF_DIR/inventory-dockerfile.txt") Debian packages," \
       "$(grep -c '^pip ' "$PROOF_DIR/inventory-dockerfile.txt") pip packages," \
       "$(grep -c '^file ' "$PROOF_DIR/inventory-dockerfile.txt") files under /opt/bids_msseg (Dockerfile image)"
  local f
  for f in "$PROOF_DIR"/inventory-{dockerfile,singularity}.txt; do
    grep -q '^file ' "$f" && grep -q '^pip torch==' "$f" && grep -q '^deb python3 ' "$f" \
      || { echo "no inventory in $f:"; head -5 "$f"; return 1; }
  done
  if diff "$PROOF_DIR/inventory-dockerfile.txt" "$PROOF_DIR/inventory-singularity.txt" >"$PROOF_DIR/inventory.diff"; then
    step "the singularity recipe installs the same packages, user and files as the Dockerfile"
  else
    head -40 "$PROOF_DIR/inventory.diff"; return 1
  fi
}
if [ "${SINGULARITY_CHECK:-1}" = 1 ] && [ "$HAVE_IMAGE" = 1 ]; then
  step "the singularity recipe's %files and %post, applied with buildah (Apptainer's build, emulated)"
  attempt "build of the singularity recipe's sections" build_singularity_recipe \
    && attempt "singularity recipe vs Dockerfile image" compare_recipes
  bah rmi "$SING_IMAGE" >/dev/null 2>&1
fi

# ------------------------------------------------------------------ 4. CUDA variant: resolution only
resolve_cuda() {
  local tmp=$PROOF_DIR/cuda-resolve ctr
  rm -rf "$tmp" && mkdir -p "$tmp"
  printf '[global]\ncert = /host-ca.pem\n' >"$tmp/pip.conf"   # no find-links: PyPI's torch (CUDA build)
  (cd "$REPO" && cp -r setup.py pyproject.toml README.md constraints.txt bids_msseg "$tmp/")
  ctr=$(bah from --pull=never -q "$IMAGE") || return 1
  step "pip install --dry-run --report: torch==2.13.0 (PyPI), then the package with constraints.txt, in $IMAGE"
  $NICE buildah --root "$PROOF_DIR/storage" --runroot "$PROOF_DIR/run" --storage-driver=vfs \
    run --isolation=chroot --user 0:0 -v "$HOST_CA_BUNDLE:/host-ca.pem:ro" -v "$tmp/pip.conf:/etc/pip.conf:ro" \
    -v "$tmp:/resolve" "$ctr" -- sh -euc '
      python3 -m venv /tmp/cuda && P=/tmp/cuda/bin/pip
      cp -r /resolve /tmp/src && rm -rf /tmp/src/pip.conf
      $P install -q --dry-run --ignore-installed --report /resolve/report.json \
        -c /tmp/src/constraints.txt "torch==2.13.0" /tmp/src 2>&1 | grep -v -i "deprecat" || true
      /tmp/cuda/bin/python - <<PY
import json
items = json.load(open("/resolve/report.json"))["install"]
pkgs = sorted(((i["metadata"]["name"], i["metadata"]["version"], i["download_info"]["url"]) for i in items),
              key=lambda p: p[0].lower())
nvidia = [p for p in pkgs if p[0].startswith(("nvidia", "cuda", "triton"))]
print(f"resolved {len(pkgs)} packages, {len(nvidia)} of them CUDA runtime (nvidia-*, cuda-*, triton):")
for name, version, url in pkgs:
    wheel = url.rsplit("/", 1)[-1] if url.startswith("http") else "(this source tree)"
    print(f"  {name}=={version}  {wheel}")
torch = [v for n, v, _ in pkgs if n == "torch"]
assert torch == ["2.13.0"], f"expected torch 2.13.0 (CUDA build), got {torch}"
assert nvidia, "no CUDA runtime packages resolved"
PY'
  local rc=$?
  bah rm "$ctr" >/dev/null
  return "$rc"
}
if [ "$HAVE_IMAGE" = 1 ]; then attempt "CUDA variant dependency resolution" resolve_cuda
else fail "CUDA variant dependency resolution" "no image to run pip in"; fi

# ------------------------------------------------------------------ 5. the image, offline, non-root
DATA=$PROOF_DIR/data
BIDS=$DATA/bids
PARTICIPANT=p26
MASK=sub-$PARTICIPANT/anat/sub-${PARTICIPANT}_space-orig_label-lesion_mask.nii.gz
rm -rf "$DATA" && mkdir -p "$BIDS/sub-$PARTICIPANT/anat" "$DATA/image_out" "$DATA/image_work"
if [ -f "$FLAIR" ]; then
  cp "$FLAIR" "$BIDS/sub-$PARTICIPANT/anat/sub-${PARTICIPANT}_FLAIR.nii.gz"
  printf '{"Name": "bids_msseg buildah proof (3D-MR-MS patient 26, Lesjak et al. 2017, CC-BY)", "BIDSVersion": "1.10.0"}\n' \
    >"$BIDS/dataset_description.json"
  chmod -R a+rX,a-w "$BIDS"
  chown 1000:1000 "$DATA/image_out" "$DATA/image_work"
  step "dataset $BIDS: sub-$PARTICIPANT FLAIR = $FLAIR ($(du -h "$FLAIR" | cut -f1))"
else
  fail "input" "$FLAIR not found (set FLAIR)"
fi
in_image() {  # the image as uid 1000, no network, dataset read-only, outputs and work writable
  $NICE unshare -n buildah --root "$PROOF_DIR/storage" --runroot "$PROOF_DIR/run" --storage-driver=vfs \
    run --isolation=chroot --user 1000:1000 \
    -v "$BIDS:/data/bids:ro" -v "$DATA/image_out:/data/out" -v "$DATA/image_work:/work" "$RUN_CTR" -- "$@"
}
RUN_CTR=
if [ "$HAVE_IMAGE" = 1 ] && [ -f "$FLAIR" ]; then
  RUN_CTR=$(bah from --pull=never -q "$IMAGE") || fail "buildah from $IMAGE"
fi
if [ -n "$RUN_CTR" ]; then
  step "as $(in_image id), in its own network namespace: $(in_image python3 -c '
import socket
try:
    socket.create_connection(("pypi.org", 443), 3); print("network reachable")
except OSError as e:
    print("no network:", e)
' 2>&1 | tail -1)"
  step "write to the read-only input: $(in_image sh -c 'touch /data/bids/probe 2>&1 || true' | tail -1)"
  step "$(in_image bids_msseg --version)"
  step "image: bids_msseg /data/bids /data/out participant ${RUN_ARGS[*]} -w /work"
  start=$SECONDS
  attempt "participant run in the image" in_image bids_msseg /data/bids /data/out participant "${RUN_ARGS[@]}" -w /work
  step "participant run in the image: $(( SECONDS - start )) s"
  step "image: bids_msseg /data/bids /data/out group -w /work"
  attempt "group run in the image" in_image bids_msseg /data/bids /data/out group -w /work
  step "outputs of the image run (owner uid:gid, path):"
  (cd "$DATA/image_out" && find . -type f -printf '%U:%G %p\n' | sort -k2)
fi

# ------------------------------------------------------------------ 6. native run, same version
NATIVE=${NATIVE_BIDS_MSSEG:-$(command -v bids_msseg || true)}
if [ -n "$NATIVE" ] && [ -f "$FLAIR" ]; then
  step "native: $NATIVE ($($NATIVE --version)) participant ${RUN_ARGS[*]}, then group"
  start=$SECONDS
  attempt "native participant run" env NIPYPE_NO_ET=1 $NICE "$NATIVE" "$BIDS" "$DATA/native_out" participant \
    "${RUN_ARGS[@]}" -w "$DATA/native_work"
  step "native participant run: $(( SECONDS - start )) s"
  attempt "native group run" env NIPYPE_NO_ET=1 $NICE "$NATIVE" "$BIDS" "$DATA/native_out" group -w "$DATA/native_work"
else
  fail "native run" "no bids_msseg on PATH (set NATIVE_BIDS_MSSEG) or no input"
fi

# ------------------------------------------------------------------ 7. byte-for-byte comparison
compare() {
  local py
  py=$(dirname "$(readlink -f "$NATIVE")")/python
  [ -x "$py" ] || py=python3
  "$py" - "$DATA/image_out" "$DATA/native_out" "$MASK" <<'PY'
"""Compare every participant-level NIfTI of two output folders: file, header, voxel data.
Exit 1 when the lesion mask's header or voxel data differ; other differences are listed."""
import gzip
import hashlib
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

image_out, native_out, mask = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]


def digests(path: Path) -> dict:
    raw = path.read_bytes()
    nii = gzip.decompress(raw)
    offset = int(nib.Nifti1Header.from_fileobj(gzip.open(path)).get("vox_offset"))
    return {"gz file": hashlib.sha256(raw).hexdigest(), "header (348 B)": hashlib.sha256(nii[:348]).hexdigest(),
            "voxel data": hashlib.sha256(nii[offset:]).hexdigest(), "vox_offset": offset, "bytes": len(nii)}


names = sorted(str(p.relative_to(image_out)) for p in image_out.glob("sub-*/**/*.nii.gz"))
assert mask in names, f"no lesion mask {mask} in the image's outputs"
differ = []
for name in names:
    a, b = digests(image_out / name), digests(native_out / name)
    same = {k: a[k] == b[k] for k in ("gz file", "header (348 B)", "voxel data")}
    if not (same["header (348 B)"] and same["voxel data"]):
        differ.append(name)
    print(f"{name}: " + ", ".join(f"{k} {'identical' if v else 'DIFFERENT'}" for k, v in same.items())
          + f" (decompressed {a['bytes']} B, voxel data sha256 {a['voxel data'][:16]}...)")
m = np.asanyarray(nib.load(str(image_out / mask)).dataobj)
print(f"lesion mask {mask}: shape {m.shape}, {int((m > 0).sum())} lesion voxels")
gen = [json.loads((d / "dataset_description.json").read_text())["GeneratedBy"][0]["Description"]
       for d in (image_out, native_out)]
parts = [g.removeprefix("Run with ").rstrip(".").split(", ") for g in gen]
changed = [f"{x} (image) vs {y} (native)" for x, y in zip(*parts, strict=True) if x != y]
print(f"software: {', '.join(parts[0])}")
print("software versions differ only in: " + "; ".join(changed) if changed else "same software versions")
if differ:
    print(f"NOTE: {len(differ)} other output(s) differ between the two runs: {', '.join(differ)}")
sys.exit(1 if mask in differ else 0)
PY
}
if [ -f "$DATA/image_out/$MASK" ] && [ -f "$DATA/native_out/$MASK" ]; then
  step "comparison, image run vs native run (sha256 of the .nii.gz, of the decompressed header, of the voxel data)"
  attempt "byte-for-byte comparison of the image's and the native lesion mask" compare
  step "group level, image vs native:"
  for f in $(cd "$DATA/image_out" && find . -maxdepth 2 -path ./logs -prune -o -type f ! -path './sub-*' -print | sort); do
    if cmp -s "$DATA/image_out/$f" "$DATA/native_out/$f"; then echo "  $f identical"
    else echo "  $f differs: $(diff <(sed "s#$DATA/native_out#/data/out#g; s#$BIDS#/data/bids#g; s#$DATA/native_work#/work#g" \
      "$DATA/native_out/$f") "$DATA/image_out/$f" >/dev/null && echo 'only in its paths (/data/... vs the host folders)' \
      || echo 'in content')"; fi
  done
else
  fail "comparison" "a lesion mask is missing"
fi

# ------------------------------------------------------------------ 8. clean-up
[ -n "$RUN_CTR" ] && bah rm "$RUN_CTR" >/dev/null
bah rm --all >/dev/null 2>&1
bah rmi --prune >/dev/null 2>&1
step "storage after clean-up: $(du -sh "$PROOF_DIR/storage" | cut -f1) in $PROOF_DIR/storage ($(bah images --format '{{.Name}}:{{.Tag}}' | xargs))"
if [ "${CLEAN:-0}" = 1 ]; then
  bah rmi --all >/dev/null 2>&1
  rm -rf "$PROOF_DIR/storage" "$PROOF_DIR/run"
  step "CLEAN=1: storage removed"
fi
if [ ${#FAILED[@]} -gt 0 ]; then
  step "PROOF INCOMPLETE in $(( $(date +%s) - T0 )) s; failed or refused steps:"
  printf '  - %s\n' "${FAILED[@]}"
  exit 1
fi
step "PROOF OK in $(( $(date +%s) - T0 )) s"
