#!/usr/bin/env bash
# Builds every fuzz target once, then runs each for SECONDS, two at a time (the machine has two
# cores), and prints one line per target; exits non-zero if any target found a crash, a hang
# (an input running over 10 s) or an out-of-memory (over 2 GB), or did not run.
#
#   bash fuzz/run.sh SECONDS [TARGET...]        # every target when none is named
#   KASKADE_FUZZ_RUNS=10000000 bash fuzz/run.sh 3600 udp_demux   # stop at 10M inputs or 1 h
#
# cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# Builds go to ${CARGO_TARGET_DIR_FUZZ:-/var/cache/kaskade-fuzz-target}, apart from the main
# target directory. Each target starts from its committed seeds (fuzz/corpus/TARGET) plus what
# earlier runs on this machine found (the work corpus under the target directory, which is
# where new inputs go); a finding is written to fuzz/artifacts/TARGET/ and its log kept.
set -euo pipefail
cd "$(dirname "$0")"

if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: bash fuzz/run.sh SECONDS [TARGET...]" >&2
  exit 2
fi
seconds="$1"
shift

export RUSTC_BOOTSTRAP=1
# as `cargo fuzz run` does: the sanitizer runtime sees some symbols twice in Rust binaries
export ASAN_OPTIONS="detect_odr_violation=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_FUZZ:-/var/cache/kaskade-fuzz-target}"
jobs="${KASKADE_FUZZ_JOBS:-2}"
work="${KASKADE_FUZZ_CORPUS:-$CARGO_TARGET_DIR/corpus}"
logs="${KASKADE_FUZZ_LOGS:-$CARGO_TARGET_DIR/logs}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

# One build of every target (release, AddressSanitizer; debug assertions and overflow checks
# come from the release profile of fuzz/Cargo.toml, all crates but mousiki).
cargo fuzz build --release
bin_dir="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"

mkdir -p "$logs"
extra=()
if [ -n "${KASKADE_FUZZ_RUNS:-}" ]; then
  extra+=("-runs=$KASKADE_FUZZ_RUNS")
fi

# Targets that keep a world (a media core with connected participants, a locator, a recorder)
# from one input to the next: its state grows by design, which libFuzzer's leak check (run
# whenever an input allocates more than it frees) would scan for after nearly every input.
stateful=" node_datagrams node_media sdp_offer locator_join locator_node_report recorder_http "

run_one() {
  local target="$1" log="$logs/$1.log"
  mkdir -p "$work/$target" "artifacts/$target" "corpus/$target"
  local started status=0 leaks=1
  [[ "$stateful" == *" $target "* ]] && leaks=0
  started=$(date +%s)
  "$bin_dir/$target" \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -detect_leaks="$leaks" -artifact_prefix="artifacts/$target/" "${extra[@]}" \
    "$work/$target" "corpus/$target" >"$log" 2>&1 || status=$?
  echo "$status $(($(date +%s) - started))" >"$log.status"
}

for target in "${targets[@]}"; do
  if [ ! -x "$bin_dir/$target" ]; then
    echo "fuzz target $target: failed (no such target)"
    echo "127 0" >"$logs/$target.log.status"
    continue
  fi
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  run_one "$target" &
done
wait

failed=0
for target in "${targets[@]}"; do
  log="$logs/$target.log"
  read -r status elapsed <"$log.status"
  [ "$status" = 127 ] && [ ! -f "$log" ] && { failed=1; continue; }
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  figures="${runs:-?} execs, ${speed:-?} exec/s, ${elapsed} s, cov ${cov:-?}, ft ${ft:-?}, rss ${rss:-?} MB"
  if [ "$status" = 0 ]; then
    echo "fuzz target $target: passed ($figures)"
  else
    failed=1
    finding=$(grep -m1 -E 'ERROR: libFuzzer|ERROR: AddressSanitizer|panicked at|==[0-9]+== ERROR' "$log" || true)
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    echo "fuzz target $target: failed (exit $status; $figures)"
    [ -n "$finding" ] && echo "  $finding"
    [ -n "$artifact" ] && echo "  input: fuzz/$artifact (reproduce: $bin_dir/$target fuzz/$artifact)"
    echo "  log: $log"
  fi
done
exit "$failed"
