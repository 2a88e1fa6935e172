#!/bin/bash
# One participant per SLURM array task, in the Apptainer/Singularity image (SIF) or with a native
# installation, then the group level once every task has succeeded (a job dependency). See docs/hpc.md.
#
# Submit everything (from a login node; N is counted from the dataset's sub-* folders):
#
#   BIDS_DIR=/data/bids OUT_DIR=/data/bids/derivatives/bids_msseg WORK_DIR=/scratch/$USER/bids_msseg_work \
#   SIF=/path/to/bids_msseg.sif bash containers/slurm_participant_array.sh submit
#
# Environment (read at submission; sbatch --export=ALL hands it to the jobs):
#   SIF            the image; unset or empty: run BIDS_MSSEG natively (default `bids_msseg` on PATH)
#   ARRAY_ARGS     extra sbatch options for the array, e.g. "-p short --cpus-per-task=2 --mem=8G"
#                  (they override the #SBATCH lines below)
#   GROUP_ARGS     extra sbatch options for the group job
#   GROUP_AFTER    dependency type of the group job: afterok (default: it runs only when every
#                  participant succeeded) or afterany (it runs after all ended, failed ones included)
#   GPU_FLAG       "--nv" for a CUDA image on GPU nodes (request the GPU in ARRAY_ARGS: --gres=gpu:1)
#
# Each array task runs `bids_msseg ... participant --participant-label <its subject>` with the
# resources SLURM gave it. All tasks share WORK_DIR: the BIDS index is built once there and reused
# (bids_msseg/bids.py makes its creation safe for concurrent jobs), and every FLAIR run has its
# own sub-workflow folder. Rerunning the same submission skips complete participants.
#SBATCH --job-name=bids_msseg
#SBATCH --cpus-per-task=4
#SBATCH --mem=12G
#SBATCH --time=02:00:00
#SBATCH --output=bids_msseg_%A_%a.log
set -euo pipefail

: "${BIDS_DIR:?set BIDS_DIR}" "${OUT_DIR:?set OUT_DIR}" "${WORK_DIR:?set WORK_DIR}"
SIF=${SIF:-}
GPU_FLAG=${GPU_FLAG:-}

subjects() { find "$BIDS_DIR" -mindepth 1 -maxdepth 1 -type d -name 'sub-*' -printf '%f\n' | sort; }

app() {  # bids_msseg in the container (the dataset read-only, outputs and work writable), or natively
  if [ -n "$SIF" ]; then
    local container=${CONTAINER:-$(command -v apptainer || command -v singularity)}
    # shellcheck disable=SC2086  # GPU_FLAG is empty or one flag
    "$container" run --cleanenv $GPU_FLAG -B "$BIDS_DIR:/data/bids:ro" -B "$OUT_DIR:/data/out" \
      -B "$WORK_DIR:/work" "$SIF" /data/bids /data/out "$@" -w /work
  else
    NIPYPE_NO_ET=1 "${BIDS_MSSEG:-bids_msseg}" "$BIDS_DIR" "$OUT_DIR" "$@" -w "$WORK_DIR"
  fi
}

case "${1:-task}" in
  submit)
    n=$(subjects | wc -l)
    [ "$n" -gt 0 ] || { echo "no sub-* folder in $BIDS_DIR" >&2; exit 66; }
    mkdir -p "$OUT_DIR" "$WORK_DIR"
    # shellcheck disable=SC2086  # the *_ARGS are lists of options
    array=$(sbatch --parsable --array="1-$n" --export=ALL ${ARRAY_ARGS:-} "$0" task) || exit
    # shellcheck disable=SC2086
    group=$(sbatch --parsable --dependency="${GROUP_AFTER:-afterok}:$array" --export=ALL \
      --job-name=bids_msseg_group --cpus-per-task=1 --mem=4G --time=00:30:00 \
      --output=bids_msseg_group_%j.log ${GROUP_ARGS:-} "$0" group) || exit
    echo "participant array job $array ($n tasks), group job $group (${GROUP_AFTER:-afterok} on the array)"
    ;;
  task)
    label=$(subjects | sed -n "${SLURM_ARRAY_TASK_ID:?not an array task}p")
    echo "task $SLURM_ARRAY_TASK_ID: $label on $(hostname)"
    # One FLAIR at a time with every CPU of the task (bids_msseg uses min(--nprocs, --omp-nthreads) threads).
    cpus=${SLURM_CPUS_PER_TASK:-1}
    app participant --participant-label "${label#sub-}" --nprocs "$cpus" --omp-nthreads "$cpus" \
      --mem "$(( ${SLURM_MEM_PER_NODE:-12288} / 1024 ))"
    ;;
  group)
    app group
    ;;
  *)
    echo "usage: $0 submit | task | group" >&2; exit 64 ;;
esac
