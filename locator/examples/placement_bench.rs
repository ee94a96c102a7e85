//! Placement latency with 10,000 simulated nodes and 100,000 meetings.
//!
//! `cargo run --release -p locator --example placement_bench`
//!
//! Builds the table from one report per node (four regions, capacity 100, ten meetings of
//! one to six participants each), then places 200,000 joins: half into existing meetings, a
//! quarter into new meetings, a quarter into existing meetings with a region preference. Every
//! placement is timed on its own; a fifth of the nodes report again between batches, which
//! resets their corrections as in a live cluster. Prints the latency percentiles.

use kaskade_locator::placement::{NodeLoad, PlacementConfig, PlacementKind, Placer, Request};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

const NODES: usize = 10_000;
const MEETINGS: usize = 100_000;
const JOINS: usize = 200_000;
const BATCH: usize = 10_000;
const REGIONS: [&str; 4] = ["eu", "us", "ap", "sa"];

fn main() {
    let mut rng = StdRng::seed_from_u64(7);
    let now = Instant::now();
    let mut placer = Placer::new(PlacementConfig {
        node_timeout: Duration::from_secs(3),
        max_meeting_size: 10,
    });
    let names: Vec<String> = (0..NODES).map(|i| format!("node-{i:05}")).collect();
    let meetings: Vec<String> = (0..MEETINGS).map(|i| format!("meeting-{i:06}")).collect();
    let per_node = MEETINGS / NODES;
    let mut report_times = Vec::with_capacity(NODES);
    let report = |placer: &mut Placer, rng: &mut StdRng, node: usize, at: Instant| {
        let hosted: Vec<(&str, u32)> = (0..per_node)
            .map(|k| {
                (
                    meetings[node * per_node + k].as_str(),
                    rng.random_range(1..=6),
                )
            })
            .collect();
        let load = NodeLoad {
            region: Some(REGIONS[node % REGIONS.len()].to_string()),
            capacity: 100,
            max_bitrate_out_bps: Some(10_000_000_000),
            participants: hosted.iter().map(|(_, p)| p).sum(),
            bitrate_out_bps: rng.random_range(0..5_000_000_000),
            overloaded: node.is_multiple_of(97),
        };
        let started = Instant::now();
        placer.report(&names[node], load, hosted, at);
        started.elapsed()
    };
    for node in 0..NODES {
        report_times.push(report(&mut placer, &mut rng, node, now));
    }
    let mut latencies = Vec::with_capacity(JOINS);
    let mut kinds = [0usize; 3];
    let mut refused = 0usize;
    let mut new_meeting = 0usize;
    let fresh_names: Vec<String> = (0..JOINS).map(|i| format!("new-{i:06}")).collect();
    for batch in 0..JOINS / BATCH {
        let at = now + Duration::from_millis(batch as u64 * 100);
        for _ in 0..NODES / 5 {
            let node = rng.random_range(0..NODES);
            report_times.push(report(&mut placer, &mut rng, node, at));
        }
        for _ in 0..BATCH {
            let pick = rng.random_range(0..4);
            let (meeting, region) = match pick {
                0 | 1 => (meetings[rng.random_range(0..MEETINGS)].as_str(), None),
                2 => {
                    new_meeting += 1;
                    (fresh_names[new_meeting - 1].as_str(), None)
                }
                _ => (
                    meetings[rng.random_range(0..MEETINGS)].as_str(),
                    Some(REGIONS[rng.random_range(0..REGIONS.len())]),
                ),
            };
            let request = Request {
                region,
                ..Request::default()
            };
            let started = Instant::now();
            let placed = placer.place(meeting, request, at, &mut rng);
            latencies.push(started.elapsed());
            match placed {
                Ok(p) => {
                    kinds[match p.kind {
                        PlacementKind::Stay => 0,
                        PlacementKind::Cascade => 1,
                        PlacementKind::New => 2,
                    }] += 1
                }
                Err(_) => refused += 1,
            }
        }
    }
    println!("{NODES} nodes, {MEETINGS} meetings, {JOINS} joins");
    println!(
        "placements: {} stay, {} cascade, {} new, {refused} refused (meeting full or no room)",
        kinds[0], kinds[1], kinds[2]
    );
    print_percentiles("place", &mut latencies);
    print_percentiles("report (10 meetings)", &mut report_times);
}

fn print_percentiles(what: &str, samples: &mut [Duration]) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64 * 1e6;
    println!(
        "{what}: p50 {:.2} us, p99 {:.2} us, p99.9 {:.2} us, max {:.2} us, mean {:.2} us ({} samples)",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0),
        mean,
        samples.len()
    );
}
