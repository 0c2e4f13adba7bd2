#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the SLURM tests (tests/test_slurm.py).
#
#   tests/slurm/harness.sh start              install Debian's slurmctld slurmd slurm-client munge when missing,
#                                             write a one-node configuration, start munged, slurmctld and slurmd,
#                                             wait until the node is idle
#   tests/slurm/harness.sh stop               cancel the jobs, stop the daemons start started, remove the
#                                             configuration it wrote and uninstall the packages it installed
#   tests/slurm/harness.sh status             the node and the queue
#   tests/slurm/harness.sh run [--timeout S] -- COMMAND...
#                                             start, run COMMAND (killed after S seconds, default 2400), stop
#                                             whatever happened (unless the cluster was running before);
#                                             exits with COMMAND's status
#
# Needs root (apt-get, /etc/slurm, the daemons) on Debian or Ubuntu; no systemd. `make test` uses `run`.
#
# Why it undoes everything: with Slurm installed but no slurmctld answering, every `snakemake` call (even
# --version) waits ~10 s, because the SLURM executor plugin runs `scontrol show config` at import.
#
# The node is made to look like a GPU node: CPUs, memory and one GPU are declared (SlurmdParameters=
# config_overrides; the GPU is a gres backed by /dev/null), so jobs asking for the profile's real resources
# are scheduled. Nothing is enforced (no cgroups): the jobs run on this machine's CPUs.
set -euo pipefail

STATE=${SLURM_HARNESS_DIR:-/var/tmp/alpaca-lora-slurm-harness}
PACKAGES=(slurmctld slurmd slurm-client munge)
CONF_DIR=/etc/slurm
MARKER="# Written by alpaca-lora-pipeline tests/slurm/harness.sh; removed by its stop."
APT_OPTIONS=(-o DPkg::Lock::Timeout=300 -o APT::Get::Assume-Yes=true -qq)
# What the fake node declares: enough for profiles/slurm (train_lora: 8 CPUs, 64 GB, 1 GPU).
NODE_CPUS=16
NODE_MEMORY_MB=262144
NODE_GPUS=1
WAIT_SECONDS=60
MUNGED_PID=/run/munge/munged.pid

say() { echo "slurm-harness: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}

require_root() {
	[[ $(id -u) -eq 0 ]] || die "needs root (apt-get, /etc/slurm, daemons); CI runs as root"
	command -v apt-get >/dev/null || die "needs apt-get (Debian or Ubuntu)"
}

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

install_packages() {
	local missing=() package
	for package in "${PACKAGES[@]}"; do
		installed "$package" || missing+=("$package")
	done
	if [[ ${#missing[@]} -eq 0 ]]; then
		say "packages already installed; they stay installed"
		return
	fi
	say "installing ${PACKAGES[*]} (--no-install-recommends)"
	apt-get "${APT_OPTIONS[@]}" update
	# What apt is about to add: exactly these are uninstalled by stop.
	apt-get "${APT_OPTIONS[@]}" install -s --no-install-recommends "${PACKAGES[@]}" |
		awk '$1 == "Inst" {print $2}' >"$STATE/installed-packages"
	# Package scripts must not start the daemons (no init system here; they are started by hand below).
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		touch "$STATE/created-policy-rc.d"
	fi
	DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTIONS[@]}" install --no-install-recommends "${PACKAGES[@]}" \
		>"$STATE/apt-install.log" 2>&1 || {
		cat "$STATE/apt-install.log" >&2
		die "apt-get install failed"
	}
	if [[ -e $STATE/created-policy-rc.d ]]; then
		rm -f /usr/sbin/policy-rc.d "$STATE/created-policy-rc.d"
	fi
}

write_config() {
	local host
	host=$(hostname -s)
	if [[ -e $CONF_DIR/slurm.conf ]] && ! grep -qxF "$MARKER" "$CONF_DIR/slurm.conf"; then
		die "$CONF_DIR/slurm.conf exists and is not ours: refusing to replace a real cluster's configuration"
	fi
	mkdir -p "$CONF_DIR" "$STATE/slurmctld" "$STATE/slurmd"
	# Absolute paths everywhere: the daemons and the job steps read this file from /etc/slurm (the plugin's
	# job step clears SLURM_CONF before its srun), and a relative path makes jobs hang.
	cat >"$CONF_DIR/slurm.conf" <<EOF
$MARKER
ClusterName=alpacalora
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdParameters=config_overrides
# Without slurmdbd the plugin's status command is squeue, which sees a finished job only until MinJobAge.
MinJobAge=3600
# SIGTERM to SIGKILL when a job is cancelled or hits its time limit.
KillWait=30
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=$NODE_MEMORY_MB Gres=gpu:$NODE_GPUS State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
	# A gres without File= registers 0 GPUs; /dev/null stands in for the device.
	cat >"$CONF_DIR/gres.conf" <<EOF
$MARKER
NodeName=$host Name=gpu File=/dev/null
EOF
}

start_daemons() {
	if [[ ! -s /etc/munge/munge.key ]]; then
		say "creating a munge key"
		dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
		chown munge:munge /etc/munge/munge.key
		chmod 400 /etc/munge/munge.key
	fi
	install -d -o munge -g munge -m 0755 /run/munge
	install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
	if pid_alive "$MUNGED_PID"; then
		say "munged already runs; using it"
	else
		runuser -u munge -- /usr/sbin/munged
		touch "$STATE/started-munged"
	fi
	munge -n | unmunge >/dev/null || die "munge does not work"
	/usr/sbin/slurmctld -f "$CONF_DIR/slurm.conf"
	/usr/sbin/slurmd -f "$CONF_DIR/slurm.conf"
}

wait_for_idle_node() {
	local deadline=$((SECONDS + WAIT_SECONDS)) node_state=""
	while ((SECONDS < deadline)); do
		node_state=$(sinfo --noheader --Node --format=%t 2>/dev/null | head -n 1 || true)
		if [[ $node_state == idle ]]; then
			say "node idle: $(sinfo --noheader --Node --format='%N %c CPUs %m MB %G')"
			return
		fi
		sleep 0.5
	done
	show_logs
	die "the node is not idle after ${WAIT_SECONDS}s (state: '${node_state:-no answer}')"
}

show_logs() {
	local log
	for log in "$STATE"/slurmctld.log "$STATE"/slurmd.log; do
		[[ -s $log ]] && {
			say "--- last lines of $log"
			tail -n 30 "$log" >&2
		}
	done
	return 0
}

start() {
	require_root
	if pid_alive "$STATE/slurmctld.pid"; then
		say "already running (state in $STATE)"
		return
	fi
	mkdir -p "$STATE"
	# A failed start leaves nothing behind.
	trap 'say "start failed; cleaning up"; stop' EXIT
	install_packages
	write_config
	start_daemons
	wait_for_idle_node
	trap - EXIT
}

stop_pid_file() {
	local pid_file=$1 name=$2 pid
	[[ -s $pid_file ]] || return 0
	pid=$(cat "$pid_file")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			say "$name ($pid) ignores SIGTERM; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$pid_file"
}

cancel_jobs() {
	pid_alive "$STATE/slurmctld.pid" || return 0
	local jobs
	jobs=$(squeue --noheader --format=%i --states=PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING 2>/dev/null || true)
	[[ -n $jobs ]] || return 0
	say "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
	# shellcheck disable=SC2086
	scancel $jobs || true
	for _ in $(seq 90); do
		jobs=$(squeue --noheader --format=%i --states=RUNNING,COMPLETING 2>/dev/null || true)
		[[ -z $jobs ]] && return 0
		sleep 0.5
	done
	# Processes of job steps that outlived KillWait: slurmd knows their pids.
	local pids
	pids=$(scontrol listpids 2>/dev/null | awk 'NR > 1 && $1 ~ /^[0-9]+$/ {print $1}' || true)
	if [[ -n $pids ]]; then
		say "killing leftover job processes: $(echo "$pids" | tr '\n' ' ')"
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null || true
	fi
}

stop() {
	require_root
	trap - EXIT
	cancel_jobs
	stop_pid_file "$STATE/slurmd.pid" slurmd
	stop_pid_file "$STATE/slurmctld.pid" slurmctld
	if [[ -e $STATE/started-munged ]]; then
		stop_pid_file "$MUNGED_PID" munged
	fi
	local file
	for file in "$CONF_DIR/slurm.conf" "$CONF_DIR/gres.conf"; do
		if [[ -e $file ]] && grep -qxF "$MARKER" "$file"; then
			rm -f "$file"
		fi
	done
	if [[ -e $STATE/created-policy-rc.d ]]; then
		rm -f /usr/sbin/policy-rc.d
	fi
	if [[ -s $STATE/installed-packages ]]; then
		local remove=() package
		while read -r package; do
			installed "$package" && remove+=("$package")
		done <"$STATE/installed-packages"
		if [[ ${#remove[@]} -gt 0 ]]; then
			say "uninstalling what start installed: ${remove[*]}"
			DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTIONS[@]}" purge "${remove[@]}" >/dev/null
		fi
	fi
	rmdir "$CONF_DIR" 2>/dev/null || true
	rm -rf "$STATE"
	say "stopped"
}

status() {
	if pid_alive "$STATE/slurmctld.pid"; then
		sinfo --Node --long
		squeue --states=all
	else
		say "not running"
		return 1
	fi
}

run() {
	local timeout_s=2400
	while [[ $# -gt 0 ]]; do
		case $1 in
		--timeout)
			timeout_s=$2
			shift 2
			;;
		--)
			shift
			break
			;;
		*) die "run: unexpected argument $1 (usage: run [--timeout S] -- COMMAND...)" ;;
		esac
	done
	[[ $# -gt 0 ]] || die "run: no command"
	local started_here=1
	if pid_alive "$STATE/slurmctld.pid"; then
		say "a cluster started earlier is running: using it, and leaving it running"
		started_here=0
	fi
	start
	local status=0
	timeout --kill-after=30 "$timeout_s" "$@" || status=$?
	if [[ $status -eq 124 || $status -eq 137 ]]; then
		say "'$*' ran past ${timeout_s}s and was stopped"
	fi
	if [[ $status -ne 0 ]]; then
		squeue --states=all >&2 || true
		show_logs
	fi
	if [[ $started_here -eq 1 ]]; then
		stop
	fi
	return "$status"
}

case ${1:-} in
start | stop | status)
	"$1"
	;;
run)
	shift
	run "$@"
	;;
*)
	sed -n '2,14p' "$0" >&2
	exit 2
	;;
esac
