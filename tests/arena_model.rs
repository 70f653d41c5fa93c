//! Model-based property test of arenas: random frames of allocate / host
//! write / device write / read / upload / copy-out operations, with a reset
//! between frames, against a model of each arena tensor's contents and
//! residency. After every step the tensor's residency and the zone's
//! transfer counts must match the model; reads check contents; copied-out
//! tensors must keep their contents after later frames reuse the arena's
//! memory. `PROPTEST_CASES` overrides the case counts (64 CPU, 24 GPU).

mod common;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tensorzone::{ArenaTensor, CopyState, Location, Residency, Tensor, Transfers, Zone};

#[derive(Clone, Debug)]
enum Op {
    Alloc { len: usize, device: bool, seed: u32 },
    Empty { len: usize, device: bool },
    WriteHost { slot: usize, seed: u32 },
    WriteDevice { slot: usize, seed: u32 },
    Read { slot: usize },
    ToDevice { slot: usize },
    CopyOut { slot: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..400, any::<bool>(), any::<u32>())
            .prop_map(|(len, device, seed)| Op::Alloc { len, device, seed }),
        1 => (1usize..400, any::<bool>()).prop_map(|(len, device)| Op::Empty { len, device }),
        2 => (any::<usize>(), any::<u32>()).prop_map(|(slot, seed)| Op::WriteHost { slot, seed }),
        2 => (any::<usize>(), any::<u32>()).prop_map(|(slot, seed)| Op::WriteDevice { slot, seed }),
        3 => any::<usize>().prop_map(|slot| Op::Read { slot }),
        2 => any::<usize>().prop_map(|slot| Op::ToDevice { slot }),
        1 => any::<usize>().prop_map(|slot| Op::CopyOut { slot }),
    ]
}

fn frames() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 0..25), 1..6)
}

fn data(len: usize, seed: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| i.wrapping_mul(2_654_435_761).wrapping_add(seed))
        .collect()
}

/// What the model knows of one arena tensor.
struct Model {
    contents: Vec<u32>,
    host: CopyState,
    device: CopyState,
}

fn stale_if_present(c: CopyState) -> CopyState {
    match c {
        CopyState::Absent => CopyState::Absent,
        _ => CopyState::Stale,
    }
}

#[derive(Default, Debug, PartialEq, Clone, Copy)]
struct Calls {
    h2d: u64,
    d2h: u64,
    d2d: u64,
}

fn calls(zone: &Zone) -> Calls {
    let s = zone.stats();
    let c = |t: Transfers| t.calls;
    Calls {
        h2d: c(s.host_to_device),
        d2h: c(s.device_to_host),
        d2d: c(s.device_to_device),
    }
}

fn run_case(zone: &Zone, frames: &[Vec<Op>]) -> Result<(), TestCaseError> {
    let mut arena = zone.arena_with_capacity(4096);
    let mut owned: Vec<(Tensor<u32>, Vec<u32>)> = Vec::new();
    for (f, ops) in frames.iter().enumerate() {
        {
            let mut live: Vec<(ArenaTensor<'_, u32>, Model)> = Vec::new();
            let mut want = calls(zone);
            for (i, op) in ops.iter().enumerate() {
                let ctx = format!("frame {f} step {i} {op:?}");
                let n = live.len();
                let pick = |s: usize| s % n.max(1);
                match *op {
                    Op::Alloc { len, device, seed } => {
                        let d = data(len, seed);
                        let loc = if device {
                            Location::Device
                        } else {
                            Location::Host
                        };
                        let t = arena.from_slice([len], &d, loc).unwrap();
                        want.h2d += u64::from(device);
                        let (host, dev) = if device {
                            (CopyState::Absent, CopyState::Current)
                        } else {
                            (CopyState::Current, CopyState::Absent)
                        };
                        live.push((
                            t,
                            Model {
                                contents: d,
                                host,
                                device: dev,
                            },
                        ));
                    }
                    Op::Empty { len, device } => {
                        let loc = if device {
                            Location::Device
                        } else {
                            Location::Host
                        };
                        let t = arena.empty::<u32>([len], loc).unwrap();
                        // An unwritten tensor reads as zeros; its storage
                        // exists but is current nowhere yet.
                        let (host, dev) = if device {
                            (CopyState::Absent, CopyState::Stale)
                        } else {
                            (CopyState::Stale, CopyState::Absent)
                        };
                        live.push((
                            t,
                            Model {
                                contents: vec![0; len],
                                host,
                                device: dev,
                            },
                        ));
                    }
                    _ if n == 0 => continue,
                    Op::WriteHost { slot, seed } => {
                        let (t, m) = &mut live[pick(slot)];
                        let d = data(m.contents.len(), seed);
                        t.write_host(&d).unwrap();
                        m.contents = d;
                        m.host = CopyState::Current;
                        m.device = stale_if_present(m.device);
                    }
                    Op::WriteDevice { slot, seed } => {
                        let (t, m) = &mut live[pick(slot)];
                        let d = data(m.contents.len(), seed);
                        t.write_device(&d).unwrap();
                        want.h2d += 1;
                        m.contents = d;
                        m.device = CopyState::Current;
                        m.host = stale_if_present(m.host);
                    }
                    Op::Read { slot } => {
                        let (t, m) = &mut live[pick(slot)];
                        if m.host != CopyState::Current {
                            want.d2h += u64::from(m.device == CopyState::Current);
                            m.host = CopyState::Current;
                        }
                        prop_assert_eq!(t.to_vec().unwrap(), m.contents.clone(), "{}", ctx);
                    }
                    Op::ToDevice { slot } => {
                        let (t, m) = &mut live[pick(slot)];
                        if m.device != CopyState::Current {
                            want.h2d += u64::from(m.host == CopyState::Current);
                            m.device = CopyState::Current;
                        }
                        t.to_device().unwrap();
                    }
                    Op::CopyOut { slot } => {
                        let (t, m) = &mut live[pick(slot)];
                        want.d2d += u64::from(m.device == CopyState::Current);
                        owned.push((t.to_owned().unwrap(), m.contents.clone()));
                    }
                }
                prop_assert_eq!(calls(zone), want, "transfer calls after {}", ctx);
                for (k, (t, m)) in live.iter().enumerate() {
                    prop_assert_eq!(
                        t.residency(),
                        Residency {
                            host: m.host,
                            device: m.device
                        },
                        "tensor {} after {}",
                        k,
                        ctx
                    );
                }
            }
        }
        arena.reset();
        prop_assert_eq!(arena.used(), 0);
    }
    for (k, (mut t, want)) in owned.into_iter().enumerate() {
        prop_assert_eq!(t.to_vec().unwrap(), want, "copied-out tensor {}", k);
    }
    Ok(())
}

#[test]
fn arena_model() {
    common::run_model(64, 24, frames(), |zone, fr| run_case(zone, fr));
}
