#!/usr/bin/env bash
# A throw-away Slurm cluster on this host: slurmctld + N slurmd "nodes" (n1..nN), munge auth.
# Debian 12 (slurm-wlm 22.05), as root, no systemd / cgroups needed. Used by the tests and CI.
#   NNODES=2 bash slurm/local_cluster.sh        start (installs slurm-wlm + munge with apt if missing)
#   bash slurm/local_cluster.sh stop            stop the daemons it started (by pid file)
set -euo pipefail
NNODES=${NNODES:-2}
CPUS=$(nproc)
MEM=$(( $(free -m | awk '/^Mem:/{print $2}') * 9 / 10 / NNODES ))
CTL_HOST=$(hostname -s)
CONF=/etc/slurm/slurm.conf
STARTED=/run/masklab-local-cluster.started   # pid files of the daemons this script started

if [ "${1:-}" = stop ]; then
  # stop only what we started, by pid (never by name); wait until they are gone
  # each pid file once (a restart after a daemon died appends its file again); a daemon that
  # exits removes its pid file, so a file may vanish between the test and the read
  files=$( (cat "$STARTED" 2>/dev/null || echo /run/slurmd-n*.pid /run/slurmctld.pid) | tr ' ' '\n' | sort -u)
  pids=""
  for f in $files; do
    pid=$(cat "$f" 2>/dev/null) || continue
    case " $pids " in *" $pid "*) continue ;; esac
    if kill "$pid" 2>/dev/null; then pids="$pids $pid"; fi
  done
  for _ in $(seq 1 30); do
    alive=""; for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break; sleep 0.5
  done
  rm -f "$STARTED"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then echo "local_cluster.sh must run as root" >&2; exit 1; fi

if ! command -v slurmctld >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

[ -s /etc/munge/munge.key ] || { mungekey -c -k /etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 600 /etc/munge/munge.key; }
install -d -o munge -g munge -m 0755 /run/munge
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged && echo /run/munge/munged.pid >> "$STARTED"
fi
munge -n | unmunge >/dev/null

mkdir -p /var/spool/slurmctld /var/log/slurm /etc/slurm
{
cat <<CONF
ClusterName=localci
SlurmctldHost=${CTL_HOST}
AuthType=auth/munge
CredType=cred/munge
# requeued jobs become eligible after cred_expire seconds (default 120)
AuthInfo=cred_expire=10
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=300
KillWait=10
CONF
for i in $(seq 1 "$NNODES"); do
  echo "NodeName=n$i NodeHostname=${CTL_HOST} NodeAddr=127.0.0.1 Port=$((17000 + i)) CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN"
done
echo "PartitionName=debug Nodes=n[1-${NNODES}] Default=YES MaxTime=INFINITE State=UP"
} > "$CONF"

for i in $(seq 1 "$NNODES"); do   # node names must resolve for MASTER_ADDR
  grep -qE "^127\.0\.0\.1\s.*\bn$i\b" /etc/hosts || echo "127.0.0.1 n$i" >> /etc/hosts
done

if ! pgrep -x slurmctld >/dev/null; then   # -c: clean state, -i: ignore state errors; daemonizes
  /usr/sbin/slurmctld -c -i && echo /run/slurmctld.pid >> "$STARTED"
fi
for i in $(seq 1 "$NNODES"); do
  mkdir -p "/var/spool/slurmd/n$i"
  if ! { [ -f "/run/slurmd-n$i.pid" ] && kill -0 "$(cat "/run/slurmd-n$i.pid")" 2>/dev/null; }; then
    /usr/sbin/slurmd -N "n$i" && echo "/run/slurmd-n$i.pid" >> "$STARTED"
  fi
done
for _ in $(seq 1 60); do
  [ "$(sinfo -h -o '%T %D' 2>/dev/null)" = "idle ${NNODES}" ] && break; sleep 1
done
sinfo
[ "$(sinfo -h -o '%T %D')" = "idle ${NNODES}" ]
