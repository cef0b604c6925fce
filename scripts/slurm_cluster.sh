#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for lrexp's tests and for trying sweeps:
#   scripts/slurm_cluster.sh start [--no-accounting]   start it (or keep it), wait until the node is idle
#   scripts/slurm_cluster.sh stop                       stop every daemon this script started
#   scripts/slurm_cluster.sh status                     say whether it runs, with which accounting
# Needs root and Debian's packages: apt-get install slurm-wlm slurmdbd munge mariadb-server.
# Everything it writes (configs, state, logs, a private MariaDB for accounting) lives in
# $LREXP_SLURM_DIR (default /tmp/lrexp-slurm). SLURM's commands find the config through
# SLURM_CONF=$LREXP_SLURM_DIR/slurm.conf; the script also links /etc/slurm/slurm.conf to it when that
# file is absent, so that plain `sinfo` and `sbatch` work. Without accounting (no slurmdbd, no
# sacct), jobs run but their end is known only from squeue and from the jobs' own records.
set -euo pipefail

DIR="${LREXP_SLURM_DIR:-/tmp/lrexp-slurm}"
WAIT_S="${LREXP_SLURM_WAIT_S:-120}"   # bounded wait for each daemon and for the node to be idle
DB_PORT="${LREXP_SLURM_DB_PORT:-3307}" # the private MariaDB listens on 127.0.0.1 only
HOST="$(hostname -s)"
export SLURM_CONF="$DIR/slurm.conf"

die() { echo "slurm_cluster: error: $*" >&2; exit 1; }
say() { echo "slurm_cluster: $*"; }

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Poll until "$@" succeeds, at most WAIT_S seconds, while daemon $2 (a name, or -) lives; else
# fail naming what and the last lines of its log.
wait_for() {
  local what="$1" name="$2" log="$3"; shift 3
  local deadline=$((SECONDS + WAIT_S)) why
  until "$@" >/dev/null 2>&1; do
    why=""
    ((SECONDS >= deadline)) && why="not ready after ${WAIT_S}s"
    [[ "$name" != - ]] && ! alive "$DIR/$name.pid" && why="$name exited"
    if [[ -n "$why" ]]; then
      echo "slurm_cluster: error: $what: $why; last lines of $log:" >&2
      tail -20 "$log" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.5
  done
}

# Start "$@" in the background (its own session), its pid in $DIR/$1.pid, output in $DIR/log/$1.log.
daemon() {
  local name="$1"; shift
  alive "$DIR/$name.pid" && return 0
  setsid "$@" >>"$DIR/log/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/$name.pid"
}

node_idle() { sinfo -h -N -n "$HOST" -o %T | grep -qx idle; }
# After a first start: up (idle, or running jobs), so that a second start returns at once.
node_up() { sinfo -h -N -n "$HOST" -o %T | grep -qxE "idle|mixed|allocated|completing"; }
mode() { cat "$DIR/mode" 2>/dev/null || echo none; }

write_configs() {
  local accounting="$1" cpus mem_mb
  cpus="$(nproc)"
  mem_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) * 9 / 10240))
  mkdir -p "$DIR"/{ctld,spool,log}
  {
    echo "ClusterName=lrexp"
    echo "SlurmctldHost=$HOST(127.0.0.1)"
    echo "SlurmUser=root"
    echo "SlurmdUser=root"
    echo "AuthType=auth/munge"
    echo "StateSaveLocation=$DIR/ctld"
    echo "SlurmdSpoolDir=$DIR/spool"
    echo "SlurmctldPidFile=$DIR/slurmctld.daemon.pid"
    echo "SlurmdPidFile=$DIR/slurmd.daemon.pid"
    echo "SlurmctldLogFile=$DIR/log/slurmctld.log"
    echo "SlurmdLogFile=$DIR/log/slurmd.log"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_Core"
    echo "ReturnToService=2"
    echo "KillWait=30"            # seconds between SIGTERM and SIGKILL (scancel, requeue)
    echo "SchedulerParameters=sched_interval=2"
    echo "MpiDefault=none"
    if [[ "$accounting" == yes ]]; then
      echo "AccountingStorageType=accounting_storage/slurmdbd"
      echo "AccountingStorageHost=127.0.0.1"
    else
      echo "AccountingStorageType=accounting_storage/none"
    fi
    echo "NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"
    echo "PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP"
  } >"$DIR/slurm.conf"
  {
    echo "AuthType=auth/munge"
    echo "DbdHost=$HOST"
    echo "DbdAddr=127.0.0.1"
    echo "SlurmUser=root"
    echo "PidFile=$DIR/slurmdbd.daemon.pid"
    echo "LogFile=$DIR/log/slurmdbd.log"
    echo "StorageType=accounting_storage/mysql"
    echo "StorageHost=127.0.0.1"
    echo "StoragePort=$DB_PORT"
    echo "StorageUser=slurm"
    echo "StoragePass=lrexp"
    echo "StorageLoc=slurm_acct_db"
  } >"$DIR/slurmdbd.conf"
  chmod 600 "$DIR/slurmdbd.conf"
  if [[ ! -e /etc/slurm/slurm.conf || -L /etc/slurm/slurm.conf ]]; then
    mkdir -p /etc/slurm && ln -sfn "$DIR/slurm.conf" /etc/slurm/slurm.conf
  fi
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi  # one runs already
  mkdir -p /run/munge && chown munge:munge /run/munge
  [[ -f /etc/munge/munge.key ]] || die "/etc/munge/munge.key is missing: apt-get install munge"
  runuser -u munge -- /usr/sbin/munged
  echo yes >"$DIR/munge.ours"
  wait_for munged - /var/log/munge/munged.log sh -c 'munge -n | unmunge'
}

start_mariadb() {
  local db="$DIR/mysql" sql
  local cnf=(--no-defaults "--datadir=$db" "--socket=$db/mysqld.sock" --bind-address=127.0.0.1
    "--port=$DB_PORT" "--pid-file=$db/mariadb.pid" --user=mysql --innodb-lock-wait-timeout=900)
  if [[ ! -d "$db/mysql" ]]; then
    mkdir -p "$db" && chown mysql:mysql "$db"
    mariadb-install-db --no-defaults "--datadir=$db" --user=mysql --auth-root-authentication-method=socket \
      >>"$DIR/log/mariadb.log" 2>&1 || die "mariadb-install-db failed: see $DIR/log/mariadb.log"
  fi
  daemon mariadb /usr/sbin/mariadbd "${cnf[@]}"
  wait_for MariaDB mariadb "$DIR/log/mariadb.log" mariadb --no-defaults "--socket=$db/mysqld.sock" -e 'select 1'
  sql="CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'lrexp';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  mariadb --no-defaults "--socket=$db/mysqld.sock" -e "$sql"
}

start() {
  local accounting=yes
  [[ "${1:-}" == --no-accounting ]] && accounting=no
  [[ "$(id -u)" == 0 ]] || die "must run as root (the daemons run as root here)"
  command -v slurmctld >/dev/null || die "SLURM is not installed: apt-get install slurm-wlm slurmdbd munge mariadb-server"
  if alive "$DIR/slurmctld.pid" && [[ "$(mode)" != "$accounting" ]]; then
    say "running with accounting=$(mode): restarting with accounting=$accounting"
    stop
  fi
  write_configs "$accounting"
  echo "$accounting" >"$DIR/mode"
  start_munge
  if [[ "$accounting" == yes ]]; then
    command -v slurmdbd >/dev/null || die "slurmdbd is not installed: apt-get install slurmdbd"
    start_mariadb
    daemon slurmdbd /usr/sbin/slurmdbd -D  # reads slurmdbd.conf beside $SLURM_CONF
    wait_for slurmdbd slurmdbd "$DIR/log/slurmdbd.log" bash -c "exec 3<>/dev/tcp/127.0.0.1/6819"
  fi
  daemon slurmctld /usr/sbin/slurmctld -D -i -f "$DIR/slurm.conf"
  wait_for slurmctld slurmctld "$DIR/log/slurmctld.log" scontrol ping
  if alive "$DIR/slurmd.pid"; then
    wait_for "node $HOST up" slurmd "$DIR/log/slurmd.log" node_up
  else
    daemon slurmd /usr/sbin/slurmd -D -f "$DIR/slurm.conf"
    wait_for "node $HOST idle" slurmd "$DIR/log/slurmd.log" node_idle
  fi
  if [[ "$accounting" == yes ]]; then  # sacct answers once the cluster is registered
    wait_for "sacct" slurmdbd "$DIR/log/slurmdbd.log" sacct -n -X -S now
  fi
  say "up: node $HOST idle, accounting=$accounting; export SLURM_CONF=$SLURM_CONF"
}

stop() {
  local name pids=()
  if alive "$DIR/slurmctld.pid"; then  # stopped daemons leave their jobs running: end them first
    scancel --quiet -u root 2>/dev/null || true
    local deadline=$((SECONDS + WAIT_S))
    while [[ -n "$(squeue -h -o %i 2>/dev/null)" ]] && ((SECONDS < deadline)); do sleep 0.5; done
  fi
  for name in slurmd slurmctld slurmdbd mariadb; do
    if alive "$DIR/$name.pid"; then
      pids+=("$(cat "$DIR/$name.pid")")
      kill "${pids[-1]}" 2>/dev/null || true
    fi
    rm -f "$DIR/$name.pid"
  done
  local deadline=$((SECONDS + WAIT_S))
  while ((SECONDS < deadline)); do
    local left=0
    for name in "${pids[@]}"; do kill -0 "$name" 2>/dev/null && left=1; done
    ((left)) || break
    sleep 0.2
  done
  for name in "${pids[@]}"; do kill -9 "$name" 2>/dev/null || true; done
  if [[ -f "$DIR/munge.ours" && -f /run/munge/munged.pid ]]; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    rm -f "$DIR/munge.ours"
  fi
  say "stopped"  # the jobs' state stays in $DIR/ctld: job ids go on from there at the next start
}

status() {
  if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid"; then
    say "running, accounting=$(mode); export SLURM_CONF=$SLURM_CONF"
    sinfo -N -n "$HOST" || true
  else
    say "not running"
    return 1
  fi
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start [--no-accounting] | stop | status" >&2; exit 2 ;;
esac
