//! Churn against the real all-in-one (`kaskade`, a locator with its node and recorder): the CI run of
//! `kaskade-loadtest` (2 rooms x 4 lean participants, 10 s, decoded) with one participant
//! leaving and a fresh one joining every 2 s, its per-second series recording the locator's
//! and the node's metrics. Churned participants must join, settle and receive (and be
//! received) like the first ones, with no loss, and once everyone has left the node's
//! map-size gauges and participant count must be back at their starting values, its open file
//! descriptors and tasks no higher: no state is left behind per join and leave.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use kaskade_e2e::loadtest::{run, u64_at};
use kaskade_e2e::{Node, Scratch, http_get};
use serde_json::Value;

/// The node's gauges that must come back to their starting values.
fn node_state(node: &Node) -> BTreeMap<String, f64> {
    let text = http_get(node.http, "/node/metrics").expect("the node's metrics");
    text.lines()
        .filter(|line| {
            line.starts_with("kaskade_sfu_map_entries{")
                || line.starts_with("kaskade_sfu_participants ")
                || line.starts_with("kaskade_sfu_rooms ")
                || line.starts_with("kaskade_sfu_process_open_fds ")
                || line.starts_with("kaskade_sfu_tokio_alive_tasks ")
        })
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Whether `now` is back at `start`: every map and count equal, descriptors and tasks no
/// higher.
fn back_at_start(start: &BTreeMap<String, f64>, now: &BTreeMap<String, f64>) -> bool {
    start.len() == now.len()
        && start.iter().all(|(name, value)| {
            let now = now.get(name).copied().unwrap_or(f64::NAN);
            if name.contains("open_fds") || name.contains("alive_tasks") {
                now <= *value
            } else {
                now == *value
            }
        })
}

/// Polls `f` until it is true or `timeout` passes; returns whether it became true.
fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The series' rows as column name -> value (empty cells left out).
fn read_series(path: &str) -> Vec<BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(path).expect("the series was written");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    lines
        .map(|line| {
            header
                .iter()
                .zip(line.split(','))
                .filter_map(|(name, cell)| Some((name.to_string(), cell.parse().ok()?)))
                .collect()
        })
        .collect()
}

#[test]
fn churned_participants_join_receive_and_leave_nothing_behind() {
    let scratch = Scratch::new("churn");
    let db = scratch.path("cdr.sqlite");
    let recordings = scratch.path("recordings");
    let server = Node::start(
        Command::new(env!("CARGO_BIN_EXE_kaskade-under-test")),
        &["--db", &db, "--recordings", &recordings],
    )
    .expect("all-in-one starts");
    // the driver publishes the map sizes once a second: wait for the first
    assert!(
        wait_for(Duration::from_secs(10), || node_state(&server)
            .keys()
            .any(|k| k.contains("map=\"demux_tuples\""))),
        "the node publishes its map sizes"
    );
    // and for the embedded node to have registered with the locator (its first report)
    assert!(
        wait_for(Duration::from_secs(10), || server
            .metric("kaskade_locator_nodes")
            .is_ok_and(|n| n == 1.0)),
        "the embedded node registers"
    );
    let start = node_state(&server);
    assert_eq!(start.get("kaskade_sfu_participants"), Some(&0.0));

    let series = scratch.path("series.csv");
    let (locator_metrics, node_metrics) = (
        format!("{}/metrics", server.url()),
        format!("{}/node/metrics", server.url()),
    );
    let pid = server.pid().to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_kaskade-loadtest-under-test"));
    command.args(["--locator", &server.url(), "--server-pid", &pid]);
    command.args(["--churn-every", "2s", "--series", &series]);
    command.args([
        "--metrics-url",
        &locator_metrics,
        "--metrics-url",
        &node_metrics,
    ]);
    let report = run(command);
    check_churn(&report);
    check_series(&read_series(&series), &report);

    let mut last = BTreeMap::new();
    let settled = wait_for(Duration::from_secs(20), || {
        last = node_state(&server);
        back_at_start(&start, &last)
    });
    assert!(
        settled,
        "after everyone left the node is not back at its start:\nstart {start:#?}\nnow {last:#?}"
    );
}

/// Everyone, first joiners and newcomers, joined and exchanged decoded media with every
/// room-mate it met; nothing was lost; the pairs together for the whole window account for
/// every byte.
fn check_churn(report: &Value) {
    let churn = &report["churn"];
    // events at 2, 4, 6 and 8 s of the 10 s window
    assert_eq!(u64_at(churn, "/events"), 4, "{churn:#}");
    assert_eq!(u64_at(churn, "/leaves"), 4, "{churn:#}");
    assert_eq!(u64_at(churn, "/joins"), 4, "{churn:#}");
    for field in ["/join_failures", "/skipped", "/unsettled"] {
        assert_eq!(u64_at(churn, field), 0, "{field}: {churn:#}");
    }
    let total = u64_at(report, "/participants_total");
    assert_eq!(total, 8 + 4, "{report:#}");
    assert_eq!(u64_at(report, "/participants_joined"), total, "{report:#}");
    assert_eq!(u64_at(report, "/loss/lost"), 0, "{report:#}");
    assert!(u64_at(report, "/loss/expected") > 0);
    assert_eq!(u64_at(report, "/missing_first_frames"), 0, "{report:#}");
    assert_eq!(u64_at(report, "/decode_errors"), 0, "{report:#}");
    assert_eq!(report["latency"]["measured"], true);
    let expected = u64_at(report, "/bytes/expected") as f64;
    let received = u64_at(report, "/bytes/received") as f64;
    assert!(expected > 0.0, "some pairs spanned the whole window");
    assert!(
        (received - expected).abs() <= expected * 0.05,
        "received {received} of {expected} bytes"
    );
    let participants = report["participants"].as_array().expect("participants");
    let newcomers: Vec<&Value> = participants
        .iter()
        .filter(|p| p["churn_joined"] == true)
        .collect();
    assert_eq!(newcomers.len(), 4);
    assert_eq!(
        participants
            .iter()
            .filter(|p| p["churn_left"] == true)
            .count(),
        4
    );
    for p in participants {
        let name = p["name"].as_str().unwrap_or_default();
        let remotes = p["remotes"].as_object().expect("remotes");
        assert!(remotes.len() >= 3, "{name} met its room-mates: {p:#}");
        for (mate, r) in remotes {
            assert!(
                u64_at(r, "/frames_decoded") > 0,
                "{name} decoded nothing of {mate}: {p:#}"
            );
            assert_eq!(u64_at(r, "/packets_lost"), 0, "{name} from {mate}: {p:#}");
        }
    }
}

/// The series has a row a second with the run's figures and both metrics pages' gauges.
fn check_series(rows: &[BTreeMap<String, f64>], report: &Value) {
    assert!(rows.len() >= 10, "{} rows", rows.len());
    let max = |column: &str| {
        rows.iter()
            .filter_map(|row| row.get(column).copied())
            .fold(f64::NAN, f64::max)
    };
    assert_eq!(max("joined"), 8.0);
    assert_eq!(max("measuring"), 1.0);
    assert!(max("received_mbps") > 1.0);
    assert!(max("latency_p99_ms") > 0.0);
    assert_eq!(max("kaskade_sfu_participants"), 8.0);
    assert!(max("kaskade_sfu_map_entries{map=demux_tuples}") >= 8.0);
    assert!(max("kaskade_locator_map_entries{map=meetings}") >= 2.0);
    for process in ["kaskade_sfu", "kaskade_locator"] {
        assert!(max(&format!("{process}_process_resident_memory_bytes")) > 0.0);
        assert!(max(&format!("{process}_process_open_fds")) > 0.0);
        assert!(max(&format!("{process}_tokio_alive_tasks")) > 0.0);
    }
    let leaves = u64_at(&report["churn"], "/leaves") as f64;
    assert!(max("churn_leaves") >= leaves - 1.0, "{leaves} leaves");
}
