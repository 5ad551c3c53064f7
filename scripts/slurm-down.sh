#!/usr/bin/env bash
# Stops the daemons of scripts/slurm-up.sh, by pid only (never by name).
#   bash scripts/slurm-down.sh            # those recorded under $SLURM_BASE/run
#   bash scripts/slurm-down.sh FILE       # only those listed in FILE ("name pid" lines, as
#                                         # written by slurm-up.sh with SLURM_STARTED=FILE)
set -uo pipefail
BASE=${SLURM_BASE:-/tmp/cloudchamber-slurm}

stop() { # name pid
    local name=$1 pid=$2
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        echo "slurm-down: stopped $name (pid $pid)" >&2
    else
        echo "slurm-down: $name (pid ${pid:-?}) is not running" >&2
    fi
}

if [ $# -ge 1 ]; then
    # Reverse order of starting: slurmd, slurmctld, munged.
    tac "$1" | while read -r name pid; do [ -n "${name:-}" ] && stop "$name" "$pid"; done
else
    for d in slurmd slurmctld munged; do
        f=$BASE/run/$d.pid
        if [ -s "$f" ]; then stop "$d" "$(cat "$f")"; rm -f "$f"; else echo "slurm-down: no pid file for $d" >&2; fi
    done
fi
