#!/usr/bin/env bash
# Stop the two-node test cluster of .ci/slurm/two_nodes/up.sh and remove its namespaces. Best
# effort; always exits 0. The munge key and slurmctld's state are kept for the next up.sh.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
log() { printf '[slurm2-down] %s\n' "$*"; }

if pid_alive "$RUN_DIR/slurmctld.pid" slurmctld; then
  jobs=$(on "$HEAD" timeout 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ')
  if [[ -n ${jobs// /} ]]; then
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    on "$HEAD" timeout 10 scancel $jobs 2>/dev/null
    for ((i = 0; i < 30; i++)); do
      [[ -z $(on "$HEAD" timeout 5 squeue -h -o %i 2>/dev/null) ]] && break
      sleep 0.5
    done
  fi
fi
for node in "${NODES[@]}"; do
  pid_alive "$RUN_DIR/slurmd-$node.pid" slurmd && log "stopping slurmd of $node"
  stop_pidfile "$RUN_DIR/slurmd-$node.pid" slurmd
done
pid_alive "$RUN_DIR/slurmctld.pid" slurmctld && log "stopping slurmctld"
stop_pidfile "$RUN_DIR/slurmctld.pid" slurmctld
pid_alive "$RUN_DIR/munged.pid" munged && log "stopping munged"
stop_pidfile "$RUN_DIR/munged.pid" munged
for name in "${ALL[@]}"; do
  if ip netns list | grep -qw "$name"; then
    # processes still in the namespace (a job step left behind) would keep it alive
    for pid in $(ip netns pids "$name" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$name" && log "removed network namespace $name"
  fi
  umount "$NS_DIR/$name.uts" 2>/dev/null && rm -f "$NS_DIR/$name.uts"
done
umount "$NS_DIR/hosts.mnt" 2>/dev/null && rm -f "$NS_DIR/hosts.mnt"
log "done"
exit 0
