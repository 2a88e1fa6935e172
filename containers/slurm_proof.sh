#!/usr/bin/env bash
# Prove the SLURM path on a real scheduler: bring up a one-node SLURM cluster on this machine
# (Debian's slurm-wlm and munge), submit containers/slurm_participant_array.sh for a BIDS dataset
# of 3 participants (one array task each) and its group job (--dependency=afterok on the array),
# check every output and the group table, then run one participant through nipype's SLURM plugin
# (`bids_msseg ... --nipype-plugin SLURM`). Everything it started is stopped by process id and
# the machine is left as it was found.
#
# Usage (as root): bash containers/slurm_proof.sh RUN_DIR      (dataset, outputs, job logs)
#
# Environment:
#   BIDS_MSSEG     the bids_msseg the jobs run natively (default: `command -v bids_msseg`); the
#                  container (SIF) path of the array script needs Apptainer, which this machine lacks.
#   SHARED_DATA    the real data folder (default ../shared/data next to the repository)
#   KEEP_PACKAGES=1  keep the packages this script installed (default: purged at the end)
#   JOB_TIMEOUT    seconds to wait for the jobs (default 1800)
#
# The three participants are real FLAIRs, symlinked (never copied): sub-p26 = 3D-MR-MS patient 26
# (Lesjak et al. 2017, CC-BY, 3D, skull-stripped), sub-msl14 = MSLesSeg P14 visit 1 (Guarnera et al.
# 2025, CC BY 4.0, 3D, skull-stripped), sub-lj03 = Ljubljana longitudinal patient 3, study 1
# (Lesjak et al. 2016, CC BY, raw 2D with skull).
#
# Nothing is written under /etc, /run or /var/log: the daemons' configuration, key, sockets, pid
# files, spool and logs live in a fresh folder under /var/tmp (traversable by the munge user),
# removed at the end; clients find the configuration through SLURM_CONF; ports are free ones.
# While packages are installed, a policy-rc.d keeps their post-install scripts from starting
# services. Heavy work runs niced: slurmd runs under `nice -n 10`, and its jobs inherit it.
# Exit status: 0 all checks passed, 1 a check failed, 77 SLURM or munge cannot be installed or started.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
RUN_DIR=$(realpath -m "${1:?usage: slurm_proof.sh RUN_DIR}")
SHARED_DATA=${SHARED_DATA:-$REPO/../shared/data}
BIDS_MSSEG=${BIDS_MSSEG:-$(command -v bids_msseg || true)}
JOB_TIMEOUT=${JOB_TIMEOUT:-1800}
T0=$(date +%s)
FAILED=()
PIDS=()          # daemons started here, stopped by pid at the end
NEW_PACKAGES=()  # packages installed here, purged at the end
POLICY_RC=/usr/sbin/policy-rc.d

jobcomp() {  # the job completion records of a file (from line ${2:-1}), main fields only
  tail -n +"${2:-1}" "$1" | awk '{ line = ""
    for (i = 1; i <= NF; i++) if ($i ~ /^(JobId|Name|JobState|StartTime|EndTime|NodeList|Tres|ArrayJobId|ArrayTaskId|ExitCode)=/) line = line " " $i
    print substr(line, 2) }'
}
step() { echo "[slurm +$(( $(date +%s) - T0 ))s] $*"; }
check() {  # check DESCRIPTION COMMAND...: a named check, reported either way
  if "${@:2}"; then echo "  ok: $1"; else echo "  FAILED: $1"; FAILED+=("$1"); fi
}
skip() { echo "SKIP: $*"; exit 77; }

[ "$(id -u)" = 0 ] || skip "needs root (apt-get, munged as the munge user, slurmd)"
[ -x "$BIDS_MSSEG" ] || skip "no bids_msseg to run (set BIDS_MSSEG)"

stop_pid() {  # stop one daemon by its pid: TERM, then KILL after 20 s
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid"
  for i in $(seq 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null
}
cleanup() {
  local i
  if [ -n "${SLURM_CONF:-}" ] && squeue -h -o %i 2>/dev/null | grep -q .; then  # jobs left (timeout, ^C)
    squeue -h -o %i | xargs scancel && sleep 5 && step "cancelled the jobs still queued or running"
  fi
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do stop_pid "${PIDS[i]}"; done
  [ ${#PIDS[@]} -gt 0 ] && step "stopped daemons (pids ${PIDS[*]})"
  [ -n "${STATE:-}" ] && rm -rf "$STATE"
  if [ -n "${OWN_POLICY:-}" ]; then rm -f "$POLICY_RC"; fi
  if [ ${#NEW_PACKAGES[@]} -gt 0 ] && [ "${KEEP_PACKAGES:-0}" != 1 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "${NEW_PACKAGES[@]}" >/dev/null 2>&1 \
      && step "purged the ${#NEW_PACKAGES[@]} packages installed here" \
      || step "could not purge ${NEW_PACKAGES[*]}"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ packages
installed() { dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' 2>/dev/null | awk '$1 == "ii" {print $2}' | sort; }
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  before=$(installed)
  if [ ! -e "$POLICY_RC" ]; then  # no service starts during the install
    printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC" && chmod 755 "$POLICY_RC" && OWN_POLICY=1
  fi
  step "apt-get install slurm-wlm munge"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurm-wlm munge >/dev/null; } 2>&1 | tail -5
  mapfile -t NEW_PACKAGES < <(comm -13 <(echo "$before") <(installed))
  if [ -n "${OWN_POLICY:-}" ]; then rm -f "$POLICY_RC"; OWN_POLICY=; fi
  command -v slurmctld >/dev/null && command -v munged >/dev/null || skip "slurm-wlm/munge could not be installed"
  step "installed ${#NEW_PACKAGES[@]} packages: ${NEW_PACKAGES[*]}"
fi
step "$(slurmctld -V), munge $(dpkg-query -W -f '${Version}' munge), $(nproc) CPUs"
id munge >/dev/null 2>&1 || skip "no munge user (the munge package creates it)"

# ------------------------------------------------------------------ munge
STATE=$(mktemp -d /var/tmp/bids_msseg_slurm.XXXXXX)
chmod 755 "$STATE"
MUNGE=$STATE/munge
mkdir -m 755 "$MUNGE" && chown munge:munge "$MUNGE"   # the socket needs x for all; the key is 0400
dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none
chown munge:munge "$MUNGE/munge.key" && chmod 400 "$MUNGE/munge.key"
SOCKET=$MUNGE/munge.socket
step "munged as the munge user (key, socket, pid and log in $MUNGE)"
runuser -u munge -- munged --key-file="$MUNGE/munge.key" --socket="$SOCKET" --pid-file="$MUNGE/munged.pid" \
  --log-file="$MUNGE/munged.log" --seed-file="$MUNGE/munged.seed" \
  || { cat "$MUNGE/munged.log" 2>/dev/null; skip "munged would not start"; }
PIDS+=("$(cat "$MUNGE/munged.pid")")
munge -n -S "$SOCKET" | unmunge -S "$SOCKET" | grep -E '^(STATUS|UID)' || skip "munge does not round-trip a credential"

# ------------------------------------------------------------------ slurm
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HOST=$(hostname -s)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 3 / 4 ))
mkdir -p "$STATE/ctld" "$STATE/slurmd"
export SLURM_CONF=$STATE/slurm.conf
cat >"$SLURM_CONF" <<EOF
# One-node cluster of containers/slurm_proof.sh (everything under $STATE).
ClusterName=bidsmsseg
SlurmctldHost=$HOST
SlurmUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.log
MpiDefault=none
ReturnToService=2
MinJobAge=3600
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
step "slurm.conf: $(grep -E '^(ProctrackType|TaskPlugin|SelectType|NodeName)=' "$SLURM_CONF" | xargs)"
slurmctld -f "$SLURM_CONF" || { tail "$STATE/slurmctld.log"; skip "slurmctld would not start"; }
sleep 1
PIDS+=("$(cat "$STATE/slurmctld.pid")")
nice -n 10 slurmd -f "$SLURM_CONF" || { tail "$STATE/slurmd.log"; skip "slurmd would not start"; }
sleep 1
PIDS+=("$(cat "$STATE/slurmd.pid")")
for _ in $(seq 60); do sinfo -h -o %T | grep -q idle && break; sleep 1; done
sinfo
sinfo -h -o %T | grep -q idle || { tail -20 "$STATE/slurmctld.log" "$STATE/slurmd.log"; skip "the node did not come up idle"; }

# ------------------------------------------------------------------ dataset of 3 participants
BIDS=$RUN_DIR/bids
rm -rf "$RUN_DIR" && mkdir -p "$BIDS" "$RUN_DIR/logs"
declare -A SOURCES=(
  [sub-p26/anat/sub-p26_FLAIR.nii.gz]=3d-mr-ms/patient26/patient26_FLAIR_mni.nii.gz
  [sub-msl14/anat/sub-msl14_FLAIR.nii.gz]=mslesseg/P14/P14_T1_FLAIR.nii.gz
  [sub-lj03/anat/sub-lj03_FLAIR.nii.gz]=raw-flair/ljubljana-longitudinal_patient03_study1_FLAIR.nii.gz
)
for rel in "${!SOURCES[@]}"; do
  src=$SHARED_DATA/${SOURCES[$rel]}
  [ -f "$src" ] || skip "real data not available: $src"
  mkdir -p "$BIDS/$(dirname "$rel")" && ln -s "$(realpath "$src")" "$BIDS/$rel"
done
printf '{"Name": "bids_msseg SLURM proof (3D-MR-MS, MSLesSeg, Ljubljana longitudinal; see containers/slurm_proof.sh)", "BIDSVersion": "1.10.0"}\n' \
  >"$BIDS/dataset_description.json"
step "dataset $BIDS: $(cd "$BIDS" && ls -d sub-* | xargs)"

# ------------------------------------------------------------------ array + dependent group job
wait_for_jobs() {  # wait until none of the given job ids is in the queue
  local pattern deadline=$(( SECONDS + JOB_TIMEOUT ))
  pattern=$(IFS='|'; echo "$*")
  while squeue -h -o '%i' | grep -q -E "^($pattern)(_|$)"; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "jobs still queued after $JOB_TIMEOUT s"; squeue; return 1; }
    sleep 5
  done
}
OUT=$RUN_DIR/out
cd "$RUN_DIR/logs" || exit 1
step "submit: BIDS_DIR=$BIDS OUT_DIR=$OUT WORK_DIR=$RUN_DIR/work ARRAY_ARGS='--cpus-per-task=2 --mem=4G --time=00:30:00' bash containers/slurm_participant_array.sh submit"
submitted=$(BIDS_DIR=$BIDS OUT_DIR=$OUT WORK_DIR=$RUN_DIR/work BIDS_MSSEG=$BIDS_MSSEG \
  ARRAY_ARGS="--cpus-per-task=2 --mem=4G --time=00:30:00" GROUP_ARGS="--time=00:10:00" \
  bash "$REPO/containers/slurm_participant_array.sh" submit)
echo "$submitted"
ARRAY=$(sed -n 's/^participant array job \([0-9]*\) .*/\1/p' <<<"$submitted")
GROUP=$(sed -n 's/.*, group job \([0-9]*\) .*/\1/p' <<<"$submitted")
[ -n "$ARRAY" ] && [ -n "$GROUP" ] || { echo "submission failed"; exit 1; }
sleep 2
step "squeue right after submission (the group job waits on its dependency):"
squeue -o '%.10i %.18j %.8T %.10M %.6C %R'
scontrol show job "$GROUP" | grep -o -E 'JobState=[A-Z]+|Reason=[A-Za-z]+|Dependency=[^ ]+'
wait_for_jobs "$ARRAY" "$GROUP"
step "jobs ended; scontrol show job (state, exit code, times, node):"
for job in "$ARRAY" "$GROUP"; do
  scontrol show job "$job" | grep -o -E '^JobId=[0-9]+( ArrayJobId=[0-9]+ ArrayTaskId=[0-9]+)?|JobName=[^ ]+|JobState=[A-Z]+|ExitCode=[0-9:]+|StartTime=[^ ]+|EndTime=[^ ]+|\bNodeList=[^ ]+' \
    | paste -sd' ' | sed 's/ JobId=/\nJobId=/g'
done
step "sacct:"
sacct -j "$ARRAY,$GROUP" 2>&1 | head -5
step "job completion log (jobcomp/filetxt; fields JobId Name JobState StartTime EndTime NodeList Tres ArrayJobId ArrayTaskId ExitCode):"
jobcomp "$STATE/jobcomp.log"
step "array task and group job logs:"
for log in "$RUN_DIR"/logs/*.log; do echo "--- $(basename "$log")"; grep -v '^\s*$' "$log" | tail -6; done

step "checks:"
state_of() { scontrol show job "$1" | grep -o -E 'JobState=[A-Z]+' | sort -u | paste -sd,; }
check "every array task COMPLETED" test "$(state_of "$ARRAY")" = "JobState=COMPLETED"
check "the group job COMPLETED after the array" test "$(state_of "$GROUP")" = "JobState=COMPLETED"
check "one array task per participant (3)" test "$(scontrol show job "$ARRAY" | grep -c '^JobId=')" = 3
for rel in "${!SOURCES[@]}"; do
  sub=${rel%%/*}
  for suffix in label-lesion_mask label-lesion_probseg seg-lesions_dseg; do
    check "$sub $suffix" test -s "$OUT/$sub/anat/${sub}_space-orig_${suffix}.nii.gz"
  done
  check "$sub lesion summary" test -s "$OUT/$sub/anat/${sub}_desc-lesions_summary.tsv"
done
check "group table: the 3 participants, status ok" "${BIDS_MSSEG%/*}/python" - "$OUT/group_lesions.tsv" <<'PY'
import sys

import pandas as pd

table = pd.read_csv(sys.argv[1], sep="\t")
print(table[["participant_id", "status", "total_lesion_volume_ml", "lesion_count", "brain_volume_ml"]].to_string(index=False))
ok = sorted(table["participant_id"]) == ["sub-lj03", "sub-msl14", "sub-p26"] and (table["status"] == "ok").all()
sys.exit(0 if ok else 1)
PY
check "group report" test -s "$OUT/group_report.html"

# ------------------------------------------------------------------ nipype's SLURM plugin
NIPYPE_OUT=$RUN_DIR/out_nipype_slurm
jobs_before=$(wc -l <"$STATE/jobcomp.log")
step "nipype SLURM plugin: bids_msseg $BIDS $NIPYPE_OUT participant --participant-label p26 --nipype-plugin SLURM --plugin-args '{\"sbatch_args\": \"--cpus-per-task=2 --mem=4G\"}'"
# nipype's SLURM plugin names its jobs after $LOGNAME and fails without it (KeyError: 'LOGNAME');
# login shells set it, this script may run without one.
LOGNAME=${LOGNAME:-$(id -un)} NIPYPE_NO_ET=1 nice -n 10 "$BIDS_MSSEG" "$BIDS" "$NIPYPE_OUT" participant --participant-label p26 \
  --nprocs 2 --omp-nthreads 2 --nipype-plugin SLURM --plugin-args '{"sbatch_args": "--cpus-per-task=2 --mem=4G"}' \
  -w "$RUN_DIR/work_nipype_slurm" 2>&1 | tail -8
nipype_rc=${PIPESTATUS[0]}
step "jobs the plugin submitted (one per workflow node):"
jobcomp "$STATE/jobcomp.log" "$(( jobs_before + 1 ))"
check "bids_msseg with --nipype-plugin SLURM exits 0" test "$nipype_rc" = 0
check "the plugin ran the nodes as SLURM jobs" test "$(tail -n +"$(( jobs_before + 1 ))" "$STATE/jobcomp.log" | grep -c 'JobState=COMPLETED')" -ge 1
MASK=sub-p26/anat/sub-p26_space-orig_label-lesion_mask.nii.gz
check "sub-p26 mask through the SLURM plugin" test -s "$NIPYPE_OUT/$MASK"
same_voxels() {
  "${BIDS_MSSEG%/*}/python" -c 'import sys, nibabel as nib, numpy as np
a, b = (np.asanyarray(nib.load(p).dataobj) for p in sys.argv[1:])
print(f"  {int(a.sum())} vs {int(b.sum())} lesion voxels"); sys.exit(0 if a.shape == b.shape and (a == b).all() else 1)' "$@"
}
check "same sub-p26 mask from the array task and from the nipype SLURM plugin" same_voxels "$OUT/$MASK" "$NIPYPE_OUT/$MASK"

if [ ${#FAILED[@]} -gt 0 ]; then
  step "SLURM PROOF FAILED: ${#FAILED[@]} check(s): ${FAILED[*]}"
  exit 1
fi
step "SLURM PROOF OK in $(( $(date +%s) - T0 )) s"
