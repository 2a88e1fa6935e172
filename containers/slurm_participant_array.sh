#!/bin/bash
# One participant per SLURM array task under Apptainer/Singularity, then the group level once all
# tasks have ended (a job dependency). See docs/hpc.md.
#
# Submit everything (from a login node; N is counted from the dataset's sub-* folders):
#
#   BIDS_DIR=/data/bids OUT_DIR=/data/bids/derivatives/bids_msseg WORK_DIR=/scratch/$USER/bids_msseg_work \
#   SIF=/path/to/bids_msseg.sif bash containers/slurm_participant_array.sh submit
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

: "${BIDS_DIR:?set BIDS_DIR}" "${OUT_DIR:?set OUT_DIR}" "${WORK_DIR:?set WORK_DIR}" "${SIF:?set SIF}"
CONTAINER=${CONTAINER:-$(command -v apptainer || command -v singularity)}
GPU_FLAG=${GPU_FLAG:-}   # "--nv" for a CUDA image on GPU nodes (and request a GPU with --gres)

subjects() { find "$BIDS_DIR" -mindepth 1 -maxdepth 1 -type d -name 'sub-*' -printf '%f\n' | sort; }

app() {  # bids_msseg in the container; the dataset read-only, outputs and work writable
  "$CONTAINER" run --cleanenv $GPU_FLAG -B "$BIDS_DIR:/data/bids:ro" -B "$OUT_DIR:/data/out" \
    -B "$WORK_DIR:/work" "$SIF" /data/bids /data/out "$@" -w /work
}

case "${1:-task}" in
  submit)
    n=$(subjects | wc -l)
    [ "$n" -gt 0 ] || { echo "no sub-* folder in $BIDS_DIR" >&2; exit 66; }
    mkdir -p "$OUT_DIR" "$WORK_DIR"
    array=$(sbatch --parsable --array="1-$n" --export=ALL "$0" task)
    group=$(sbatch --parsable --dependency="afterany:$array" --export=ALL --job-name=bids_msseg_group \
      --cpus-per-task=1 --mem=4G --time=00:30:00 --output=bids_msseg_group_%j.log "$0" group)
    echo "participant array job $array ($n tasks), group job $group (after the array)"
    ;;
  task)
    label=$(subjects | sed -n "${SLURM_ARRAY_TASK_ID:?not an array task}p")
    echo "task $SLURM_ARRAY_TASK_ID: $label on $(hostname)"
    app participant --participant-label "${label#sub-}" --nprocs 1 \
      --omp-nthreads "${SLURM_CPUS_PER_TASK:-1}" --mem "$(( ${SLURM_MEM_PER_NODE:-12288} / 1024 ))"
    ;;
  group)
    app group
    ;;
  *)
    echo "usage: $0 submit | task | group" >&2; exit 64 ;;
esac
