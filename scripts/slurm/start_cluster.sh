#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine (Debian/Ubuntu, as root): for the tests and for trying
# the sbatch templates before a real cluster. Installs Debian's slurm and munge packages if missing,
# starts munged, slurmctld and slurmd with state under $LIT_GAN_SLURM_DIR (default /tmp/lit-gan-slurm),
# waits for the node to be idle, and prints the line that points clients at it:
#   eval "$(scripts/slurm/start_cluster.sh)"    # then: sbatch, squeue, scancel, ...
# Idempotent: a second call reuses the running cluster. Stop it with scripts/slurm/stop_cluster.sh.
set -euo pipefail
DIR=${LIT_GAN_SLURM_DIR:-/tmp/lit-gan-slurm}
CONF=$DIR/slurm.conf
NODE=$(hostname -s)

if [ "$(id -u)" != 0 ]; then echo "start_cluster.sh: needs root (it starts slurmd as root)" >&2; exit 1; fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null; }
fi

if SLURM_CONF=$CONF sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
  echo "export SLURM_CONF=$CONF"; exit 0
fi

mkdir -p "$DIR"/state "$DIR"/spool "$DIR"/log "$DIR"/munge /run/munge
chown munge: "$DIR"/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge: /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- munged --force --log-file="$DIR/munge/munged.log" --pid-file="$DIR/munge/munged.pid" \
    --seed-file="$DIR/munge/munged.seed"
fi

cat > "$CONF" <<CONF
ClusterName=litgan
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MailProg=/bin/true
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

pkill -x slurmctld 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
sleep 0.5
slurmctld -c -f "$CONF"
slurmd -f "$CONF"
for _ in $(seq 60); do
  if SLURM_CONF=$CONF sinfo -h -o %t 2>/dev/null | grep -qx idle; then
    echo "export SLURM_CONF=$CONF"; exit 0
  fi
  sleep 0.5
done
echo "start_cluster.sh: the node did not become idle; see $DIR/log/" >&2
exit 1
