//! Tests of the schedule: determinism, the overlap rules, the shapes and the timeline text.

use super::*;
use std::collections::BTreeMap;

fn secs(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn config(nodes: usize, overlapping: bool, seed: u64) -> NemesisConfig {
    NemesisConfig {
        nodes,
        duration: secs(120),
        kinds: FaultKind::ALL.into_iter().collect(),
        overlapping,
        hold: TimeRange::new(Duration::from_millis(500), secs(5)),
        quiet: TimeRange::new(Duration::from_millis(200), secs(2)),
        seed,
    }
}

/// Every fault of a timeline as (id, start, heal, fault), checking each is started once and healed
/// once, after its start.
fn intervals(steps: &[Step]) -> Vec<(FaultId, Duration, Duration, Fault)> {
    let mut started: BTreeMap<FaultId, (Duration, Fault)> = BTreeMap::new();
    let mut done = Vec::new();
    for step in steps {
        match &step.action {
            Action::Start(id, fault) => assert!(started.insert(*id, (step.at, fault.clone())).is_none()),
            Action::Heal(id) => {
                let (start, fault) = started.remove(id).expect("healed a fault that is not active");
                done.push((*id, start, step.at, fault));
            }
        }
    }
    assert!(started.is_empty(), "never healed: {started:?}");
    done.sort_by_key(|(id, ..)| *id);
    done
}

fn links(list: &[(NodeId, NodeId)]) -> BTreeSet<Link> {
    list.iter().copied().collect()
}

fn both_ways(pairs: &[(NodeId, NodeId)]) -> BTreeSet<Link> {
    pairs.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).collect()
}

#[test]
fn parses_fault_kind_lists() {
    let kinds = parse_fault_kinds("kill,pause,partition,delay,drop,bandwidth,oneway,restart,power").unwrap();
    assert_eq!(kinds, FaultKind::ALL.into_iter().collect());
    let kinds = parse_fault_kinds(" kill , kill,partition,").unwrap();
    assert_eq!(kinds, BTreeSet::from([FaultKind::Kill, FaultKind::Partition]));
    for kind in FaultKind::ALL {
        assert_eq!(kind.name().parse::<FaultKind>(), Ok(kind));
    }
}

#[test]
fn an_unknown_fault_kind_is_named_with_the_valid_ones() {
    let error = parse_fault_kinds("kill,explode").unwrap_err();
    assert!(error.contains("'explode'"), "{error}");
    for kind in FaultKind::ALL {
        assert!(error.contains(kind.name()), "{error} does not list {}", kind.name());
    }
    assert!(parse_fault_kinds(" , ").unwrap_err().contains("no fault kinds"));
}

#[test]
fn rejects_bad_configs() {
    let mut bad = config(4, false, 1);
    assert!(schedule(&bad).unwrap_err().contains("3 or 5"));
    bad = config(3, false, 1);
    bad.hold = TimeRange::new(secs(2), secs(1));
    assert!(schedule(&bad).unwrap_err().contains("hold"));
    bad = config(3, false, 1);
    bad.quiet = TimeRange::new(secs(2), secs(1));
    assert!(schedule(&bad).unwrap_err().contains("quiet"));
    bad = config(3, false, 1);
    bad.kinds.clear();
    assert!(schedule(&bad).is_err());
    bad = config(3, false, 1);
    bad.hold.min = Duration::ZERO;
    assert!(schedule(&bad).is_err());
}

#[test]
fn the_same_seed_gives_the_same_schedule() {
    for (nodes, overlapping) in [(3, false), (5, false), (3, true), (5, true)] {
        let first = schedule(&config(nodes, overlapping, 99)).unwrap();
        assert!(first.len() > 10);
        assert_eq!(first, schedule(&config(nodes, overlapping, 99)).unwrap());
        assert_ne!(first, schedule(&config(nodes, overlapping, 100)).unwrap());
    }
}

#[test]
fn without_overlap_one_fault_at_a_time_with_quiet_gaps() {
    for seed in 0..50 {
        for nodes in [3, 5] {
            let config = config(nodes, false, seed);
            let faults = intervals(&schedule(&config).unwrap());
            let mut healed_at = Duration::ZERO;
            for (id, start, heal, _) in &faults {
                assert!(*start >= healed_at, "seed {seed}: #{id} starts before the previous fault heals");
                assert!(config.quiet.contains(*start - healed_at), "seed {seed}: gap {:?}", *start - healed_at);
                healed_at = *heal;
            }
        }
    }
}

#[test]
fn every_fault_heals_within_the_hold_range_and_before_the_end() {
    for seed in 0..50 {
        for (nodes, overlapping) in [(3, false), (5, false), (3, true), (5, true)] {
            let config = config(nodes, overlapping, seed);
            let steps = schedule(&config).unwrap();
            assert!(steps.windows(2).all(|pair| pair[0].at <= pair[1].at), "steps out of order");
            for (id, start, heal, _) in intervals(&steps) {
                assert!(config.hold.contains(heal - start), "seed {seed}: #{id} held {:?}", heal - start);
                assert!(heal <= config.duration, "seed {seed}: #{id} heals at {heal:?}");
            }
        }
    }
}

#[test]
fn overlapping_faults_never_share_a_process_or_a_pair() {
    let mut overlaps = 0;
    for seed in 0..50 {
        for nodes in [3, 5] {
            let faults = intervals(&schedule(&config(nodes, true, seed)).unwrap());
            for (i, (a_id, a_start, a_heal, a)) in faults.iter().enumerate() {
                for (b_id, b_start, b_heal, b) in &faults[i + 1..] {
                    if a_start < b_heal && b_start < a_heal {
                        overlaps += 1;
                        let (a_claims, b_claims) = (Claims::of(a, nodes), Claims::of(b, nodes));
                        assert!(!a_claims.overlaps(&b_claims), "seed {seed}: #{a_id} {a} and #{b_id} {b}");
                    }
                }
            }
        }
    }
    assert!(overlaps > 0, "overlapping schedules never overlapped");
}

/// The kind of a fault, as the config names it.
fn kind_of(fault: &Fault) -> FaultKind {
    match fault {
        Fault::Kill { .. } => FaultKind::Kill,
        Fault::Pause { .. } => FaultKind::Pause,
        Fault::Restart { .. } => FaultKind::Restart,
        Fault::PowerCut => FaultKind::Power,
        Fault::Partition { .. } => FaultKind::Partition,
        Fault::Delay { .. } => FaultKind::Delay,
        Fault::Lossy { .. } => FaultKind::Drop,
        Fault::Bandwidth { .. } => FaultKind::Bandwidth,
        Fault::OneWay { .. } => FaultKind::OneWay,
    }
}

#[test]
fn every_enabled_kind_occurs_once_before_any_occurs_again() {
    for seed in 0..50 {
        for (nodes, overlapping) in [(3, false), (5, false), (3, true), (5, true)] {
            let faults = intervals(&schedule(&config(nodes, overlapping, seed)).unwrap());
            let kinds: Vec<FaultKind> = faults.iter().map(|(_, _, _, fault)| kind_of(fault)).collect();
            assert!(kinds.len() >= FaultKind::ALL.len(), "seed {seed}: only {} faults", kinds.len());
            for round in kinds.chunks(FaultKind::ALL.len()) {
                let distinct: BTreeSet<FaultKind> = round.iter().copied().collect();
                assert_eq!(distinct.len(), round.len(), "seed {seed}: a kind repeats within {round:?}");
            }
        }
    }
    // The order of a round depends on the seed.
    let first_kind = |seed| kind_of(&intervals(&schedule(&config(3, false, seed)).unwrap())[0].3);
    assert!((0..20).map(first_kind).collect::<BTreeSet<_>>().len() > 1);
}

#[test]
fn only_enabled_kinds_are_scheduled_and_targets_exist() {
    let mut config = config(5, false, 7);
    config.kinds = BTreeSet::from([FaultKind::Pause, FaultKind::OneWay]);
    let faults = intervals(&schedule(&config).unwrap());
    assert!(!faults.is_empty());
    for (_, _, _, fault) in faults {
        match fault {
            Fault::Pause { target: Target::Random(node) } => assert!((1..=5).contains(&node)),
            Fault::Pause { target: Target::Leader } => {}
            Fault::OneWay { from, to, blocking } => {
                assert!(from != to && (1..=5).contains(&from) && (1..=5).contains(&to));
                assert_ne!(blocking, Blocking::Cut, "a reset cannot block one direction");
            }
            other => panic!("not enabled: {other}"),
        }
    }
}

#[test]
fn scheduled_partitions_are_well_formed() {
    let mut shapes_seen = BTreeSet::new();
    let mut blockings_seen = Vec::new();
    for seed in 0..100 {
        for nodes in [3, 5] {
            let mut config = config(nodes, false, seed);
            config.kinds = BTreeSet::from([FaultKind::Partition]);
            for (_, _, _, fault) in intervals(&schedule(&config).unwrap()) {
                let Fault::Partition { shape, blocking } = fault else { panic!("not a partition: {fault}") };
                shapes_seen.insert((nodes, shape.name()));
                if !blockings_seen.contains(&blocking) {
                    blockings_seen.push(blocking);
                }
                let blocked = shape.links(nodes, Some(1));
                assert!(!blocked.is_empty(), "{shape} blocks nothing");
                assert!(blocked.iter().all(|&(a, b)| a != b && blocked.contains(&(b, a))), "{shape}");
                assert!(blocked.iter().all(|&(a, b)| (1..=nodes as NodeId).contains(&a) && b <= nodes as NodeId));
            }
        }
    }
    assert!(!shapes_seen.contains(&(3, "ring")), "a ring of 3 blocks nothing");
    assert_eq!(shapes_seen.len(), 4 + 5, "{shapes_seen:?}");
    assert_eq!(blockings_seen.len(), 3, "{blockings_seen:?}");
}

#[test]
fn isolate_blocks_every_link_of_one_node() {
    assert_eq!(Shape::Isolate(2).links(3, None), both_ways(&[(2, 1), (2, 3)]));
    assert_eq!(Shape::Isolate(5).links(5, Some(1)), both_ways(&[(5, 1), (5, 2), (5, 3), (5, 4)]));
}

#[test]
fn isolate_leader_resolves_at_run_time() {
    assert_eq!(Shape::IsolateLeader.links(3, Some(3)), both_ways(&[(3, 1), (3, 2)]));
    assert_eq!(Shape::IsolateLeader.links(5, None), BTreeSet::new());
}

#[test]
fn split_blocks_exactly_the_links_between_the_sides() {
    let split = Shape::Split { minority: vec![2, 4], majority: vec![1, 3, 5] };
    assert_eq!(split.links(5, None), both_ways(&[(2, 1), (2, 3), (2, 5), (4, 1), (4, 3), (4, 5)]));
    let split = Shape::Split { minority: vec![1], majority: vec![2, 3] };
    assert_eq!(split.links(3, None), Shape::Isolate(1).links(3, None));
}

#[test]
fn bridge_blocks_only_the_links_between_the_halves() {
    let bridge = Shape::Bridge { bridge: 1, left: vec![2], right: vec![3] };
    assert_eq!(bridge.links(3, None), links(&[(2, 3), (3, 2)]));
    let bridge = Shape::Bridge { bridge: 3, left: vec![1, 2], right: vec![4, 5] };
    assert_eq!(bridge.links(5, None), both_ways(&[(1, 4), (1, 5), (2, 4), (2, 5)]));
}

#[test]
fn ring_blocks_the_links_between_non_neighbours() {
    let ring = Shape::Ring { order: vec![1, 3, 5, 2, 4] };
    // Neighbours: 1-3, 3-5, 5-2, 2-4, 4-1. Everything else is blocked.
    assert_eq!(ring.links(5, None), both_ways(&[(1, 5), (1, 2), (3, 2), (3, 4), (5, 4)]));
    assert_eq!(Shape::Ring { order: vec![1, 2, 3] }.links(3, None), BTreeSet::new());
}

#[test]
fn link_sets_resolve() {
    assert_eq!(Links::All.resolve(3, None), both_ways(&[(1, 2), (1, 3), (2, 3)]));
    assert_eq!(Links::Pair(2, 3).resolve(3, None), both_ways(&[(2, 3)]));
    assert_eq!(Links::Node(Target::Random(1)).resolve(3, None), both_ways(&[(1, 2), (1, 3)]));
    assert_eq!(Links::Node(Target::Leader).resolve(3, Some(2)), both_ways(&[(2, 1), (2, 3)]));
    assert_eq!(Links::Node(Target::Leader).resolve(3, None), BTreeSet::new());
}

#[test]
fn steps_display_as_a_timeline() {
    let bridge = Shape::Bridge { bridge: 1, left: vec![2], right: vec![3] };
    let partition = Fault::Partition { shape: bridge, blocking: Blocking::Cut };
    let start = Step { at: Duration::from_millis(12_400), action: Action::Start(7, partition) };
    assert_eq!(start.to_string(), "  12.40s  START #7 partition bridge [n1 sees n2,n3; n2 -/- n3] by reset");
    let heal = Step { at: secs(15), action: Action::Heal(7) };
    assert_eq!(heal.to_string(), "  15.00s  HEAL  #7");
    let ring = Fault::Partition { shape: Shape::Ring { order: vec![1, 3, 5, 2, 4] }, blocking: Blocking::Silent };
    assert_eq!(ring.to_string(), "partition ring [n1-n3-n5-n2-n4-n1] silently, delivered on heal");
    let shape = Shape::Split { minority: vec![2, 4], majority: vec![1, 3, 5] };
    let split = Fault::Partition { shape, blocking: Blocking::SilentThenReset };
    assert_eq!(split.to_string(), "partition split [n2,n4 -/- n1,n3,n5] silently, reset on heal");
    assert_eq!(Fault::Kill { target: Target::Leader }.to_string(), "kill leader");
    let oneway = Fault::OneWay { from: 1, to: 2, blocking: Blocking::Silent };
    assert_eq!(oneway.to_string(), "oneway n1 -/-> n2 silently, delivered on heal");
    let delay =
        Fault::Delay { links: Links::Pair(1, 2), fixed: Duration::from_millis(50), jitter: Duration::from_millis(20) };
    assert_eq!(delay.to_string(), "delay 50ms+0..20ms on n1<->n2");
    // Every scheduled step renders on one line.
    for step in schedule(&config(5, true, 3)).unwrap() {
        let line = step.to_string();
        assert!(!line.contains('\n') && line.contains('#'), "{line}");
    }
}
