#!/usr/bin/env bash
# The soak of docs/RELIABILITY.md ("Soak"): the all-in-one (`kaskade`, a locator with its
# node and recorder, release build) pinned to CPU 0, kaskade-loadtest pinned to CPU 1 (by
# default; see --server-cpus), ten rooms of ten lean participants for 30 minutes with one
# participant leaving and a fresh one joining every 3 s, a CSV row a second with the
# participants' figures and both metrics pages' gauges;
# then, 40 s after everyone left (the locator keeps an empty meeting's state for 30 s), both
# pages once more, and the plot and figures (loadtest/soak/plot.py, matplotlib).
#
#   loadtest/soak/run.sh [--out DIR] [--duration 30m] [--rooms 10] [--participants 10]
#                        [--churn-every 3s] [--resolution 320x240] [--fps 15]
#                        [--video-bitrate 250] [--warmup-min 5] [--png docs/soak.png]
#                        [--autogroup-nice N] [--server-cpus 0] [--generator-cpus 1]
#                        [--no-build]
#
# --server-cpus and --generator-cpus are taskset CPU lists: `0-1` for both lets the node use
# both cores (it reports overload at 90 % of the cores it may run on) when one core cannot
# carry the load (see docs/RELIABILITY.md, "Soak").
#
# Binaries come from $KASKADE_BIN (a directory holding kaskade and kaskade-loadtest),
# else from ${CARGO_TARGET_DIR:-target}/release, built first unless --no-build. On a machine
# shared with other heavy jobs, hold their lock for the run:
#   flock /tmp/kaskade-heavy.lock loadtest/soak/run.sh --no-build
# With --autogroup-nice N (root for N < 0) the server and the generator each start in a session
# of their own whose scheduler autogroup gets nice N: with sched_autogroup on (Debian's
# default), CPU is shared between sessions first, so other sessions' builds would otherwise
# take up to half of each CPU from them. /proc/loadavg is sampled every 10 s into loadavg.txt.
set -euo pipefail

out=soak-out duration=30m rooms=10 participants=10 churn=3s
resolution=320x240 fps=15 kbps=250 warmup=5 png=docs/soak.png build=1 group_nice=
server_cpus=0 generator_cpus=1
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --rooms) rooms=$2; shift 2 ;;
        --participants) participants=$2; shift 2 ;;
        --churn-every) churn=$2; shift 2 ;;
        --resolution) resolution=$2; shift 2 ;;
        --fps) fps=$2; shift 2 ;;
        --video-bitrate) kbps=$2; shift 2 ;;
        --warmup-min) warmup=$2; shift 2 ;;
        --png) png=$2; shift 2 ;;
        --autogroup-nice) group_nice=$2; shift 2 ;;
        --server-cpus) server_cpus=$2; shift 2 ;;
        --generator-cpus) generator_cpus=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
# the plot at the end needs matplotlib: say so now, not after the run
python3 -c 'import matplotlib' 2>/dev/null || {
    echo "the soak's plot needs matplotlib: pip install matplotlib (or apt install python3-matplotlib)" >&2
    exit 1
}
bin=${KASKADE_BIN:-${CARGO_TARGET_DIR:-target}/release}
if [ "$build" = 1 ] && [ -z "${KASKADE_BIN:-}" ]; then
    cargo build --release -p kaskade -p loadtest
fi
for b in kaskade kaskade-loadtest; do
    [ -x "$bin/$b" ] || { echo "no $bin/$b (build it, or set KASKADE_BIN)" >&2; exit 1; }
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/recordings" "$out/cdr.sqlite"

server="" sampler=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null
    [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
    true
}
trap cleanup EXIT
session=()
[ -n "$group_nice" ] && session=(setsid)
# sets the autogroup nice of process $1 once it runs binary $2 (in its own session by then:
# before its exec, the write would change this script's autogroup)
group() {
    [ -n "$group_nice" ] || return 0
    for _ in $(seq 100); do
        if [ "$(basename "$(readlink "/proc/$1/exe" 2>/dev/null)")" = "$2" ]; then
            echo "$group_nice" >"/proc/$1/autogroup"
            return 0
        fi
        sleep 0.05
    done
    echo "the autogroup of $2 was left as it was" >&2
}

(while sleep 10; do echo "$(date +%s) $(cat /proc/loadavg)"; done) >"$out/loadavg.txt" &
sampler=$!

# the all-in-one on its CPUs, on a free port, in the output directory (call records, recordings)
(cd "$out" && exec "${session[@]}" taskset -c "$server_cpus" "$bin/kaskade" --listen 127.0.0.1:0 \
    --udp-port 0 --tcp-port 0 --db "$out/cdr.sqlite" --recordings "$out/recordings" \
    >"$out/server.out" 2>"$out/server.log") &
server=$!
group "$server" kaskade
url=""
for _ in $(seq 100); do
    url=$(sed -n 's|^kaskade is running: open \(http://[^/]*\)/.*|\1|p' "$out/server.out")
    [ -n "$url" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$out/server.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { echo "the all-in-one did not start" >&2; exit 1; }
echo "all-in-one: $url (pid $server, CPUs $server_cpus); output in $out" >&2
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git -C "$here" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "nproc: $(nproc)"
    lscpu | head -20
} >"$out/machine.txt"
curl -s "$url/metrics" >"$out/metrics-before.txt"
curl -s "$url/node/metrics" >"$out/node-metrics-before.txt"

echo "autogroup nice: ${group_nice:-unchanged}; server CPUs $server_cpus, generator CPUs $generator_cpus" >>"$out/machine.txt"
"${session[@]}" taskset -c "$generator_cpus" "$bin/kaskade-loadtest" --locator "$url" --server-pid "$server" \
    --rooms "$rooms" --participants "$participants" --duration "$duration" \
    --resolution "$resolution" --fps "$fps" --video-bitrate "$kbps" \
    --churn-every "$churn" --series "$out/series.csv" \
    --metrics-url "$url/metrics" --metrics-url "$url/node/metrics" \
    --json "$out/report.json" >"$out/report.txt" 2>"$out/loadtest.log" &
generator=$!
group "$generator" kaskade-loadtest
wait "$generator"
cat "$out/report.txt"

# everyone has left: the node's maps at once, the locator's meetings after their 30 s linger
sleep 40
curl -s "$url/metrics" >"$out/metrics-after.txt"
curl -s "$url/node/metrics" >"$out/node-metrics-after.txt"
kill "$server" "$sampler"
wait "$server" 2>/dev/null || true
server="" sampler=""

python3 "$here/plot.py" "$out/series.csv" --out "$png" --figures "$out/figures.md" \
    --warmup-min "$warmup"
echo "plot: $png; figures: $out/figures.md" >&2
