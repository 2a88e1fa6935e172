#!/usr/bin/env bash
# Pack what scripts/device_train.sh needs on a lent GPU machine, which reaches no network and gets
# only this working tree: the pure-Python wheels its image lacks (nibabel, nilearn for the MNI152
# template, segmentation-models-pytorch) and the training material from ../shared/data (the 27
# 3D-MR-MS lesion masks, never patient 26; the GG-853 FLAIR template) and Colin27 (Debian
# mricron-data). Writes .device/ (git-ignored; about 22 MB of the 64 MiB that
# may travel). Run from anywhere on this machine:  bash scripts/device_pack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
D=.device
rm -rf "$D" && mkdir -p "$D/wheels" "$D/data/masks"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$D/wheels" \
    nibabel==5.4.2 nilearn==0.14.1 segmentation-models-pytorch==0.6.0
cp ../shared/data/3d-mr-ms/lesion-masks-mni/*.nii.gz "$D/data/masks/"
cp ../shared/data/flair-template/GG-853-* ../shared/data/flair-template/LICENSE-GG853.txt "$D/data/"
cp /usr/share/mricron/templates/ch2.nii.gz /usr/share/mricron/templates/ch2bet.nii.gz "$D/data/"
du -sh "$D"
