#!/usr/bin/env bash
# kaskade against Janus and against the raw limit, measured by one tool on one machine.
#
#   loadtest/compare.sh [--rooms "1 2 4"] [--sweep "2 4 6 8 10 12 14"] [--duration 20]
#                       [--bitrate 500] [--resolution 640x360] [--fps 20] [--out DIR]
#                       [--targets "kaskade janus raw"]
#
# Every server runs pinned to CPU 0 and kaskade-loadtest to CPU 1 (taskset), all inside one
# private network namespace with a veth pair (Janus's libnice ignores loopback), so the three
# servers see the same path. For each server:
#   1. cost: full-mesh ten-person rooms (--rooms, each a separate run) at --bitrate; the
#      report's CPU-microseconds per forwarded packet, forwarded packets per CPU-second, and
#      server memory per participant;
#   2. capacity: --sweep rooms upwards until a run loses 1 % or more of its packets or its p99
#      end-to-end latency reaches 50 ms; the largest passing count (of the --rooms runs too)
#      is the capacity.
# It prints one table and the ratios kaskade/Janus and kaskade/raw. Reports (JSON) stay in
# --out (default /tmp/kaskade-compare). Needs root (ip netns), taskset, jq, janus; builds the
# release binaries unless KASKADE_BIN points at a directory holding them.
set -euo pipefail

rooms_list="1 2 4"
sweep="2 4 6 8 10 12 14 16"
duration=20
bitrate=500
resolution=640x360
fps=20
out=/tmp/kaskade-compare
targets="kaskade janus raw"
while [[ $# -gt 0 ]]; do
	case $1 in
	--rooms) rooms_list=$2; shift 2 ;;
	--sweep) sweep=$2; shift 2 ;;
	--duration) duration=$2; shift 2 ;;
	--bitrate) bitrate=$2; shift 2 ;;
	--resolution) resolution=$2; shift 2 ;;
	--fps) fps=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--targets) targets=$2; shift 2 ;;
	-h | --help) sed -n '2,20s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
	esac
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
if [[ -z ${KASKADE_BIN:-} ]]; then
	(cd "$root" && cargo build --release -q -p sfu -p loadtest)
	KASKADE_BIN=${CARGO_TARGET_DIR:-$root/target}/release
fi
for tool in jq taskset janus ip; do
	command -v $tool >/dev/null || { echo "compare.sh: $tool is missing" >&2; exit 1; }
done
mkdir -p "$out"

ns=kcmp$$
addr=10.98.0.1
secret=compare-$$
server_pid=
cleanup() {
	[[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null || true
	ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
	ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
in_ns() { ip netns exec "$ns" "$@"; }
in_ns ip link set lo up
in_ns ip link add kcv0 type veth peer name kcv1
in_ns ip addr add $addr/24 dev kcv0
in_ns ip link set kcv0 up
in_ns ip link set kcv1 up
in_ns ip route add default dev kcv0

# Starts `CMD...` in the namespace on CPU 0, output to LOG; sets server_pid to its process id
# (the process itself, not `ip netns exec`, which stays its parent).
spawn() {
	local log=$1 pidfile=$out/server.pid
	shift
	rm -f "$pidfile"
	in_ns bash -c 'echo $$ >"$0"; exec taskset -c 0 "$@"' "$pidfile" "$@" >"$log" 2>&1 &
	for _ in $(seq 50); do
		[[ -s $pidfile ]] && break
		sleep 0.1
	done
	server_pid=$(cat "$pidfile")
}

# Starts the server of target $1 and waits until it is ready; sets server_pid.
start_server() {
	local log=$out/$1-server.log
	case $1 in
	kaskade)
		# the generator is one client address: lift the per-address limits a public node keeps
		spawn "$log" "$KASKADE_BIN/kaskade-sfu" --listen $addr:8080 --udp-port 10000 \
			--no-ice-tcp --max-participants 100000 \
			--max-connections-per-ip 100000 --max-joins-per-ip 100000
		wait_for "$log" "kaskade is running" ;;
	janus)
		spawn "$log" env JANUS_EVENT_LOOPS=1 "$here/janus/run-janus.sh" "$out/janus-conf"
		wait_for_port 8188 ;;
	raw)
		spawn "$log" "$KASKADE_BIN/kaskade-raw-forwarder" --listen $addr:10100 \
			--secret "$secret"
		wait_for "$log" "raw forwarder ready" ;;
	esac
}

wait_for() {
	for _ in $(seq 100); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "compare.sh: the server did not get ready (see $1)" >&2
	exit 1
}

wait_for_port() {
	for _ in $(seq 100); do
		in_ns bash -c "exec 3<>/dev/tcp/$addr/$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "compare.sh: nothing listens on $addr:$1" >&2
	exit 1
}

stop_server() {
	kill "$server_pid" 2>/dev/null || true
	while kill -0 "$server_pid" 2>/dev/null; do sleep 0.1; done
	server_pid=
}

# Runs kaskade-loadtest against target $1 with $2 rooms; the report goes to $3.
load() {
	local target_args
	case $1 in
	kaskade) target_args=(--sfu "http://$addr:8080") ;;
	janus) target_args=(--target janus --janus-url "ws://$addr:8188") ;;
	raw) target_args=(--target raw --raw-addr "$addr:10100" --secret "$secret") ;;
	esac
	in_ns taskset -c 1 "$KASKADE_BIN/kaskade-loadtest" "${target_args[@]}" \
		--rooms "$2" --participants 10 --video-bitrate "$bitrate" --resolution "$resolution" \
		--fps "$fps" --duration "$duration" --ramp 20 --server-pid "$server_pid" --json "$3" \
		>"$3.log" 2>&1 || echo "compare.sh: $1 with $2 rooms failed (see $3.log)" >&2
}

# One run on a fresh server: target $1, $2 rooms; prints the report's path.
run() {
	local report=$out/$1-$2rooms.json
	start_server "$1"
	load "$1" "$2" "$report"
	stop_server
	echo "$report"
}

field() { jq -r "$2 // \"-\"" "$1" 2>/dev/null || echo -; }
passes() {
	jq -e '.participants_joined == .participants_total and .loss.percent < 1
		and .latency.p99_ms != null and .latency.p99_ms < 50' "$1" >/dev/null 2>&1
}

declare -A cost per_cpu_s memory capacity
printf '%-8s %6s %11s %12s %14s %12s %9s %9s %9s\n' target rooms "pkts/s" "server us/pkt" \
	"pkts/CPU-s" "gen us/pkt" "KiB/part" "loss %" "p99 ms"
for target in $targets; do
	for rooms in $rooms_list; do
		r=$(run "$target" "$rooms")
		printf '%-8s %6s %11.0f %12s %14s %12s %9s %9s %9s\n' "$target" "$rooms" \
			"$(field "$r" .forwarding.packets_per_second)" \
			"$(field "$r" '.forwarding.server_cpu_us_per_packet | . * 100 | round / 100')" \
			"$(field "$r" '.forwarding.packets_per_server_cpu_second | round')" \
			"$(field "$r" '.forwarding.generator_cpu_us_per_packet | . * 100 | round / 100')" \
			"$(field "$r" '.forwarding.server_bytes_per_participant / 1024 | round')" \
			"$(field "$r" '.loss.percent | . * 1000 | round / 1000')" \
			"$(field "$r" '.latency.p99_ms | . * 10 | round / 10')"
		if passes "$r" && ((rooms > ${capacity[$target]:-0})); then capacity[$target]=$rooms; fi
		cost[$target]=$(field "$r" .forwarding.server_cpu_us_per_packet)
		per_cpu_s[$target]=$(field "$r" .forwarding.packets_per_server_cpu_second)
		memory[$target]=$(field "$r" .forwarding.server_bytes_per_participant)
	done
	capacity[$target]=${capacity[$target]:-0}
	for rooms in $sweep; do
		r=$(run "$target" "$rooms")
		if passes "$r"; then
			((rooms > capacity[$target])) && capacity[$target]=$rooms
			echo "  $target: $rooms rooms pass (loss $(field "$r" .loss.percent) %, p99 $(field "$r" .latency.p99_ms) ms, server $(field "$r" .server.cpu_seconds) CPU-s in $(field "$r" .window_s) s)"
		else
			echo "  $target: $rooms rooms fail (joined $(field "$r" .participants_joined)/$(field "$r" .participants_total), loss $(field "$r" .loss.percent) %, p99 $(field "$r" .latency.p99_ms) ms)"
			break
		fi
	done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
echo
echo "largest passing room count (loss < 1 %, p99 < 50 ms), server on one core:"
for target in $targets; do echo "  $target: ${capacity[$target]}"; done
echo "ratios (last --rooms run):"
if [[ -n ${cost[janus]:-} && -n ${cost[kaskade]:-} ]]; then
	echo "  forwarded packets per CPU-second, kaskade / Janus: $(ratio "${per_cpu_s[kaskade]}" "${per_cpu_s[janus]}")"
	echo "  CPU-us per forwarded packet, Janus / kaskade:      $(ratio "${cost[janus]}" "${cost[kaskade]}")"
	echo "  memory per participant, Janus / kaskade:           $(ratio "${memory[janus]}" "${memory[kaskade]}")"
	echo "  capacity in rooms, kaskade / Janus:                $(ratio "${capacity[kaskade]}" "${capacity[janus]}")"
fi
if [[ -n ${per_cpu_s[raw]:-} && -n ${per_cpu_s[kaskade]:-} ]]; then
	echo "  kaskade's forwarding rate as a share of the raw limit: $(awk -v a="${per_cpu_s[kaskade]}" -v b="${per_cpu_s[raw]}" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.0f %%", 100 * a / b; else print "-" }')"
fi
