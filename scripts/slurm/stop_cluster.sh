#!/usr/bin/env bash
# Stop the one-node cluster started by start_cluster.sh (munged is left running: other tools may use it).
pkill -x slurmd 2>/dev/null || true
pkill -x slurmctld 2>/dev/null || true
