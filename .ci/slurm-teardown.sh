#!/usr/bin/env bash
# Stop the single-node Slurm started by .ci/slurm-setup.sh (slurmd, slurmctld,
# munged). With --purge also delete the runtime state dir (jobs, logs), so the
# next slurm-setup.sh starts from scratch. Packages and /etc configs are kept.
set -euo pipefail

STATE_DIR=${NIN_SLURM_DIR:-/var/tmp/nin-slurm}
PURGE=0
[ "${1:-}" = "--purge" ] && PURGE=1

# Is a process with this exact name running? (Zombies don't count: PID 1 on
# some CI VMs reaps orphaned daemons late.)
alive() { ps -C "$1" -o stat= 2>/dev/null | grep -qv '^Z'; }

stop() { # stop <exact process name>
    local name=$1
    alive "$name" || return 0
    pkill -x "$name" || true
    for _ in $(seq 1 50); do
        alive "$name" || return 0
        sleep 0.2
    done
    echo "[slurm-teardown] $name did not exit on SIGTERM; sending SIGKILL" >&2
    pkill -9 -x "$name" || true
}

if command -v scancel >/dev/null 2>&1 && [ -f /etc/slurm/slurm.conf ]; then
    timeout 10 scancel --full --quiet --user=root 2>/dev/null || true
fi
stop slurmd
stop slurmctld
stop munged
if [ "$PURGE" = 1 ]; then
    rm -rf "$STATE_DIR"
fi
echo "[slurm-teardown] stopped slurmd/slurmctld/munged$([ "$PURGE" = 1 ] && echo "; removed $STATE_DIR")"
