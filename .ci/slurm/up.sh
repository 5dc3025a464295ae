#!/usr/bin/env bash
# Bring up a real one-node Slurm cluster (munge + mariadb + slurmdbd + slurmctld + slurmd)
# on loopback, without systemd. Debian 12 (Slurm 22.05), run as root.
#
#   bash .ci/slurm/up.sh      # idempotent: installs what is missing, (re)starts what is down
#   bash .ci/slurm/down.sh    # stops everything again
#
# Environment knobs (all optional):
#   SLURM_STATE_DIR        where state, logs, pid files, keys and the database live
#                          (default /var/lib/posttrain-slurm)
#   SLURM_CLUSTER_NAME     ClusterName (default posttrain)
#   SLURM_NODE_CPUS        CPUs advertised for the node (default: nproc). May exceed nproc
#                          (SlurmdParameters=config_overrides) to allow more concurrent jobs.
#   SLURM_NODE_MEMORY_MB   RealMemory of the node (default: 75% of MemAvailable)
#   SLURM_DB_PORT          TCP port (127.0.0.1 only) of the private mariadb (default 3307)
#   SLURM_UP_TIMEOUT       seconds to wait for the node to become idle (default 60)
#
# Config files go to /etc/slurm (where Debian's clients look); everything else under
# $SLURM_STATE_DIR. The daemons run as root (SlurmUser=root); mariadb runs as `mysql`.
set -euo pipefail

T_START=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[slurm-up +%ss] %s\n' "$(elapsed "$T_START")" "$*"; }

if [[ $(id -u) -ne 0 ]]; then
  echo "[slurm-up] must run as root (installs packages, writes /etc/slurm, runs daemons as root)" >&2
  exit 1
fi

STATE_DIR=${SLURM_STATE_DIR:-/var/lib/posttrain-slurm}
CLUSTER=${SLURM_CLUSTER_NAME:-posttrain}
DB_PORT=${SLURM_DB_PORT:-3307}
UP_TIMEOUT=${SLURM_UP_TIMEOUT:-60}
CONF_DIR=/etc/slurm
NODE=$(hostname -s)

LOG_DIR=$STATE_DIR/log
RUN_DIR=$STATE_DIR/run
MUNGE_DIR=$STATE_DIR/munge
MUNGE_KEY=$MUNGE_DIR/munge.key
MUNGE_SOCK=$MUNGE_DIR/munge.socket
DB_DIR=$STATE_DIR/mysql
DB_CNF=$STATE_DIR/my.cnf
DB_RUN=$STATE_DIR/mysqld
DB_SOCK=$DB_RUN/mysqld.sock
DB_PASS_FILE=$STATE_DIR/dbpass

# ----------------------------------------------------------------------------- packages
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  T_APT=$(date +%s.%N)
  export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
  # Keep package maintainer scripts from starting services (we start our own instances).
  created_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${PACKAGES[@]}" >/dev/null
  if ((created_policy)); then rm -f /usr/sbin/policy-rc.d; fi
  log "packages installed in $(elapsed "$T_APT") s"
else
  log "packages already installed"
fi

# ----------------------------------------------------------------------------- helpers
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/daemons.sh"  # pid_alive, stop_pidfile

dump_logs() {
  local f
  for f in munged.log mariadb.err slurmdbd.log slurmctld.log slurmd.log; do
    if [[ -f $LOG_DIR/$f ]]; then
      echo "----- tail -n 30 $LOG_DIR/$f" >&2
      tail -n 30 "$LOG_DIR/$f" >&2
    fi
  done
}

die() {
  echo "[slurm-up] ERROR: $*" >&2
  dump_logs
  exit 1
}

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.2 s
wait_for() {
  local secs=$1 what=$2 deadline
  shift 2
  deadline=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    (($(date +%s) < deadline)) || die "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

# install_file SRC DEST MODE: copy SRC over DEST if different; returns 0 when DEST changed
install_file() {
  local src=$1 dest=$2 mode=$3
  if [[ -f $dest ]] && cmp -s "$src" "$dest"; then
    chmod "$mode" "$dest"
    rm -f "$src"
    return 1
  fi
  install -m "$mode" -o root -g root "$src" "$dest"
  rm -f "$src"
  return 0
}

mkdir -p "$STATE_DIR" "$LOG_DIR" "$RUN_DIR" "$MUNGE_DIR" "$CONF_DIR" \
  "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
chmod 755 "$STATE_DIR" "$LOG_DIR" "$RUN_DIR"
# munged insists on a non-world-writable socket dir and a key readable only by its owner
chmod 755 "$MUNGE_DIR"

# ----------------------------------------------------------------------------- munge
if [[ ! -s $MUNGE_KEY ]]; then
  log "creating munge key $MUNGE_KEY"
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$MUNGE_KEY" --force
  else
    dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
  fi
fi
chown root:root "$MUNGE_KEY"
chmod 400 "$MUNGE_KEY"

munge_ok() { munge -n --socket="$MUNGE_SOCK" | unmunge --socket="$MUNGE_SOCK"; }
if pid_alive "$RUN_DIR/munged.pid" munged && munge_ok >/dev/null 2>&1; then
  log "munged already running"
else
  stop_pidfile "$RUN_DIR/munged.pid" munged
  log "starting munged"
  munged --force --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCK" \
    --pid-file="$RUN_DIR/munged.pid" --log-file="$LOG_DIR/munged.log" \
    --seed-file="$MUNGE_DIR/munged.seed" ||
    die "munged failed to start"
  wait_for 15 "munged to answer on $MUNGE_SOCK" munge_ok
fi

# ----------------------------------------------------------------------------- mariadb
if [[ ! -s $DB_PASS_FILE ]]; then
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DB_PASS_FILE")
fi
chmod 600 "$DB_PASS_FILE"
DB_PASS=$(cat "$DB_PASS_FILE")

cat >"$DB_CNF.new" <<EOF
# Private mariadb instance for posttrain's CI Slurm accounting (generated by .ci/slurm/up.sh)
[client]
socket = $DB_SOCK
user = root

[mysqld]
user = mysql
datadir = $DB_DIR
socket = $DB_SOCK
pid-file = $DB_RUN/mariadb.pid
log-error = $LOG_DIR/mariadb.err
bind-address = 127.0.0.1
port = $DB_PORT
skip-name-resolve
# slurmdbd logs "Database settings not recommended values: innodb_buffer_pool_size": harmless here
innodb_buffer_pool_size = 128M
innodb_log_file_size = 64M
innodb_lock_wait_timeout = 900
max_connections = 100
EOF
db_cnf_changed=0
install_file "$DB_CNF.new" "$DB_CNF" 644 && db_cnf_changed=1
# mariadb (user mysql) must be able to traverse to its datadir / socket / log
chown mysql:mysql "$DB_DIR" 2>/dev/null || true
touch "$LOG_DIR/mariadb.err" && chown mysql:mysql "$LOG_DIR/mariadb.err"
mkdir -p "$DB_RUN" && chown mysql:mysql "$DB_RUN" && chmod 755 "$DB_RUN"

db_ok() { mariadb-admin --defaults-file="$DB_CNF" --connect-timeout=2 ping; }

if ((db_cnf_changed)) && pid_alive "$DB_RUN/mariadb.pid" mariadbd; then
  log "mariadb config changed: restarting"
  mariadb-admin --defaults-file="$DB_CNF" shutdown >/dev/null 2>&1 || true
  stop_pidfile "$DB_RUN/mariadb.pid" mariadbd
fi
if pid_alive "$DB_RUN/mariadb.pid" mariadbd && db_ok >/dev/null 2>&1; then
  log "mariadb already running"
else
  stop_pidfile "$DB_RUN/mariadb.pid" mariadbd
  if [[ ! -d $DB_DIR/mysql ]]; then
    log "initialising mariadb datadir $DB_DIR"
    mkdir -p "$DB_DIR"
    chown mysql:mysql "$DB_DIR"
    mariadb-install-db --defaults-file="$DB_CNF" --skip-test-db \
      --auth-root-authentication-method=socket >"$LOG_DIR/mariadb-install.log" 2>&1 ||
      { cat "$LOG_DIR/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
  fi
  log "starting mariadb on 127.0.0.1:$DB_PORT"
  setsid mariadbd --defaults-file="$DB_CNF" </dev/null >>"$LOG_DIR/mariadb.err" 2>&1 &
  wait_for 30 "mariadb to answer on $DB_SOCK" db_ok
fi
mariadb --defaults-file="$DB_CNF" <<EOF || die "could not create the slurm accounting database/user"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF

# ----------------------------------------------------------------------------- slurm configs
CPUS=${SLURM_NODE_CPUS:-$(nproc)}
if [[ -n ${SLURM_NODE_MEMORY_MB:-} ]]; then
  MEM_MB=$SLURM_NODE_MEMORY_MB
else
  # 75% of MemAvailable, rounded down to 256 MB. Remembered in the state dir so re-runs produce
  # the same slurm.conf (and do not restart the daemons); recomputed if no longer available.
  avail_mb=$(($(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo) / 1024))
  MEM_MB=$(cat "$STATE_DIR/node_memory_mb" 2>/dev/null || true)
  if ! [[ $MEM_MB =~ ^[0-9]+$ ]] || ((MEM_MB > avail_mb)); then
    MEM_MB=$((avail_mb * 3 / 4 / 256 * 256))
    ((MEM_MB >= 256)) || MEM_MB=256
    echo "$MEM_MB" >"$STATE_DIR/node_memory_mb"
  fi
fi
DEF_MEM_PER_CPU=$((MEM_MB / CPUS))

cat >"$CONF_DIR/slurm.conf.new" <<EOF
# One-node loopback Slurm cluster for posttrain tests/CI (generated by .ci/slurm/up.sh).
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=30
KillWait=2
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
AccountingStoragePass=$MUNGE_SOCK
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

cat >"$CONF_DIR/slurmdbd.conf.new" <<EOF
# slurmdbd for the posttrain test cluster (generated by .ci/slurm/up.sh). Must stay mode 600.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$RUN_DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF

slurm_conf_changed=0
dbd_conf_changed=0
install_file "$CONF_DIR/slurm.conf.new" "$CONF_DIR/slurm.conf" 644 && slurm_conf_changed=1
install_file "$CONF_DIR/slurmdbd.conf.new" "$CONF_DIR/slurmdbd.conf" 600 && dbd_conf_changed=1
export SLURM_CONF=$CONF_DIR/slurm.conf

if ((slurm_conf_changed || dbd_conf_changed)); then
  if pid_alive "$RUN_DIR/slurmctld.pid" slurmctld || pid_alive "$RUN_DIR/slurmd.pid" slurmd ||
    pid_alive "$RUN_DIR/slurmdbd.pid" slurmdbd; then
    log "slurm config changed: restarting slurm daemons"
  fi
  stop_pidfile "$RUN_DIR/slurmd.pid" slurmd
  stop_pidfile "$RUN_DIR/slurmctld.pid" slurmctld
  if ((dbd_conf_changed)); then stop_pidfile "$RUN_DIR/slurmdbd.pid" slurmdbd; fi
fi

# ----------------------------------------------------------------------------- slurmdbd
dbd_ok() { timeout 5 sacctmgr -n -P list cluster format=cluster; }
if pid_alive "$RUN_DIR/slurmdbd.pid" slurmdbd; then
  log "slurmdbd already running"
else
  log "starting slurmdbd"
  slurmdbd || die "slurmdbd failed to start"
fi
wait_for 45 "slurmdbd to answer (sacctmgr list cluster)" dbd_ok
if ! dbd_ok 2>/dev/null | grep -qx "$CLUSTER"; then
  log "registering cluster $CLUSTER in slurmdbd"
  sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed"
fi

# ----------------------------------------------------------------------------- slurmctld
ctld_ok() { timeout 5 scontrol ping | grep -q 'is UP'; }
if pid_alive "$RUN_DIR/slurmctld.pid" slurmctld; then
  log "slurmctld already running"
else
  log "starting slurmctld"
  slurmctld || die "slurmctld failed to start"
fi
wait_for 30 "slurmctld to answer (scontrol ping)" ctld_ok

# ----------------------------------------------------------------------------- slurmd
if pid_alive "$RUN_DIR/slurmd.pid" slurmd; then
  log "slurmd already running"
else
  log "starting slurmd (NodeName=$NODE)"
  slurmd -N "$NODE" || die "slurmd failed to start"
fi
# sinfo alone can say 'idle' from slurmctld's saved node state before slurmd is even listening
wait_for 15 "slurmd to answer (scontrol show slurmd)" timeout 5 scontrol show slurmd

# ----------------------------------------------------------------------------- wait for idle
deadline=$(($(date +%s) + UP_TIMEOUT))
resumed=0
while :; do
  state=$(timeout 5 sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n1 || true)
  case $state in
    idle | mix | alloc | comp) break ;;
    drain* | drng* | down* | fail*)
      # a leftover DRAIN/DOWN from an earlier run; ReturnToService=2 does not clear DRAIN
      if ((!resumed)) && pid_alive "$RUN_DIR/slurmd.pid" slurmd; then
        log "node $NODE is '$state': resuming it"
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
        resumed=1
      fi
      ;;
  esac
  if (($(date +%s) >= deadline)); then
    timeout 5 sinfo -N -l >&2 || true
    timeout 5 scontrol show node "$NODE" >&2 || true
    die "node $NODE not idle after ${UP_TIMEOUT}s (sinfo state: '${state:-no answer}')"
  fi
  sleep 0.2
done

log "cluster '$CLUSTER' up: node $NODE CPUs=$CPUS RealMemory=${MEM_MB}MB state=$state (state dir $STATE_DIR)"
log "bring-up wall time: $(elapsed "$T_START") s"
