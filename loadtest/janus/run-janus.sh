#!/usr/bin/env bash
# Starts Janus with kaskade-loadtest's configuration (this directory), adapted to the machine.
#
#   loadtest/janus/run-janus.sh OUT_DIR [JANUS_OPTION...]
#
# Copies the .jcfg files of this directory into OUT_DIR (created if missing), sets there:
#   event_loops      JANUS_EVENT_LOOPS, default: the number of CPUs (nproc)
#   ws_port          JANUS_WS_PORT, default 8188
#   rtp_port_range   JANUS_RTP_PORTS, default 20000-40000
#   the folders      where this machine's Janus keeps its plugins (found from /usr/lib/*/janus)
# then replaces itself with `janus -C OUT_DIR/janus.jcfg -F OUT_DIR JANUS_OPTION...`, so the
# process id stays Janus's (for --server-pid). Any janus option may follow (`janus --help`),
# e.g. `-d 4` for info logs.
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
	sed -n '2,13s/^# \{0,1\}//p' "$0"
	exit 2
fi
out=$1
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v janus >/dev/null || { echo "run-janus.sh: janus is not installed (apt-get install janus)" >&2; exit 1; }

lib=${JANUS_LIB_DIR:-}
if [[ -z $lib ]]; then
	for dir in /usr/lib/*/janus /usr/lib/janus /usr/local/lib/janus /opt/janus/lib/janus; do
		if [[ -e $dir/plugins/libjanus_videoroom.so ]]; then
			lib=$dir
			break
		fi
	done
fi
[[ -n $lib ]] || { echo "run-janus.sh: no libjanus_videoroom.so found (set JANUS_LIB_DIR)" >&2; exit 1; }

loops=${JANUS_EVENT_LOOPS:-$(nproc)}
ws_port=${JANUS_WS_PORT:-8188}
rtp_ports=${JANUS_RTP_PORTS:-20000-40000}

mkdir -p "$out"
cp "$here"/*.jcfg "$out"/
sed -i -E \
	-e "s|^(\s*configs_folder\s*=).*|\1 \"$out\"|" \
	-e "s|^(\s*plugins_folder\s*=).*|\1 \"$lib/plugins\"|" \
	-e "s|^(\s*transports_folder\s*=).*|\1 \"$lib/transports\"|" \
	-e "s|^(\s*events_folder\s*=).*|\1 \"$lib/events\"|" \
	-e "s|^(\s*loggers_folder\s*=).*|\1 \"$lib/loggers\"|" \
	-e "s|^(\s*event_loops\s*=).*|\1 $loops|" \
	-e "s|^(\s*rtp_port_range\s*=).*|\1 \"$rtp_ports\"|" \
	"$out/janus.jcfg"
sed -i -E "s|^(\s*ws_port\s*=).*|\1 $ws_port|" "$out/janus.transport.websockets.jcfg"

exec janus -C "$out/janus.jcfg" -F "$out" "$@"
