//! Unit tests of `metrics`.

use super::*;

#[test]
fn every_reason_has_its_own_counter_from_the_start() {
    let metrics = Metrics::new();
    metrics.drop_packet(Dropped::Slot(DropReason::WaitingForKeyframe));
    metrics.drop_packet(Dropped::Muted);
    metrics.drop_packet(Dropped::Muted);
    let text = metrics.render();
    for reason in Dropped::ALL {
        assert!(
            text.contains(&format!("reason=\"{}\"", reason.label())),
            "{reason:?}"
        );
    }
    assert!(
        text.contains("kaskade_sfu_dropped_total{reason=\"muted\"} 2"),
        "{text}"
    );
    assert!(text.contains("kaskade_sfu_dropped_total{reason=\"waiting_for_keyframe\"} 1"));
    assert!(text.contains("kaskade_sfu_dropped_total{reason=\"unroutable\"} 0"));
}

#[test]
fn map_sizes_and_the_shells_own_metrics_are_rendered() {
    let metrics = Metrics::with_extra(|r| {
        let gauge = Gauge::<i64>::default();
        r.register("shell_gauge", "A shell's gauge", gauge.clone());
        Box::new(move || {
            gauge.set(7);
        })
    });
    metrics.set_map_sizes(&[("demux_tuples", 3), ("rooms", 1)]);
    metrics.set_map_sizes(&[("demux_tuples", 0)]);
    let text = metrics.render();
    assert!(
        text.contains("kaskade_sfu_map_entries{map=\"demux_tuples\"} 0"),
        "{text}"
    );
    assert!(text.contains("kaskade_sfu_map_entries{map=\"rooms\"} 1"));
    assert!(
        text.contains("kaskade_sfu_shell_gauge 7"),
        "sampled at render: {text}"
    );
}
