#!/bin/bash
#
# hpccl batch script for job 'demo' on site 'local' (no scheduler), written by `hpccl submit`.
# 2 rank(s) = 1 node(s) x 2 rank(s) per node, one per GPU; walltime 24:00:00.
#
# Run directory: /scratch/hpccl runs/demo
#   job.yaml          the resolved job this script runs
#   job.sh            this script; resubmit it by hand with: bash '/scratch/hpccl runs/demo/job.sh'
#   submission.json   what `hpccl submit` did (command, scheduler job id); job_ids.txt: every job id
#   attempts.log      one line per start, signal and exit of this script
#   log.h5, ranks/    the run's logs (hpccl analyze RUN_DIR); checkpoint/: where a resume starts
#
# On start: resume from checkpoint/ when it holds a checkpoint, else start the job. A warning
# signal (USR1, or TERM) is passed to the launcher as USR1: every rank checkpoints at the next
# epoch boundary and exits with code 99, and then the script ends; run it again to resume. A run that fails
# after writing a (periodic) checkpoint during this start is treated the same way.
set -uo pipefail

RUN_DIR='/scratch/hpccl runs/demo'
SUBMIT_DIR=/home/user/project
PYTHON=/home/user/project/.venv/bin/python
EXIT_REQUEUE=99
JOB_ID="local-$$"

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') job $JOB_ID: $*" | tee -a "$RUN_DIR/attempts.log"; }

# --- environment ------------------------------------------------------------------------------
cd "$SUBMIT_DIR" || exit 1   # relative paths resolve as they did at submission

# --- start or resume --------------------------------------------------------------------------
# A start after the run finished (e.g. a requeue after a node failure) has nothing to do.
# (Log strings are fixed-length UTF-8, which h5py returns as bytes.)
if [[ -f "$RUN_DIR/log.h5" ]] && "$PYTHON" -c 'import sys, h5py
s = h5py.File(sys.argv[1], "r").attrs.get("status", b"")
sys.exit((s.decode() if isinstance(s, bytes) else s) != "complete")' "$RUN_DIR/log.h5" 2>/dev/null; then
  log "the run is already complete (log.h5); nothing to do"
  exit 0
fi
# Whether checkpoint/ holds a checkpoint, after finishing a checkpoint swap that a kill left
# between its renames (hpccl.core.checkpoint_dirs; without that, a requeue would start afresh).
has_checkpoint() { "$PYTHON" -m hpccl.core.checkpoint_dirs "$RUN_DIR"; }
has_checkpoint; found=$?
if (( found == 0 )); then
  log "resuming from $RUN_DIR/checkpoint"
  hpccl_args=(run --resume "$RUN_DIR")
elif (( found == 10 )); then
  log "starting"
  hpccl_args=(run "$RUN_DIR/job.yaml" --out "$RUN_DIR")
else
  log "could not look for a checkpoint in $RUN_DIR (exit $found): not starting the run"
  exit "$found"
fi

launcher=(/usr/bin/mpirun -np 2 --oversubscribe --allow-run-as-root)
# HPCCL_LAUNCHER replaces the launcher (a test and debugging hook, e.g. a local 'mpirun -np 2').
if [[ -n "${HPCCL_LAUNCHER:-}" ]]; then read -r -a launcher <<< "$HPCCL_LAUNCHER"; fi

# --- pre-flight: hpccl check on this allocation (seconds) ----------------------------------------
# Thread level, RMA windows across the nodes, reads while their owner is busy, one GPU per rank:
# a job that cannot work ends here with the reason (exit 2) instead of hanging.
# HPCCL_SKIP_CHECK=1 skips it.
if [[ "${HPCCL_SKIP_CHECK:-0}" != 1 ]]; then
  "${launcher[@]}" "$PYTHON" -m hpccl check "$RUN_DIR/job.yaml"; rc=$?
  if (( rc != 0 )); then
    log "hpccl check failed (exit $rc): not starting the run"
    exit "$rc"
  fi
fi

launcher_pid=""
got_signal=0
forward() {
  got_signal=1
  log "got SIG$1: asking the run to checkpoint and stop"
  if [[ -n "$launcher_pid" ]]; then kill -s USR1 "$launcher_pid" 2>/dev/null; fi
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

# --- launch -----------------------------------------------------------------------------------
checkpoint_stamp() { has_checkpoint >/dev/null 2>&1; stat -c %y "$RUN_DIR/checkpoint/state.json" 2>/dev/null || echo none; }
checkpoint_at_start=$(checkpoint_stamp)
"${launcher[@]}" "$PYTHON" -m hpccl "${hpccl_args[@]}" &
launcher_pid=$!
while :; do
  got_signal=0
  wait "$launcher_pid"; rc=$?
  if (( got_signal && rc > 128 )); then continue; fi   # a trapped signal interrupted wait
  break
done
log "the run exited with code $rc"

# A rank lost without warning (node failure, OOM kill) ends the run with an error. If it wrote a
# checkpoint since this start, go on like a preemption and resume from that; a failure before
# any new checkpoint would only repeat itself, and exit codes 2 (bad input) and 3 (training
# diverged) are not the machine's fault.
if (( rc != 0 && rc != EXIT_REQUEUE && rc != 2 && rc != 3 )) && [[ "$(checkpoint_stamp)" != "$checkpoint_at_start" ]]; then
  log "the run failed (exit $rc) after writing a checkpoint: continuing from it"
  rc=$EXIT_REQUEUE
fi
if (( rc == EXIT_REQUEUE )); then
  # No scheduler to requeue with: the checkpoint waits for the next start of this script.
  log "checkpointed; resume with: bash $(printf %q "$RUN_DIR/job.sh")"
fi
exit "$rc"
