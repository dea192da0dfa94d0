#!/usr/bin/env bash
# start-slurm.sh - bring up a REAL single-node SLURM cluster on localhost
# (Debian 12 "bookworm", run as root, no systemd needed, no cgroups), so that
# pepr's test suite can run the workflow with `snakemake --executor slurm`
# (tests/test_workflow_slurm.py). Nothing here is used by pepr itself.
#
# Idempotent: installs missing Debian packages, (re)writes the configs,
# starts only the daemons that are not already running (restarting the SLURM
# daemons if their config changed), then waits until the node is usable
# (and, with accounting, until `sacct` answers).
#
# Usage:
#   start-slurm.sh            # install + configure + start + wait (default)
#   start-slurm.sh start      # same
#   start-slurm.sh stop       # cancel all jobs, stop every daemon by its PID file
#   start-slurm.sh status     # show what is running
#   start-slurm.sh running    # exit 0 if slurmctld runs (started from this script's pid file), else 1
#   start-slurm.sh logs       # last lines of every daemon's log (for test failures)
#
# Exit codes: 0 ready / done; 1 any other error; 75 the Debian packages are
# missing and cannot be installed (no apt-get, apt-get failed); 77 not root.
# (.ci/run starts the cluster before the test suite and stops it afterwards;
# the suite itself only uses a running cluster.)
#
# Knobs (environment variables):
#   SLURM_ACCOUNTING=1   1 (default): MariaDB + slurmdbd, so `sacct` works - this is
#                        what snakemake-executor-plugin-slurm uses by default.
#                        0: no database (accounting_storage/none); `sacct` then
#                        FAILS and snakemake must be run with
#                        `--slurm-status-command squeue`.
#   SLURM_FAKE_GPUS=2    number of fake GPUs advertised as GRES gpu:fake:N
#                        (File=/dev/null, /dev/zero, ...), so rules with
#                        resources gpu=1 / gres="gpu:1" can be scheduled and get
#                        CUDA_VISIBLE_DEVICES set. 0 disables GRES. Max 4.
#   SLURM_PARTITION=debug   name of the (default) partition.
#   SLURM_CLUSTER=localci   ClusterName.
#   SLURM_WAIT_S=90      how long to wait for readiness.
set -euo pipefail

ACTION="${1:-start}"
ACCOUNTING="${SLURM_ACCOUNTING:-1}"
FAKE_GPUS="${SLURM_FAKE_GPUS:-2}"
PARTITION="${SLURM_PARTITION:-debug}"
CLUSTER="${SLURM_CLUSTER:-localci}"
WAIT_S="${SLURM_WAIT_S:-90}"

CONF_DIR=/etc/slurm
NODE="$(hostname -s)"
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm
DB_SOCK=/run/mysqld/mysqld.sock
DB_PASS=slurmdbpass            # local-only DB (socket only, --skip-networking)

# daemon name -> pid file, expected /proc/PID/comm
declare -A PIDFILE=(
  [munged]=/run/munge/munged.pid
  [mariadbd]=/run/mysqld/mysqld.pid
  [slurmdbd]=/run/slurmdbd.pid
  [slurmctld]=/run/slurmctld.pid
  [slurmd]=/run/slurmd.pid
)

EXIT_NO_PACKAGES=75
EXIT_NOT_ROOT=77

log() { printf '[start-slurm %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
if [ "$(id -u)" != 0 ]; then
  log "ERROR: must run as root (installs Debian packages, starts daemons)"
  exit "$EXIT_NOT_ROOT"
fi

# pid of a running daemon (from its pid file, checked against /proc), or empty
daemon_pid() {
  local name=$1 f=${PIDFILE[$1]} pid
  [ -s "$f" ] || return 0
  pid=$(tr -dc '0-9' <"$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 0
  [ "$(cat "/proc/$pid/comm")" = "$name" ] && echo "$pid"
  return 0
}

stop_daemon() {  # stop_daemon <name>...: SIGTERM all of them at once, then wait for each
  local name pid i
  local -A pids=()
  for name in "$@"; do
    pid=$(daemon_pid "$name")
    [ -n "$pid" ] || continue
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    pids[$name]=$pid
  done
  for name in "${!pids[@]}"; do
    pid=${pids[$name]}
    for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then log "$name did not stop, SIGKILL"; kill -KILL "$pid" || true; fi
    rm -f "${PIDFILE[$name]}"
  done
}

wait_for() {  # wait_for <description> <command...>
  local what=$1; shift
  local deadline=$((SECONDS + WAIT_S))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${WAIT_S}s waiting for: $what"
    sleep 0.5
  done
}

do_stop() {
  if [ -n "$(daemon_pid slurmctld)" ]; then
    squeue -h -o %A 2>/dev/null | xargs -r scancel 2>/dev/null || true
    sleep 1
  fi
  # SLURM daemons first (they may still talk to the database and use munge), then the rest
  stop_daemon slurmd slurmctld slurmdbd
  stop_daemon mariadbd munged
  log "all daemons stopped"
}

do_status() {
  for d in munged mariadbd slurmdbd slurmctld slurmd; do
    printf '%-10s %s\n' "$d" "$(daemon_pid "$d" | sed 's/^/pid /')"
  done
  sinfo 2>/dev/null || true
}

do_logs() {
  local f
  for f in "$LOG_DIR"/slurmctld.log "$LOG_DIR"/slurmd.log "$LOG_DIR"/slurmdbd.log /var/log/mysql-slurm.err; do
    [ -r "$f" ] || continue
    echo "==> $f <=="
    tail -n 40 "$f"
  done
}

# One start/stop at a time (two test sessions on one machine must not race). The daemons are
# started with fd 9 closed (`9>&-`), or they would hold this lock for as long as they run.
if [ "$ACTION" = start ] || [ "$ACTION" = stop ]; then
  exec 9>/run/start-slurm.lock
  flock -w 300 9 || die "another start-slurm.sh held /run/start-slurm.lock for 300 s"
fi

case "$ACTION" in
  stop) do_stop; exit 0 ;;
  status) do_status; exit 0 ;;
  running) [ -n "$(daemon_pid slurmctld)" ]; exit $? ;;
  logs) do_logs; exit 0 ;;
  start) ;;
  *) die "unknown action '$ACTION' (start|stop|status|running|logs)" ;;
esac

T_START=$SECONDS

# ---------------------------------------------------------------- 1. packages
PKGS=(munge slurm-client slurmctld slurmd)
if [ "$ACCOUNTING" = 1 ]; then PKGS+=(slurmdbd mariadb-server); fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  command -v apt-get >/dev/null || { log "ERROR: no apt-get: install ${missing[*]} by hand"; exit "$EXIT_NO_PACKAGES"; }
  export DEBIAN_FRONTEND=noninteractive
  # apt's own output goes to stderr only when it fails, so the log stays short
  apt_out=$(mktemp)
  # wait for a concurrent apt/dpkg (another installer, unattended-upgrades) instead of failing
  local_apt=(apt-get -o DPkg::Lock::Timeout=300)
  if ! { "${local_apt[@]}" update -qq && "${local_apt[@]}" install -y -qq --no-install-recommends "${missing[@]}"; } >"$apt_out" 2>&1; then
    cat "$apt_out" >&2; rm -f "$apt_out"
    log "ERROR: apt-get could not install: ${missing[*]}"
    exit "$EXIT_NO_PACKAGES"
  fi
  rm -f "$apt_out"
fi
log "slurm $(dpkg-query -W -f='${Version}' slurmctld), munge $(dpkg-query -W -f='${Version}' munge)"

# ---------------------------------------------------------------- 2. configs
install -d -m 0755 "$CONF_DIR" "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
CHANGED=0
put_file() {  # put_file <path> <mode>   (content on stdin); sets CHANGED=1 if it differs
  local path=$1 mode=$2 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if ! cmp -s "$tmp" "$path" 2>/dev/null; then
    install -m "$mode" "$tmp" "$path"
    CHANGED=1
    log "wrote $path"
  fi
  rm -f "$tmp"
}

# Hardware line as slurmd sees it; keep ~1 GiB head-room on RealMemory so the
# node is never drained for "Low RealMemory".
HW=$(slurmd -C | head -1)
REAL_MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$HW")
REAL_MEM=$(( REAL_MEM > 3072 ? REAL_MEM - 1024 : REAL_MEM * 9 / 10 ))
TOPO=$(grep -o 'CPUs=[0-9]* .*ThreadsPerCore=[0-9]*' <<<"$HW")

GRES_NODE="" GRES_TYPES=""
if [ "${FAKE_GPUS}" -gt 0 ]; then
  [ "${FAKE_GPUS}" -le 4 ] || die "SLURM_FAKE_GPUS must be <= 4"
  GRES_TYPES="GresTypes=gpu"
  GRES_NODE="Gres=gpu:fake:${FAKE_GPUS}"
  devs=(/dev/null /dev/zero /dev/full /dev/random)
  for i in $(seq 0 $((FAKE_GPUS - 1))); do
    echo "NodeName=${NODE} Name=gpu Type=fake File=${devs[$i]}"
  done | put_file "$CONF_DIR/gres.conf" 0644
else
  : | put_file "$CONF_DIR/gres.conf" 0644
fi

if [ "$ACCOUNTING" = 1 ]; then
  ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment"
else
  ACCT_LINES="AccountingStorageType=accounting_storage/none"
fi

put_file "$CONF_DIR/slurm.conf" 0644 <<EOF
# generated by start-slurm.sh - single node, localhost only, no cgroups
ClusterName=${CLUSTER}
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
${ACCT_LINES}
JobCompType=jobcomp/none
MailProg=/bin/true
SchedulerType=sched/backfill
# start queued jobs ~1 s after resources free up instead of the default 3 s
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# jobs without --mem must not grab the whole node (default would be all of it)
DefMemPerCPU=1024
ReturnToService=2
# finished jobs stay visible to squeue this long (plugin needs >= 3x its first poll delay)
MinJobAge=300
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=${STATE_DIR}/slurmctld
SlurmdSpoolDir=${STATE_DIR}/slurmd
SlurmctldPidFile=${PIDFILE[slurmctld]}
SlurmdPidFile=${PIDFILE[slurmd]}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
${GRES_TYPES}
NodeName=${NODE} NodeAddr=127.0.0.1 NodeHostname=${NODE} ${TOPO} RealMemory=${REAL_MEM} ${GRES_NODE} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF

if [ "$ACCOUNTING" = 1 ]; then
  put_file "$CONF_DIR/slurmdbd.conf" 0600 <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=${LOG_DIR}/slurmdbd.log
PidFile=${PIDFILE[slurmdbd]}
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=${DB_PASS}
StorageLoc=slurm_acct_db
EOF
fi

# ---------------------------------------------------------------- 3. munge
if [ ! -s /etc/munge/munge.key ]; then
  log "creating munge key"
  mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
if [ -z "$(daemon_pid munged)" ]; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged 9>&-
fi
wait_for "munge round-trip" bash -c 'munge -n | unmunge'

# ---------------------------------------------------------------- 4. accounting DB
if [ "$ACCOUNTING" = 1 ]; then
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  if [ ! -d /var/lib/mysql/mysql ]; then
    log "initialising MariaDB data dir"
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  if ! mariadb-admin --socket="$DB_SOCK" ping >/dev/null 2>&1; then
    log "starting mariadbd"
    setsid -f /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql \
      --socket="$DB_SOCK" --pid-file="${PIDFILE[mariadbd]}" --skip-networking \
      --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900 \
      --log-error=/var/log/mysql-slurm.err </dev/null >/dev/null 2>&1 9>&-
  fi
  wait_for "mariadb" mariadb-admin --socket="$DB_SOCK" ping
  mariadb --socket="$DB_SOCK" -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${DB_PASS}';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  if [ "$CHANGED" = 1 ]; then stop_daemon slurmdbd; fi
  if [ -z "$(daemon_pid slurmdbd)" ]; then
    log "starting slurmdbd"
    /usr/sbin/slurmdbd 9>&-
  fi
  wait_for "slurmdbd" sacctmgr -n -P list cluster
fi

# ---------------------------------------------------------------- 5. slurmctld + slurmd
if [ "$CHANGED" = 1 ]; then stop_daemon slurmd slurmctld; fi
if [ -z "$(daemon_pid slurmctld)" ]; then
  log "starting slurmctld"
  /usr/sbin/slurmctld 9>&-
fi
wait_for "slurmctld" scontrol ping
if [ -z "$(daemon_pid slurmd)" ]; then
  log "starting slurmd"
  /usr/sbin/slurmd -N "$NODE" 9>&-
fi

node_ready() {
  local st
  st=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -1)
  case "$st" in
    idle|mixed|allocated|completing) return 0 ;;
    *drain*|down*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true; return 1 ;;
    *) return 1 ;;
  esac
}
wait_for "node $NODE to become idle" node_ready

if [ "$ACCOUNTING" = 1 ]; then
  cluster_registered() { sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; }
  wait_for "cluster $CLUSTER registered in slurmdbd" cluster_registered
  wait_for "sacct" sacct -n -X
fi

log "SLURM ready in $((SECONDS - T_START))s: node=$NODE partition=$PARTITION accounting=$ACCOUNTING fake_gpus=$FAKE_GPUS"
sinfo -o '%P %a %T %c %m %G %N'
