#!/usr/bin/env bash
# A one-machine Slurm cluster for the tests (and for trying `--executor slurm` on a laptop):
# munged + slurmctld + slurmd started by hand (no systemd, no cgroups, no accounting database),
# adapted from a tested recipe for Debian 12 (slurm-wlm 22.05, munge 0.5.15).
#
#   sudo bash scripts/slurm-up.sh            # then: export SLURM_CONF=$SLURM_BASE/slurm.conf
#   sudo bash scripts/slurm-down.sh          # stops what is recorded under $SLURM_BASE/run
#
# Idempotent: a daemon that already answers is left alone. With SLURM_STARTED=FILE, the name and
# pid of each daemon this call started is appended to FILE, so a caller (scripts/test) can stop
# exactly those and nothing it did not start. Needs root (apt-get, daemons).
set -euo pipefail

BASE=${SLURM_BASE:-/tmp/cloudchamber-slurm}
export SLURM_CONF=$BASE/slurm.conf
NODE=$(hostname -s)
started_file=${SLURM_STARTED:-/dev/null}
say() { echo "slurm-up: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    say "needs root (it installs packages and starts daemons)"
    exit 1
fi

# 1. Packages, only when missing (~16 s on a warm apt cache).
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge"
    [ -n "$(find /var/lib/apt/lists -name '*Packages*' -print -quit 2>/dev/null)" ] || apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# 2. Directories: slurmctld drops to user `slurm`, so it must own its state and logs.
mkdir -p "$BASE"/{state,spool,log,run}
chown -R slurm:slurm "$BASE/state" "$BASE/log" "$BASE/run"
chmod 755 "$BASE" "$BASE/log" "$BASE/run"
mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge

# 3. The munge key (Debian's postinst normally creates it already).
if [ ! -s /etc/munge/munge.key ]; then
    say "creating the munge key"
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi

# 4. slurm.conf: this machine is the only node; every core schedulable; no cgroups or slurmdbd
#    (so no sacct: cloudchamber keeps job state in its own store). KillWait 10 s: a run that
#    gets SIGTERM checkpoints in well under a second.
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2/1024*0.9}' /proc/meminfo)
CPUS=$(nproc)
cat > "$SLURM_CONF.tmp" <<CONF
ClusterName=cloudchamber
SlurmctldHost=$NODE
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=10
MaxArraySize=100001
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=main Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
# Rewrite only on change, so a running slurmctld never sees its file move under it needlessly.
if cmp -s "$SLURM_CONF.tmp" "$SLURM_CONF"; then rm "$SLURM_CONF.tmp"; else mv "$SLURM_CONF.tmp" "$SLURM_CONF"; fi

# 5. munged, as user munge (like the systemd unit).
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already running"
else
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    cp /run/munge/munged.pid "$BASE/run/munged.pid"
    echo "munged $(cat "$BASE/run/munged.pid")" >> "$started_file"
    say "munged started (pid $(cat "$BASE/run/munged.pid"))"
fi

# 6. slurmctld (started as root, drops to SlurmUser).
if scontrol ping 2>/dev/null | grep -q 'is UP'; then
    say "slurmctld already up"
else
    /usr/sbin/slurmctld -f "$SLURM_CONF"
    for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.2; done
    if ! scontrol ping | grep -q 'is UP'; then tail -20 "$BASE/log/slurmctld.log" >&2; exit 1; fi
    echo "slurmctld $(cat "$BASE/run/slurmctld.pid")" >> "$started_file"
    say "slurmctld up (pid $(cat "$BASE/run/slurmctld.pid"))"
fi

# 7. slurmd (root).
if [ -s "$BASE/run/slurmd.pid" ] && kill -0 "$(cat "$BASE/run/slurmd.pid")" 2>/dev/null; then
    say "slurmd already running (pid $(cat "$BASE/run/slurmd.pid"))"
else
    /usr/sbin/slurmd -f "$SLURM_CONF"
    for _ in $(seq 50); do [ -s "$BASE/run/slurmd.pid" ] && break; sleep 0.1; done
    echo "slurmd $(cat "$BASE/run/slurmd.pid")" >> "$started_file"
    say "slurmd started (pid $(cat "$BASE/run/slurmd.pid"))"
fi

# 8. Wait until the node takes jobs; a node left DOWN/DRAIN by an earlier session is resumed.
st=
for _ in $(seq 150); do
    st=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
    case "$st" in idle*|mixed*|allocated*) break ;; down*|drain*)
        scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;; esac
    sleep 0.2
done
case "$st" in
    idle*|mixed*|allocated*) say "node $NODE is $st; export SLURM_CONF=$SLURM_CONF" ;;
    *) say "node $NODE is '$st', not schedulable"; tail -20 "$BASE/log/slurmd.log" >&2; exit 1 ;;
esac
