#!/usr/bin/env bash
# Stop the one-node cluster started by start_cluster.sh (munged is left running: other tools may use it).
pkill -x slurmd 2>/dev/null || true
pkill -x slurmctld 2>/dev/null || true
for _ in $(seq 20); do
  pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || exit 0
  sleep 0.5
done
echo "stop_cluster.sh: slurmctld/slurmd still running" >&2
exit 1
