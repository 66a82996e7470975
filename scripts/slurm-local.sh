#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for `pipe run --executor slurm` and its tests
# (issue #24): installs `slurm-wlm` and `munge` with apt-get when missing, writes a minimal
# slurm.conf (one node = this host, partition `debug` of its cores), and starts munged,
# slurmctld and slurmd. Idempotent: a daemon already running is left as it is, and a run
# on a machine whose cluster is up only checks it.
#
# Choices (made for containers, where there is no systemd and no cgroup delegation):
#   - every daemon runs as root (SlurmUser=root), started directly, not through systemd;
#   - ProctrackType=proctrack/linuxproc, TaskPlugin=task/none: no cgroups;
#   - no slurmdbd (AccountingStorageType=accounting_storage/none), so `sacct` has nothing
#     to show; instead JobCompType=jobcomp/filetxt writes one line per finished job to
#     $PIPE_SLURM_JOBCOMP (default /var/log/slurm/jobcomp.log): JobId, Name, JobState,
#     NodeList... That file is how tests check that each stage ran as its own job.
#
# Must run as root (or with passwordless sudo). Prints `ready: ...` and exits 0 when the
# cluster answers; exits 1 with the reason otherwise. Logs: /var/log/slurm/.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        exec sudo -n -E "$0" "$@"
    fi
    echo "slurm-local: needs root (or passwordless sudo) to install and start Slurm" >&2
    exit 1
fi

log() { echo "slurm-local: $*" >&2; }

# 1. Packages.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends slurm-wlm munge >/tmp/slurm-local-apt.log 2>&1; then
        apt-get update >/dev/null 2>&1 || true
        apt-get install -y --no-install-recommends slurm-wlm munge >/tmp/slurm-local-apt.log 2>&1 || {
            log "apt-get install slurm-wlm munge failed (see /tmp/slurm-local-apt.log)"
            exit 1
        }
    fi
fi

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
conf_dir=/etc/slurm
jobcomp=${PIPE_SLURM_JOBCOMP:-/var/log/slurm/jobcomp.log}
mkdir -p "$conf_dir" /var/log/slurm /var/spool/slurmctld /var/spool/slurmd /run/munge /var/log/munge /var/lib/munge

# 2. Configuration (rewritten only when it changes, so a running cluster keeps going).
conf=$(cat <<EOF
# Written by pipe's scripts/slurm-local.sh: a single-node cluster on this host.
ClusterName=pipe-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$jobcomp
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
MinJobAge=600
KillWait=5
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
DefMemPerCPU=512
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
)
changed=0
if [ ! -f "$conf_dir/slurm.conf" ] || [ "$(cat "$conf_dir/slurm.conf")" != "$conf" ]; then
    printf '%s\n' "$conf" >"$conf_dir/slurm.conf"
    changed=1
fi
touch "$jobcomp"

running() { pgrep -x "$1" >/dev/null 2>&1; }

# 3. munge (its key comes with the package; made here if missing).
if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then mungekey --create --force >/dev/null; else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
fi
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
if ! running munged; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
fi

# 4. slurmctld, slurmd (restarted when the configuration changed).
if [ "$changed" = 1 ]; then
    for d in slurmd slurmctld; do
        if running "$d"; then
            log "configuration changed: restarting $d"
            pkill -x "$d" || true
            for _ in $(seq 50); do running "$d" || break; sleep 0.1; done
        fi
    done
fi
if ! running slurmctld; then
    log "starting slurmctld"
    /usr/sbin/slurmctld
fi
if ! running slurmd; then
    log "starting slurmd"
    /usr/sbin/slurmd
fi

# 5. Wait until the node takes jobs.
for _ in $(seq 100); do
    state=$(sinfo -h -n "$host" -o '%T' 2>/dev/null | head -n1 || true)
    case "$state" in
    idle* | mixed* | allocated* | completing*)
        echo "ready: partition debug, node $host, $cpus CPUs, ${mem_mb} MB; jobcomp $jobcomp"
        exit 0
        ;;
    down* | drain*)
        scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
        ;;
    esac
    sleep 0.2
done
log "the node did not become ready (state: ${state:-none}); see /var/log/slurm/"
exit 1
