#!/usr/bin/env bash
# Runs launch.main on every host of a Cloud TPU pod slice. Each host runs the same command;
# jax.distributed is initialised from the TPU environment and each process feeds its slice
# of every batch (jot.data batches are a pure function of the step and the process index).
# The workdir must be visible to every host (e.g. gs://... or a shared file system).
#
#   launch/tpu_pod.sh TPU_NAME ZONE --config=configs/diotm_2d.py:g8g --workdir=gs://bucket/runs/x
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 TPU_NAME ZONE --config=... --workdir=... [--config.FIELD=VALUE ...]" >&2
  exit 2
fi
tpu=$1 zone=$2
shift 2
args=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all \
  --command="cd ~/jot && JOT_DISTRIBUTED=1 python3 -m launch.main $args"
