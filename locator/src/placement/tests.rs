use super::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn load(capacity: u32, participants: u32) -> NodeLoad {
    NodeLoad {
        capacity,
        participants,
        ..NodeLoad::default()
    }
}

fn in_region(region: &str, capacity: u32) -> NodeLoad {
    NodeLoad {
        region: Some(region.into()),
        ..load(capacity, 0)
    }
}

fn placer() -> Placer {
    Placer::new(PlacementConfig {
        node_timeout: Duration::from_secs(3),
        max_meeting_size: 10,
    })
}

fn place(
    p: &mut Placer,
    meeting: &str,
    now: Instant,
    rng: &mut StdRng,
) -> Result<Placement, PlacementError> {
    p.place(meeting, Request::default(), now, rng)
}

#[test]
fn corrected_load_counts_placements_until_the_next_report() {
    let (t0, mut rng) = (Instant::now(), StdRng::seed_from_u64(1));
    let mut p = placer();
    p.report("a", load(3, 1), [], t0);
    assert_eq!(
        place(&mut p, "m1", t0, &mut rng).unwrap().kind,
        PlacementKind::New
    );
    assert_eq!(
        place(&mut p, "m2", t0, &mut rng).unwrap().node.as_ref(),
        "a"
    );
    assert_eq!(p.corrected_participants("a"), Some(3));
    assert_eq!(
        place(&mut p, "m3", t0, &mut rng),
        Err(PlacementError::NoCapacity)
    );
    // the report says one of the two placed participants arrived: the correction is gone
    p.report("a", load(3, 2), [("m1", 1)], t0);
    assert_eq!(p.corrected_participants("a"), Some(2));
    assert_eq!(p.meeting_participants("m2", t0), 0);
    assert!(place(&mut p, "m3", t0, &mut rng).is_ok());
}

#[test]
fn an_overloaded_node_gets_no_new_participants() {
    let (t0, mut rng) = (Instant::now(), StdRng::seed_from_u64(2));
    let mut p = placer();
    let overloaded = NodeLoad {
        overloaded: true,
        ..load(100, 1)
    };
    p.report("busy", overloaded, [("standup", 1)], t0);
    p.report("idle", load(200, 50), [], t0);
    for i in 0..50 {
        let placed = place(&mut p, &format!("m{i}"), t0, &mut rng).unwrap();
        assert_eq!(placed.node.as_ref(), "idle");
    }
    let joined = place(&mut p, "standup", t0, &mut rng).unwrap();
    assert_eq!(
        (joined.node.as_ref(), joined.kind),
        ("idle", PlacementKind::Cascade)
    );
}

#[test]
fn a_node_full_by_bitrate_takes_no_one() {
    let (t0, mut rng) = (Instant::now(), StdRng::seed_from_u64(3));
    let mut p = placer();
    let saturated = NodeLoad {
        max_bitrate_out_bps: Some(100_000_000),
        bitrate_out_bps: 100_000_000,
        ..load(100, 4)
    };
    p.report("saturated", saturated, [("m", 4)], t0);
    assert_eq!(
        place(&mut p, "m", t0, &mut rng),
        Err(PlacementError::NoCapacity)
    );
    p.report("other", load(100, 0), [], t0);
    let joined = place(&mut p, "m", t0, &mut rng).unwrap();
    assert_eq!(
        (joined.node.as_ref(), joined.kind),
        ("other", PlacementKind::Cascade)
    );
}

#[test]
fn stale_reports_make_a_node_ineligible() {
    let (t0, mut rng) = (Instant::now(), StdRng::seed_from_u64(4));
    let mut p = placer();
    p.report("old", load(100, 0), [("m", 2)], t0);
    let later = t0 + Duration::from_secs(3);
    assert_eq!(
        place(&mut p, "x", later, &mut rng),
        Err(PlacementError::NoCapacity)
    );
    // the meeting's participants on a stale node no longer count
    assert_eq!(p.meeting_participants("m", later), 0);
    p.report("new", load(100, 0), [], later);
    for i in 0..20 {
        let placed = place(&mut p, &format!("m{i}"), later, &mut rng).unwrap();
        assert_eq!(placed.node.as_ref(), "new");
    }
    let joined = place(&mut p, "m", later, &mut rng).unwrap();
    assert_eq!(
        (joined.node.as_ref(), joined.kind),
        ("new", PlacementKind::New)
    );
    let just_fresh = t0 + Duration::from_millis(2_999);
    assert!(
        p.meeting_nodes("m", just_fresh)
            .iter()
            .any(|(n, _)| n.as_ref() == "old")
    );
}

#[test]
fn a_region_preference_is_honoured_when_the_region_has_room() {
    let (t0, mut rng) = (Instant::now(), StdRng::seed_from_u64(5));
    let mut p = placer();
    for (name, region) in [
        ("eu-1", "eu"),
        ("eu-2", "eu"),
        ("us-1", "us"),
        ("us-2", "us"),
    ] {
        p.report(name, in_region(region, 100), [], t0);
    }
    let us = Request {
        region: Some("us"),
        ..Request::default()
    };
    let eu = Request {
        region: Some("eu"),
        ..Request::default()
    };
    let first = p.place("board", eu, t0, &mut rng).unwrap();
    assert!(first.node.starts_with("eu-"));
    assert_eq!(first.kind, PlacementKind::New);
    // a participant preferring the US cascades the meeting onto a US node
    let second = p.place("board", us, t0, &mut rng).unwrap();
    assert!(second.node.starts_with("us-"), "{second:?}");
    assert_eq!(second.kind, PlacementKind::Cascade);
    // later participants of either region stay on their region's node
    for _ in 0..3 {
        assert_eq!(
            p.place("board", us, t0, &mut rng).unwrap().node,
            second.node
        );
        assert_eq!(p.place("board", eu, t0, &mut rng).unwrap().node, first.node);
    }
    // a region nobody serves, or no preference: stay on the node with most participants
    p.place("board", us, t0, &mut rng).unwrap();
    let asia = Request {
        region: Some("asia"),
        ..Request::default()
    };
    assert_eq!(
        p.place("board", asia, t0, &mut rng).unwrap().node,
        second.node
    );
    assert!(p.place("new", asia, t0, &mut rng).is_ok());
}

#[test]
fn a_full_region_sends_the_participant_elsewhere() {
    let (t0, mut rng) = (Instant::now(), StdRng::seed_from_u64(6));
    let mut p = placer();
    let full = NodeLoad {
        participants: 1,
        ..in_region("eu", 1)
    };
    p.report("eu-1", full, [("m", 1)], t0);
    p.report("us-1", in_region("us", 10), [], t0);
    let eu = Request {
        region: Some("eu"),
        ..Request::default()
    };
    let placed = p.place("other", eu, t0, &mut rng).unwrap();
    assert_eq!(placed.node.as_ref(), "us-1");
}

#[test]
fn a_meeting_stays_while_its_node_has_room_then_cascades() {
    let (t0, mut rng) = (Instant::now(), StdRng::seed_from_u64(7));
    let mut p = placer();
    for name in ["a", "b", "c"] {
        p.report(name, load(4, 0), [], t0);
    }
    let mut nodes = Vec::new();
    for i in 0..10 {
        let placed = place(&mut p, "big", t0, &mut rng).unwrap();
        let want = match i {
            0 => PlacementKind::New,
            4 | 8 => PlacementKind::Cascade,
            _ => PlacementKind::Stay,
        };
        assert_eq!((i, placed.kind), (i, want));
        assert_eq!(placed.participants_before, i);
        nodes.push(placed.node);
    }
    // four on the first node, four on the second, two on the third
    assert!(nodes[..4].iter().all(|n| *n == nodes[0]));
    assert!(nodes[4..8].iter().all(|n| *n == nodes[4]));
    assert!(nodes[8..].iter().all(|n| *n == nodes[8]));
    assert_ne!(nodes[0], nodes[4]);
    assert_ne!(nodes[4], nodes[8]);
    assert_eq!(
        place(&mut p, "big", t0, &mut rng),
        Err(PlacementError::MeetingFull(10))
    );
}

#[test]
fn a_stay_prefers_the_node_with_most_of_the_meeting() {
    let (t0, mut rng) = (Instant::now(), StdRng::seed_from_u64(8));
    let mut p = placer();
    p.report("a", load(10, 2), [("m", 2)], t0);
    p.report("b", load(10, 5), [("m", 5)], t0);
    let placed = place(&mut p, "m", t0, &mut rng).unwrap();
    assert_eq!(
        (placed.node.as_ref(), placed.kind),
        ("b", PlacementKind::Stay)
    );
}

#[test]
fn pinned_and_avoided_nodes() {
    let (t0, mut rng) = (Instant::now(), StdRng::seed_from_u64(9));
    let mut p = placer();
    p.report("a", load(10, 0), [], t0);
    p.report("b", load(10, 0), [], t0);
    let pin = |node| Request {
        pinned: Some(node),
        ..Request::default()
    };
    assert_eq!(
        p.place("m", pin("nope"), t0, &mut rng),
        Err(PlacementError::UnknownNode)
    );
    assert_eq!(
        p.place("m", pin("b"), t0, &mut rng).unwrap().node.as_ref(),
        "b"
    );
    let avoid_b = Request {
        avoid: Some("b"),
        ..Request::default()
    };
    let placed = p.place("m", avoid_b, t0, &mut rng).unwrap();
    assert_eq!(
        (placed.node.as_ref(), placed.kind),
        ("a", PlacementKind::Cascade)
    );
    for _ in 0..5 {
        let placed = p.place("m", avoid_b, t0, &mut rng).unwrap();
        assert_eq!(
            (placed.node.as_ref(), placed.kind),
            ("a", PlacementKind::Stay)
        );
    }
    let later = t0 + Duration::from_secs(5);
    assert_eq!(
        p.place("m", pin("a"), later, &mut rng),
        Err(PlacementError::UnknownNode)
    );
    p.remove_node("a");
    assert_eq!(
        p.place("m", pin("a"), t0, &mut rng),
        Err(PlacementError::UnknownNode)
    );
    assert_eq!(p.meeting_nodes("m", t0).len(), 1);
}

#[test]
fn a_removed_node_leaves_its_meetings() {
    let (t0, mut rng) = (Instant::now(), StdRng::seed_from_u64(10));
    let mut p = placer();
    p.report("a", load(10, 3), [("m", 3)], t0);
    assert!(p.host("m", "a"));
    assert!(!p.host("m", "ghost"));
    p.remove_node("a");
    assert_eq!(p.meeting_participants("m", t0), 0);
    assert_eq!(p.live_nodes().count(), 0);
    p.report("b", load(10, 0), [], t0);
    let placed = place(&mut p, "m", t0, &mut rng).unwrap();
    assert_eq!(
        (placed.node.as_ref(), placed.kind),
        ("b", PlacementKind::New)
    );
}

#[test]
fn no_herding_when_a_hundred_meetings_start_at_once() {
    let t0 = Instant::now();
    let now = t0 + Duration::from_secs(1);
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut p = placer();
        let names: Vec<String> = (0..10).map(|i| format!("node-{i}")).collect();
        for name in &names {
            p.report(name, load(20, 0), [], t0);
        }
        let mut per_node: HashMap<Arc<str>, u32> = HashMap::new();
        for i in 0..100 {
            let placed = place(&mut p, &format!("meeting-{i}"), now, &mut rng).unwrap();
            *per_node.entry(placed.node).or_default() += 1;
        }
        let counts: Vec<u32> = names
            .iter()
            .map(|n| per_node.get(n.as_str()).copied().unwrap_or(0))
            .collect();
        // ten per node on average; two choices keep every node within three of that
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min >= 7 && *max <= 13, "seed {seed}: {counts:?}");
        for name in &names {
            assert!(p.corrected_participants(name).unwrap() <= 20);
        }
    }
}

#[test]
fn mirrored_state_counts_other_placements() {
    let (t0, mut rng) = (Instant::now(), StdRng::seed_from_u64(11));
    let mut p = placer();
    p.set_node("a", load(4, 1), t0, 2);
    p.set_node("b", load(4, 0), t0, 0);
    p.set_hosts("m", [("a", 1, 2), ("ghost", 5, 0)]);
    assert_eq!(p.meeting_participants("m", t0), 3);
    assert_eq!(p.corrected_participants("a"), Some(3));
    let placed = place(&mut p, "m", t0, &mut rng).unwrap();
    assert_eq!(
        (placed.node.as_ref(), placed.kind),
        ("a", PlacementKind::Stay)
    );
    let placed = place(&mut p, "m", t0, &mut rng).unwrap();
    assert_eq!(
        (placed.node.as_ref(), placed.kind),
        ("b", PlacementKind::Cascade)
    );
    p.set_hosts("m", []);
    assert_eq!(p.meeting_participants("m", t0), 0);
}

#[test]
fn a_recorder_joins_a_full_meeting_without_taking_a_seat() {
    let (t0, mut rng) = (Instant::now(), StdRng::seed_from_u64(7));
    let mut p = placer();
    p.report("a", load(100, 0), [], t0);
    for _ in 0..10 {
        place(&mut p, "full", t0, &mut rng).unwrap();
    }
    assert_eq!(
        place(&mut p, "full", t0, &mut rng),
        Err(PlacementError::MeetingFull(10))
    );
    let recorder = Request {
        hidden: true,
        ..Request::default()
    };
    let placed = p.place("full", recorder, t0, &mut rng).unwrap();
    assert_eq!(placed.kind, PlacementKind::Stay);
    assert_eq!(
        p.meeting_participants("full", t0),
        10,
        "the recorder is not a participant"
    );
}
