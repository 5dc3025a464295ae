#!/usr/bin/env bash
# Stop the one-node Slurm cluster started by .ci/slurm/up.sh. Best effort; always exits 0.
# Cancels every job first, then stops slurmd, slurmctld, slurmdbd, mariadb and munged.
# State (accounting database, munge key, configs) is kept, so up.sh brings the same cluster back.
set -uo pipefail

STATE_DIR=${SLURM_STATE_DIR:-/var/lib/posttrain-slurm}
RUN_DIR=$STATE_DIR/run
DB_CNF=$STATE_DIR/my.cnf
DB_RUN=$STATE_DIR/mysqld
export SLURM_CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
log() { printf '[slurm-down] %s\n' "$*"; }

pid_of() { # pid_of PIDFILE NAME -> prints pid when alive and named NAME
  local pidfile=$1 name=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(tr -dc '0-9' <"$pidfile")
  [[ -n $pid && -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == "$name" ]] || return 1
  echo "$pid"
}

stop() { # stop PIDFILE NAME [PIDFILE NAME ...]: TERM them all, wait up to 15 s, then KILL
  local pids=() names=() pid i alive
  while (($#)); do
    if pid=$(pid_of "$1" "$2"); then
      log "stopping $2 (pid $pid)"
      kill -TERM "$pid" 2>/dev/null
      pids+=("$pid")
      names+=("$2")
    fi
    rm -f "$1"
    shift 2
  done
  for ((i = 0; i < 150; i++)); do
    alive=0
    for pid in "${pids[@]}"; do [[ -d /proc/$pid ]] && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if [[ -d /proc/${pids[$i]} ]]; then
      log "${names[$i]} did not exit after 15 s: killing it"
      kill -KILL "${pids[$i]}" 2>/dev/null
    fi
  done
}

if pid_of "$RUN_DIR/slurmctld.pid" slurmctld >/dev/null && command -v squeue >/dev/null; then
  jobs=$(timeout 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ')
  if [[ -n ${jobs// /} ]]; then
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null
    for ((i = 0; i < 30; i++)); do
      [[ -z $(timeout 5 squeue -h -o %i 2>/dev/null) ]] && break
      sleep 0.5
    done
  fi
fi

# slurmd and slurmctld together; slurmdbd after slurmctld (which flushes accounting to it);
# mariadb and munged last.
stop "$RUN_DIR/slurmd.pid" slurmd "$RUN_DIR/slurmctld.pid" slurmctld
stop "$RUN_DIR/slurmdbd.pid" slurmdbd
if pid_of "$DB_RUN/mariadb.pid" mariadbd >/dev/null; then
  log "stopping mariadb"
  timeout 30 mariadb-admin --defaults-file="$DB_CNF" shutdown >/dev/null 2>&1 &
fi
stop "$RUN_DIR/munged.pid" munged "$DB_RUN/mariadb.pid" mariadbd
wait
log "done"
exit 0
