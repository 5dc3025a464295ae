# Sourced by up.sh and two_nodes/lib.sh: the daemons are started by hand (no systemd), so they are
# found and stopped through their pid files.

# pid_alive PIDFILE NAME: the pid in PIDFILE is running and its command name is NAME
pid_alive() {
  local pidfile=$1 name=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(tr -dc '0-9' <"$pidfile")
  [[ -n $pid && -r /proc/$pid/comm ]] || return 1
  [[ $(cat "/proc/$pid/comm") == "$name" ]]
}

# stop_pidfile PIDFILE NAME: TERM the daemon, wait up to 15 s, then KILL it
stop_pidfile() {
  local pidfile=$1 name=$2 pid i
  pid_alive "$pidfile" "$name" || { rm -f "$pidfile"; return 0; }
  pid=$(tr -dc '0-9' <"$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    [[ -d /proc/$pid ]] || break
    sleep 0.1
  done
  if [[ -d /proc/$pid ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pidfile"
}
