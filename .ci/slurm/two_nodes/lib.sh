# Shared by up.sh, down.sh and on.sh of the two-node test cluster: its names, addresses and paths.
# shellcheck shell=bash

STATE_DIR=${SLURM2_STATE_DIR:-/var/lib/posttrain-slurm2}
CLUSTER=posttrain2
HEAD=pt-head
NODES=(pt-node1 pt-node2)
ALL=("$HEAD" "${NODES[@]}")
SUBNET=10.213.17
declare -A ADDR=([$HEAD]=$SUBNET.1 [pt-node1]=$SUBNET.11 [pt-node2]=$SUBNET.12)
BRIDGE=ptbr0
# Inside the namespaces these ports cannot collide with the one-node cluster's; distinct anyway, so
# a client pointed at the wrong slurm.conf fails loudly instead of talking to the other cluster.
CTLD_PORT=6917
SLURMD_PORT=6918

LOG_DIR=$STATE_DIR/log
RUN_DIR=$STATE_DIR/run
ETC_DIR=$STATE_DIR/etc
NS_DIR=$STATE_DIR/ns  # persistent namespaces: <node>.uts (hostname), hosts.mnt (/etc/hosts)
MUNGE_DIR=$STATE_DIR/munge
MUNGE_KEY=$MUNGE_DIR/munge.key
MUNGE_SOCK=$MUNGE_DIR/munge.socket
export SLURM_CONF=$ETC_DIR/slurm.conf

# on_argv NODE: the command prefix that runs a command on NODE (its network namespace and hostname,
# the cluster's /etc/hosts, this cluster's SLURM_CONF)
on_argv() {
  # --wd: entering a mount namespace moves to its root; stay where the caller is
  ON=(nsenter --net="/run/netns/$1" --uts="$NS_DIR/$1.uts" --mount="$NS_DIR/hosts.mnt" --wd="$PWD"
    env SLURM_CONF="$SLURM_CONF")
}
on() { # on NODE CMD...
  on_argv "$1"
  shift
  "${ON[@]}" "$@"
}

source "$(dirname "${BASH_SOURCE[0]}")/../daemons.sh"  # pid_alive, stop_pidfile
