#!/usr/bin/env bash
# Run a command on a node of the two-node test cluster (.ci/slurm/two_nodes/up.sh):
#   bash .ci/slurm/two_nodes/on.sh pt-head sinfo -N          # pt-head is the login node
#   bash .ci/slurm/two_nodes/on.sh pt-head python -m workflows.run ... launcher=slurm
# The command sees the node's network and hostname, the cluster's /etc/hosts and SLURM_CONF.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
if (($# < 2)) || [[ ! -v ADDR[$1] ]]; then
  echo "usage: $0 {${ALL[*]}} COMMAND..." >&2
  exit 2
fi
node=$1
shift
on_argv "$node"
exec "${ON[@]}" "$@"
