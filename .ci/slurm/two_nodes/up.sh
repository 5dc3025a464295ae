#!/usr/bin/env bash
# Bring up a real two-node Slurm cluster on this one machine: one slurmctld and two slurmd, each in
# its own network namespace (own address, own /etc/hosts) and UTS namespace (own hostname), joined by
# a bridge. Debian 12 (Slurm 22.05), run as root. Independent of the one-node cluster of
# .ci/slurm/up.sh: its own munged, key, slurm.conf (SLURM_CONF), state, spool and log dirs.
#
#   bash .ci/slurm/two_nodes/up.sh               # idempotent: (re)creates what is missing or down
#   bash .ci/slurm/two_nodes/on.sh pt-head sinfo # run a command on a node (pt-head = the login node)
#   bash .ci/slurm/two_nodes/down.sh             # stops the daemons, removes the namespaces
#
# Exit code 3: this machine does not allow network namespaces (an unprivileged container).
#
#   pt-head  10.213.17.1   slurmctld; where posttrain runs and submits (the "login node")
#   pt-node1 10.213.17.11  slurmd
#   pt-node2 10.213.17.12  slurmd
#
# Why namespaces and not Slurm's multiple-slurmd mode (Debian's build has it: `scontrol show config`
# says MULTIPLE_SLURMD = Yes): there both slurmd share one hostname and one address, so a job script
# that rendezvoused on localhost or on the wrong host would still pass. Here the nodes only reach
# each other over the bridge, by the names in their /etc/hosts. The addresses exist only inside
# the namespaces this script creates, which have no route anywhere else: nothing leaves the machine.
# Accounting is off (no slurmdbd): posttrain follows jobs through `scontrol show job` (MinJobAge
# keeps finished jobs there for 10 minutes).
#
# Environment knobs (all optional):
#   SLURM2_STATE_DIR     state, logs, pid files, key, config (default /var/lib/posttrain-slurm2)
#   SLURM2_NODE_CPUS     CPUs each node advertises (default: nproc; both nodes share the same cores)
#   SLURM2_UP_TIMEOUT    seconds to wait for both nodes to become idle (default 60)
set -euo pipefail

T_START=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[slurm2-up +%ss] %s\n' "$(elapsed "$T_START")" "$*"; }

if [[ $(id -u) -ne 0 ]]; then
  echo "[slurm2-up] must run as root (creates network namespaces, runs the Slurm daemons as root)" >&2
  exit 1
fi

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
UP_TIMEOUT=${SLURM2_UP_TIMEOUT:-60}
mkdir -p "$STATE_DIR" "$LOG_DIR" "$RUN_DIR" "$MUNGE_DIR" "$ETC_DIR" "$NS_DIR" "$STATE_DIR/slurmctld" \
  "$STATE_DIR/slurmd-${NODES[0]}" "$STATE_DIR/slurmd-${NODES[1]}"
chmod 755 "$STATE_DIR" "$LOG_DIR" "$RUN_DIR" "$MUNGE_DIR"

# ----------------------------------------------------------------------------- packages
PACKAGES=(slurmctld slurmd slurm-client munge iproute2 util-linux)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  created_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then # keep maintainer scripts from starting the services
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold "${PACKAGES[@]}" >/dev/null
  ((created_policy)) && rm -f /usr/sbin/policy-rc.d
fi

dump_logs() {
  local f
  for f in "$LOG_DIR"/*.log; do
    [[ -f $f ]] || continue
    echo "----- tail -n 20 $f" >&2
    tail -n 20 "$f" >&2
  done
}
die() {
  echo "[slurm2-up] ERROR: $*" >&2
  dump_logs
  exit 1
}
wait_for() { # wait_for SECONDS WHAT CMD...
  local deadline=$(($(date +%s) + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    (($(date +%s) < deadline)) || die "timed out waiting for $what"
    sleep 0.2
  done
}

# ----------------------------------------------------------------------------- network
# The bridge lives in pt-head; each node's eth0 is one end of a veth pair whose other end is a
# bridge port in pt-head. Nothing is created in the machine's own namespace.
net_ok() { # every node's eth0 is up with its address, and its bridge port is up
  local node
  ip -n "$HEAD" -4 addr show dev "$BRIDGE" 2>/dev/null | grep -q "inet ${ADDR[$HEAD]}/" || return 1
  for node in "${NODES[@]}"; do
    ip -n "$node" -4 addr show dev eth0 2>/dev/null | grep -q "inet ${ADDR[$node]}/" || return 1
    ip -n "$node" link show dev eth0 2>/dev/null | grep -q LOWER_UP || return 1
    ip -n "$HEAD" link show dev "p-${node#pt-}" 2>/dev/null | grep -q "master $BRIDGE" || return 1
  done
}

if net_ok; then
  log "network namespaces already up"
else
  log "creating network namespaces ${ALL[*]} on $SUBNET.0/24"
  for name in "${ALL[@]}"; do ip netns del "$name" 2>/dev/null || true; done
  for name in "${ALL[@]}"; do
    if ! ip netns add "$name"; then # exit code 3: this machine does not allow it (setup.sh goes on)
      echo "[slurm2-up] cannot create network namespace $name: needs CAP_SYS_ADMIN (a container: --privileged)" >&2
      exit 3
    fi
    ip -n "$name" link set lo up
  done
  ip -n "$HEAD" link add "$BRIDGE" type bridge
  ip -n "$HEAD" addr add "${ADDR[$HEAD]}/24" dev "$BRIDGE"
  ip -n "$HEAD" link set "$BRIDGE" up
  for node in "${NODES[@]}"; do
    port="p-${node#pt-}" # pt-node1 -> p-node1, its bridge port in pt-head
    ip -n "$node" link add eth0 type veth peer name "$port" netns "$HEAD"
    ip -n "$node" addr add "${ADDR[$node]}/24" dev eth0
    ip -n "$node" link set eth0 up
    ip -n "$HEAD" link set "$port" master "$BRIDGE" up
  done
  wait_for 10 "the links of $BRIDGE to come up" net_ok
fi

# Names resolve the same way on every node: one mount namespace, shared by all three, in which
# $ETC_DIR/hosts is bind-mounted over /etc/hosts (the machine's own /etc/hosts is untouched; /sys
# stays the machine's, which slurmd's cgroup code reads). Each node's name maps to its bridge
# address, which is also the address gloo binds to.
{
  echo "# generated by .ci/slurm/two_nodes/up.sh: the two-node test cluster"
  echo "127.0.0.1 localhost"
  for name in "${ALL[@]}"; do echo "${ADDR[$name]} $name"; done
} >"$ETC_DIR/hosts.new"
if ! cmp -s "$ETC_DIR/hosts.new" "$ETC_DIR/hosts"; then mv "$ETC_DIR/hosts.new" "$ETC_DIR/hosts"; fi
rm -f "$ETC_DIR/hosts.new"
if ! nsenter --mount="$NS_DIR/hosts.mnt" grep -q "${ADDR[$HEAD]} $HEAD" /etc/hosts 2>/dev/null; then
  umount "$NS_DIR/hosts.mnt" 2>/dev/null || true
  touch "$NS_DIR/hosts.mnt"
  unshare --mount="$NS_DIR/hosts.mnt" --propagation private mount --bind "$ETC_DIR/hosts" /etc/hosts ||
    die "cannot create the cluster's mount namespace"
fi

# One persistent UTS namespace per node, so every process on a node (daemons, jobs, `on.sh`) sees
# the node's hostname.
for name in "${ALL[@]}"; do
  if [[ $(nsenter --uts="$NS_DIR/$name.uts" hostname 2>/dev/null) != "$name" ]]; then
    umount "$NS_DIR/$name.uts" 2>/dev/null || true
    touch "$NS_DIR/$name.uts"
    unshare --uts="$NS_DIR/$name.uts" hostname "$name" || die "cannot create the UTS namespace of $name"
  fi
done

# ----------------------------------------------------------------------------- munge
[[ -s $MUNGE_KEY ]] || dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
chown root:root "$MUNGE_KEY" && chmod 400 "$MUNGE_KEY"
munge_ok() { munge -n --socket="$MUNGE_SOCK" | unmunge --socket="$MUNGE_SOCK"; }
if pid_alive "$RUN_DIR/munged.pid" munged && munge_ok >/dev/null 2>&1; then
  log "munged already running"
else
  stop_pidfile "$RUN_DIR/munged.pid" munged
  log "starting munged (socket $MUNGE_SOCK)"
  munged --force --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCK" --pid-file="$RUN_DIR/munged.pid" \
    --log-file="$LOG_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" || die "munged failed to start"
  wait_for 15 "munged" munge_ok
fi

# ----------------------------------------------------------------------------- slurm.conf
CPUS=${SLURM2_NODE_CPUS:-$(nproc)}
avail_mb=$(($(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo) / 1024))
MEM_MB=$(cat "$STATE_DIR/node_memory_mb" 2>/dev/null || true) # kept, so re-runs write the same file
if ! [[ $MEM_MB =~ ^[0-9]+$ ]] || ((MEM_MB * 2 > avail_mb)); then
  MEM_MB=$((avail_mb * 3 / 8 / 256 * 256)) # each node: 3/8 of what is free, both together 3/4
  ((MEM_MB >= 256)) || MEM_MB=256
  echo "$MEM_MB" >"$STATE_DIR/node_memory_mb"
fi
cat >"$SLURM_CONF.new" <<EOF
# Two-node Slurm test cluster for posttrain (generated by .ci/slurm/two_nodes/up.sh).
ClusterName=$CLUSTER
SlurmctldHost=$HEAD(${ADDR[$HEAD]})
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd-%n
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd-%n.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmdParameters=config_overrides
# A node that stops answering is DOWN after SlurmdTimeout (default 300 s; short for tests).
SlurmdTimeout=20
SlurmctldTimeout=30
ReturnToService=2
MinJobAge=600
KillWait=10
InactiveLimit=0
Waittime=0
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$((MEM_MB / CPUS))
NodeName=${NODES[0]} NodeAddr=${ADDR[${NODES[0]}]} NodeHostname=${NODES[0]} CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
NodeName=${NODES[1]} NodeAddr=${ADDR[${NODES[1]}]} NodeHostname=${NODES[1]} CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=nodes Nodes=${NODES[0]},${NODES[1]} Default=YES MaxTime=INFINITE State=UP
EOF
if [[ -f $SLURM_CONF ]] && cmp -s "$SLURM_CONF.new" "$SLURM_CONF"; then
  rm -f "$SLURM_CONF.new"
else
  mv "$SLURM_CONF.new" "$SLURM_CONF"
  chmod 644 "$SLURM_CONF"
  for node in "${NODES[@]}"; do stop_pidfile "$RUN_DIR/slurmd-$node.pid" slurmd; done
  stop_pidfile "$RUN_DIR/slurmctld.pid" slurmctld
fi

# ----------------------------------------------------------------------------- daemons
ctld_ok() { on "$HEAD" timeout 5 scontrol ping | grep -q 'is UP'; }
if pid_alive "$RUN_DIR/slurmctld.pid" slurmctld; then
  log "slurmctld already running"
else
  log "starting slurmctld on $HEAD"
  on "$HEAD" slurmctld -f "$SLURM_CONF" || die "slurmctld failed to start"
fi
wait_for 30 "slurmctld to answer" ctld_ok

for node in "${NODES[@]}"; do
  if pid_alive "$RUN_DIR/slurmd-$node.pid" slurmd; then
    log "slurmd of $node already running"
  else
    log "starting slurmd on $node"
    on "$node" slurmd -f "$SLURM_CONF" -N "$node" || die "slurmd of $node failed to start"
  fi
done

deadline=$(($(date +%s) + UP_TIMEOUT))
while :; do
  states=$(on "$HEAD" timeout 5 sinfo -h -N -o '%N %t' 2>/dev/null | sort -u || true)
  ready=$(grep -cE ' (idle|mix|alloc|comp)$' <<<"$states" || true)
  ((ready == ${#NODES[@]})) && break
  while read -r node state; do # a DOWN/DRAIN left from an earlier run; ReturnToService=2 does not clear DRAIN
    case $state in
      drain* | drng* | down* | fail*) on "$HEAD" scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
    esac
  done <<<"$states"
  if (($(date +%s) >= deadline)); then
    on "$HEAD" timeout 5 sinfo -N -l >&2 || true
    die "nodes not idle after ${UP_TIMEOUT}s: $(tr '\n' ' ' <<<"$states")"
  fi
  sleep 0.2
done

log "cluster '$CLUSTER' up: ${NODES[*]} (CPUs=$CPUS RealMemory=${MEM_MB}MB each), controller $HEAD; SLURM_CONF=$SLURM_CONF"
log "bring-up wall time: $(elapsed "$T_START") s"
