#!/usr/bin/env bash
# A single-node Slurm cluster on localhost, for tests and for trying `deno task slurm` without a
# cluster. Needs root and Debian's slurm-wlm and munge (run.sh installs them for the tests).
#
#   bash scripts/slurm/local-cluster.sh start DIR   writes DIR/slurm.conf, starts munged, slurmctld
#                                                  and slurmd, waits until the node is idle, and
#                                                  prints SLURM_CONF=DIR/slurm.conf
#   bash scripts/slurm/local-cluster.sh stop DIR    cancels DIR's cluster's jobs and stops its daemons
#
# Clients (sbatch, squeue, deno task slurm) reach this cluster through SLURM_CONF=DIR/slurm.conf.
# Everything lives under DIR (state, spool, logs, the munge key and socket); no system file is
# touched. No cgroups: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none; every job runs as
# root. Environment: SLURM_CPUS (node CPUs, default nproc), SLURM_MEMORY_MB (default the machine's
# memory less 1 GiB), SLURMCTLD_PORT and SLURMD_PORT (default 6817, 6818), SLURM_START_TIMEOUT
# (seconds to wait for an idle node, default 60).
# Exit codes: 0 started/stopped, 1 cannot start (the reason on stderr), 64 usage.
set -euo pipefail

usage() { echo "usage: bash $0 start|stop DIR" >&2; exit 64; }
fail() { echo "local-cluster: $*" >&2; exit 1; }

[ $# -eq 2 ] || usage
action="$1"
mkdir -p "$2"
dir="$(cd "$2" && pwd)"
conf="$dir/slurm.conf"

stop_pid() { # a daemon this script started, by the PID file it wrote
  local file="$1" pid
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

stop() {
  if [ -f "$conf" ] && [ -f "$dir/slurmctld.pid" ]; then
    SLURM_CONF="$conf" scancel --full --quiet --user=root 2>/dev/null || true
    # running batch jobs end with their slurmstepd; give them a moment
    for _ in $(seq 30); do
      [ -z "$(SLURM_CONF="$conf" squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  stop_pid "$dir/slurmd.pid"
  stop_pid "$dir/slurmctld.pid"
  stop_pid "$dir/munged.pid"
}

start() {
  [ "$(id -u)" = 0 ] || fail "needs root (slurmd runs jobs as their user and must be root)"
  local bin
  for bin in munged slurmctld slurmd sbatch squeue sinfo scancel; do
    command -v "$bin" >/dev/null 2>&1 || fail "$bin not found (install Debian's slurm-wlm and munge)"
  done
  [ -f "$dir/slurmctld.pid" ] && fail "$dir: a cluster was started there and not stopped (stop it first)"
  local cpus="${SLURM_CPUS:-$(nproc)}"
  local memory="${SLURM_MEMORY_MB:-$(($(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo) - 1024))}"
  local ctld_port="${SLURMCTLD_PORT:-6817}" d_port="${SLURMD_PORT:-6818}"
  mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
  chmod 0700 "$dir/munge"

  # munge: a fresh key and a daemon on our own socket
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
  chmod 0400 "$dir/munge/munge.key"
  munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" \
    || fail "munged did not start: $(tail -n 3 "$dir/log/munged.log" 2>/dev/null)"

  cat >"$conf" <<CONF
# written by scripts/slurm/local-cluster.sh: one node on localhost, no cgroups
ClusterName=uhflocal
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# finished jobs stay visible to squeue/scontrol for 10 minutes
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

  slurmctld -c -f "$conf" || { stop; fail "slurmctld did not start: $(tail -n 3 "$dir/log/slurmctld.log" 2>/dev/null)"; }
  slurmd -N localhost -f "$conf" || { stop; fail "slurmd did not start: $(tail -n 3 "$dir/log/slurmd.log" 2>/dev/null)"; }
  local state="" deadline=$((SECONDS + ${SLURM_START_TIMEOUT:-60}))
  while [ $SECONDS -lt $deadline ]; do
    state="$(SLURM_CONF="$conf" sinfo -h -n localhost -o %T 2>/dev/null || true)"
    [ "$state" = idle ] && break
    sleep 0.5
  done
  if [ "$state" != idle ]; then
    local why
    why="$(tail -n 2 "$dir/log/slurmd.log" "$dir/log/slurmctld.log" 2>/dev/null | tr '\n' ' ')"
    stop
    fail "node localhost did not become idle (state: ${state:-none}): $why"
  fi
  echo "SLURM_CONF=$conf"
}

case "$action" in
  start) start ;;
  stop) stop; echo "stopped" ;;
  *) usage ;;
esac
