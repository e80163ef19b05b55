#!/usr/bin/env bash
# Install and start a single-node Slurm cluster (slurmctld + slurmd + munged)
# on this machine, for CI tests that submit real jobs (sbatch, submitit,
# scontrol requeue). Idempotent: if the node is already idle, it does nothing.
#
# Must run as root on Debian/Ubuntu. No systemd needed: daemons are started
# directly. Everything Slurm writes at runtime lives under $NIN_SLURM_DIR.
#
# Env knobs: NIN_SLURM_DIR (default /var/tmp/nin-slurm),
#            NIN_SLURM_WAIT (seconds to wait for the node, default 60),
#            NIN_SLURM_CRED_EXPIRE (credential lifetime = delay before a
#              requeued job may start again, default 10; Slurm default 120).
set -euo pipefail

STATE_DIR=${NIN_SLURM_DIR:-/var/tmp/nin-slurm}
WAIT_S=${NIN_SLURM_WAIT:-60}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
NODE=$(hostname -s 2>/dev/null || hostname)
T0=$(date +%s)

# Don't let a Slurm job environment (e.g. running inside an allocation) or a
# custom SLURM_CONF redirect the client commands we use below.
unset SLURM_CONF SLURM_JOB_ID SLURM_JOBID 2>/dev/null || true

# Is a process with this exact name running? (Zombies don't count: PID 1 on
# some CI VMs reaps orphaned daemons late.)
alive() { ps -C "$1" -o stat= 2>/dev/null | grep -qv '^Z'; }

log() { echo "[slurm-setup] $*"; }
die() {
    echo "[slurm-setup] ERROR: $*" >&2
    for f in "$STATE_DIR/log/slurmctld.log" "$STATE_DIR/log/slurmd.log"; do
        if [ -f "$f" ]; then
            echo "----- tail $f -----" >&2
            tail -n 25 "$f" >&2 || true
        fi
    done
    exit 1
}

node_state() {
    # Prints e.g. "idle", "mix", "down*", "drain" or nothing if unreachable.
    timeout 10 sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n1 | tr -d '[:space:]' || true
}

munge_ok() {
    command -v munge >/dev/null 2>&1 || return 1
    timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1
}

is_up() {
    case "$(node_state)" in
        idle | mix | alloc | comp | completing) return 0 ;;
        *) return 1 ;;
    esac
}

if [ "$(id -u)" -ne 0 ]; then
    die "must run as root"
fi

# ---------------------------------------------------------------- fast path
if command -v sinfo >/dev/null 2>&1 && [ -f "$CONF" ] && alive slurmctld \
    && alive slurmd && munge_ok && is_up; then
    log "already running: node $NODE is $(node_state); nothing to do"
    exit 0
fi

# ---------------------------------------------------------------- install
JUST_INSTALLED=0
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
    || ! command -v sbatch >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1 \
    || ! command -v ps >/dev/null 2>&1; then
    log "installing slurm-wlm + munge via apt"
    # Keep package maintainer scripts from trying to start services
    # (no systemd here; we start the daemons ourselves below).
    POLICY=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$POLICY"
        chmod 755 "$POLICY"
        created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    mkdir -p "$STATE_DIR/log"
    APT_LOG=$STATE_DIR/log/apt.log
    apt_rc=0
    {
        apt-get update -q &&
            apt-get install -y -q --no-install-recommends slurm-wlm munge procps
    } >"$APT_LOG" 2>&1 || apt_rc=$?
    if [ "$created_policy" = 1 ]; then rm -f "$POLICY"; fi
    if [ "$apt_rc" -ne 0 ]; then
        tail -n 30 "$APT_LOG" >&2 || true
        die "apt-get install slurm-wlm munge failed (rc=$apt_rc, log: $APT_LOG)"
    fi
    JUST_INSTALLED=1
    log "installed $(slurmctld -V 2>/dev/null || echo slurm)"
else
    log "slurm binaries present ($(slurmctld -V 2>/dev/null || echo '?')); skipping apt"
fi

# ---------------------------------------------------------------- munge
id munge >/dev/null 2>&1 || die "user 'munge' does not exist (munge package broken?)"
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
KEY=/etc/munge/munge.key
KEY_CHANGED=0
# The Debian postinst generates a 128-byte key; replace a fresh/missing/short
# key with a 1024-byte one (single host, so only the local munged uses it).
if [ ! -s "$KEY" ] || [ "$JUST_INSTALLED" = 1 ] || [ "$(stat -c %s "$KEY")" -lt 1024 ]; then
    log "creating 1024-byte munge key"
    rm -f "$KEY"
    (umask 077 && dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none)
    KEY_CHANGED=1
fi
chown munge:munge "$KEY"
chmod 0400 "$KEY"

if [ "$KEY_CHANGED" = 1 ] || ! munge_ok; then
    pkill -x munged 2>/dev/null || true
    for _ in $(seq 1 50); do
        alive munged || break
        sleep 0.1
    done
    pkill -9 -x munged 2>/dev/null || true
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock /run/munge/munged.pid
    log "starting munged"
    if command -v runuser >/dev/null 2>&1; then
        runuser -u munge -- munged --force
    else
        su -s /bin/sh munge -c 'munged --force'
    fi
    for _ in $(seq 1 50); do
        munge_ok && break
        sleep 0.2
    done
    munge_ok || die "munged did not come up (munge -n | unmunge fails)"
fi

# ---------------------------------------------------------------- config
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
# Leave some headroom below what slurmd detects, otherwise the node drains
# with "Low RealMemory".
REAL_MEM=$((MEM_MB * 9 / 10))
if [ "$REAL_MEM" -gt 20000 ]; then REAL_MEM=20000; fi
if [ "$REAL_MEM" -lt 100 ]; then REAL_MEM=100; fi
# Daemons talk to each other via the node name; fall back to loopback if the
# hostname does not resolve (some containers).
CTLD_HOST=$NODE
NODE_ADDR=""
if ! getent hosts "$NODE" >/dev/null 2>&1; then
    log "hostname '$NODE' does not resolve; using 127.0.0.1"
    CTLD_HOST="$NODE(127.0.0.1)"
    NODE_ADDR=" NodeAddr=127.0.0.1"
fi

mkdir -p "$CONF_DIR" "$STATE_DIR"/{ctld,d,log,run}
chmod 0755 "$STATE_DIR" "$STATE_DIR"/{ctld,d,log,run}

NEW_CONF=$(mktemp)
cat >"$NEW_CONF" <<EOF
# Generated by .ci/slurm-setup.sh (nin-lightning CI): single-node test cluster.
ClusterName=nin
SlurmctldHost=$CTLD_HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Requeued jobs are held until the launch credential of the previous run
# expires (default 120 s). Keep it short so "scontrol requeue" re-runs fast.
AuthInfo=cred_expire=${NIN_SLURM_CRED_EXPIRE:-10}
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
# Memory is not a consumable resource: several jobs may share the node.
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
JobRequeue=1
ReturnToService=2
MessageTimeout=10
KillWait=30
InactiveLimit=0
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=60
Waittime=0
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/d
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pid
SlurmdPidFile=$STATE_DIR/run/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE${NODE_ADDR} CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
if ! cmp -s "$NEW_CONF" "$CONF"; then
    [ -f "$CONF" ] && cp -f "$CONF" "$CONF.bak"
    install -m 0644 "$NEW_CONF" "$CONF"
    log "wrote $CONF (CPUs=$CPUS RealMemory=$REAL_MEM)"
    CONF_CHANGED=1
else
    CONF_CHANGED=0
fi
rm -f "$NEW_CONF"

# ---------------------------------------------------------------- daemons
if [ "$CONF_CHANGED" = 1 ] || ! alive slurmctld \
    || ! timeout 10 scontrol ping 2>/dev/null | grep -q "is UP"; then
    # (Re)start both daemons from a clean slate.
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    for _ in $(seq 1 50); do
        alive slurmctld || alive slurmd || break
        sleep 0.2
    done
    pkill -9 -x slurmd 2>/dev/null || true
    pkill -9 -x slurmctld 2>/dev/null || true
    log "starting slurmctld"
    # -c: clean start (discard saved jobs/node state from earlier runs).
    slurmctld -c || die "slurmctld failed to start"
    for _ in $(seq 1 50); do
        timeout 5 scontrol ping 2>/dev/null | grep -q "is UP" && break
        sleep 0.2
    done
    timeout 10 scontrol ping 2>/dev/null | grep -q "is UP" || die "slurmctld does not answer scontrol ping"
fi
if ! alive slurmd; then
    log "starting slurmd"
    slurmd || die "slurmd failed to start"
fi

# ---------------------------------------------------------------- wait idle
resumed=0
deadline=$(($(date +%s) + WAIT_S))
state=""
while :; do
    state=$(node_state)
    case "$state" in
        idle | mix | alloc) break ;;
        down* | drain* | drng* | fail*)
            if [ "$resumed" -lt 3 ] && alive slurmd; then
                log "node is '$state'; resuming"
                scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
                resumed=$((resumed + 1))
            fi
            ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
        reason=$(timeout 5 sinfo -h -n "$NODE" -o %E 2>/dev/null || true)
        die "node $NODE not idle after ${WAIT_S}s (state='${state:-unreachable}' reason='${reason}')"
    fi
    sleep 1
done

log "OK: slurm $(sinfo -V 2>/dev/null | awk '{print $2}') up, node $NODE $state, partition debug ($(($(date +%s) - T0))s)"
