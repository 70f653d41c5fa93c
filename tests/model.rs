//! Model-based property test of `Tensor<T>` residency and transfer
//! accounting (DESIGN.md, "Residency").
//!
//! proptest generates random sequences of operations over a few tensor
//! slots; each sequence runs against a real zone (every backend from
//! `common::zones()`) and against a small reference model that holds, per
//! live tensor, its expected contents and which copies exist / are current.
//! After every step the test checks the tensors' residency, the zone's
//! transfer counters (bytes and calls per direction), the live tensor count
//! and the host / device live bytes against the model; reads check contents.
//!
//! In a printed failing sequence, the slot of every operation but `Create`
//! (and `Clone`'s `dst`) is an index into the live slots, taken modulo their
//! count (see `resolve`); the failure message names the resolved operation.
//! `PROPTEST_CASES` overrides the case counts (64 on the CPU, 32 on the GPU).

mod common;

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use tensorzone::{
    f16, BackendKind, CopyState, Element, Error, Location, Residency, Tensor, Transfers, Zone,
};

/// Tensor slots a sequence works on.
const SLOTS: usize = 6;
/// Longest operation sequence.
const MAX_OPS: usize = 40;

// ----- element types ---------------------------------------------------------

/// Element types the model runs with: made from a random `u32`, compared
/// exactly (no NaN can come out of `from_u32`).
trait Gen: Element + Copy {
    fn from_u32(x: u32) -> Self;
}

impl Gen for u32 {
    fn from_u32(x: u32) -> Self {
        x
    }
}

impl Gen for u8 {
    fn from_u32(x: u32) -> Self {
        x as u8
    }
}

impl Gen for f16 {
    fn from_u32(x: u32) -> Self {
        // Integers up to 2048 are exact in f16; never NaN.
        f16::from_f32((x % 2048) as f32)
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` pseudo-random elements derived from `seed` (never all zeros for
/// `len > 1`, so a missing transfer shows up as wrong contents).
fn data<T: Gen>(seed: u32, len: usize) -> Vec<T> {
    (0..len)
        .map(|i| T::from_u32(splitmix((u64::from(seed) << 32) | i as u64) as u32 | 1))
        .collect()
}

// ----- operations --------------------------------------------------------------

#[derive(Copy, Clone, Debug)]
enum Kind {
    FromSlice,
    Zeros,
    Empty,
    Full,
}

#[derive(Clone, Debug)]
enum Op {
    /// Replace `slot` with a new tensor.
    Create {
        slot: usize,
        len: usize,
        loc: Location,
        kind: Kind,
        seed: u32,
    },
    ToDevice {
        slot: usize,
    },
    ToHost {
        slot: usize,
    },
    /// `write_host` with new data (`bad_len`: one element too many, which
    /// must fail with `LengthMismatch` and change nothing).
    WriteHost {
        slot: usize,
        seed: u32,
        bad_len: bool,
    },
    /// Edit some elements through `as_mut_slice` (or `view_mut`).
    EditHost {
        slot: usize,
        seed: u32,
        edits: u8,
        via_view: bool,
    },
    /// `write_device` with new data.
    WriteDevice {
        slot: usize,
        seed: u32,
        bad_len: bool,
    },
    /// `to_vec` (or `view`), checked against the model.
    Read {
        slot: usize,
        view: bool,
    },
    /// `dst.copy_from(src)`: `ShapeMismatch` when the lengths differ.
    /// `matching`: pick `dst` among the tensors of `src`'s length.
    CopyFrom {
        dst: usize,
        src: usize,
        matching: bool,
    },
    /// `dst = src.try_clone()` (dropping what `dst` held).
    Clone {
        src: usize,
        dst: usize,
    },
    DropHostCopy {
        slot: usize,
    },
    DropDeviceCopy {
        slot: usize,
    },
    Drop {
        slot: usize,
    },
    /// `zone.pinned`, filled in two `write`s split at `split` (or with
    /// `with_bytes`), then `upload_pinned`.
    Pinned {
        slot: usize,
        seed: u32,
        split: usize,
        with_bytes: bool,
        bad_len: bool,
    },
    /// `binding()`: the device copy made current (GPU); `NeedsGpu` and no
    /// change on the CPU backend.
    Bind {
        slot: usize,
    },
    /// `mark_device_written()` with no kernel run: whatever the device copy
    /// holds becomes current (`NoDeviceCopy` without one).
    MarkDeviceWritten {
        slot: usize,
    },
    /// `zone.trim()`: releases cached memory; live tensors are untouched.
    Trim,
}

fn slot() -> impl Strategy<Value = usize> {
    0..SLOTS
}

fn len() -> impl Strategy<Value = usize> {
    // Frequent common lengths so that `copy_from` often finds equal shapes;
    // some cross the 4-byte / 256-byte boundaries for each element size.
    prop_oneof![
        4 => prop::sample::select(vec![1usize, 3, 64, 65, 257]),
        1 => 1usize..300,
    ]
}

fn loc() -> impl Strategy<Value = Location> {
    prop_oneof![Just(Location::Host), Just(Location::Device)]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::FromSlice),
        Just(Kind::Zeros),
        Just(Kind::Empty),
        Just(Kind::Full)
    ]
}

fn bad() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.1)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (slot(), len(), loc(), kind(), any::<u32>())
            .prop_map(|(slot, len, loc, kind, seed)| Op::Create { slot, len, loc, kind, seed }),
        2 => slot().prop_map(|slot| Op::ToDevice { slot }),
        2 => slot().prop_map(|slot| Op::ToHost { slot }),
        2 => (slot(), any::<u32>(), bad())
            .prop_map(|(slot, seed, bad_len)| Op::WriteHost { slot, seed, bad_len }),
        2 => (slot(), any::<u32>(), 1u8..5, any::<bool>())
            .prop_map(|(slot, seed, edits, via_view)| Op::EditHost { slot, seed, edits, via_view }),
        2 => (slot(), any::<u32>(), bad())
            .prop_map(|(slot, seed, bad_len)| Op::WriteDevice { slot, seed, bad_len }),
        3 => (slot(), any::<bool>()).prop_map(|(slot, view)| Op::Read { slot, view }),
        3 => (slot(), slot(), prop::bool::weighted(0.8))
            .prop_map(|(dst, src, matching)| Op::CopyFrom { dst, src, matching }),
        2 => (slot(), slot()).prop_map(|(src, dst)| Op::Clone { src, dst }),
        1 => slot().prop_map(|slot| Op::DropHostCopy { slot }),
        1 => slot().prop_map(|slot| Op::DropDeviceCopy { slot }),
        1 => slot().prop_map(|slot| Op::Drop { slot }),
        2 => (slot(), any::<u32>(), 0usize..301, any::<bool>(), bad()).prop_map(
            |(slot, seed, split, with_bytes, bad_len)| Op::Pinned {
                slot,
                seed,
                split,
                with_bytes,
                bad_len
            }
        ),
        1 => slot().prop_map(|slot| Op::Bind { slot }),
        1 => slot().prop_map(|slot| Op::MarkDeviceWritten { slot }),
        1 => Just(Op::Trim),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..=MAX_OPS)
}

/// Where an operation lands. Generated slots of every operation but
/// `Create` (and `Clone`'s destination) count among the live tensors, so
/// that few operations fall on empty slots; this turns them into real slot
/// numbers (`None`: nothing live to act on).
fn resolve<T: Gen>(model: &[Option<Model<T>>], op: &Op) -> Option<Op> {
    let live: Vec<usize> = (0..SLOTS).filter(|&i| model[i].is_some()).collect();
    let pick = |k: usize| (!live.is_empty()).then(|| live[k % live.len()]);
    let mut op = op.clone();
    match &mut op {
        Op::Create { .. } | Op::Trim => {}
        Op::ToDevice { slot }
        | Op::ToHost { slot }
        | Op::WriteHost { slot, .. }
        | Op::EditHost { slot, .. }
        | Op::WriteDevice { slot, .. }
        | Op::Read { slot, .. }
        | Op::DropHostCopy { slot }
        | Op::DropDeviceCopy { slot }
        | Op::Drop { slot }
        | Op::Pinned { slot, .. }
        | Op::Bind { slot }
        | Op::MarkDeviceWritten { slot } => *slot = pick(*slot)?,
        Op::Clone { src, .. } => *src = pick(*src)?,
        Op::CopyFrom { dst, src, matching } => {
            *src = pick(*src)?;
            let len = model[*src].as_ref().map(|m| m.data.len());
            let same: Vec<usize> = live
                .iter()
                .copied()
                .filter(|&i| i != *src && model[i].as_ref().map(|m| m.data.len()) == len)
                .collect();
            *dst = if *matching && !same.is_empty() {
                same[*dst % same.len()]
            } else {
                pick(*dst)?
            };
            if *dst == *src {
                return None;
            }
        }
    }
    Some(op)
}

// ----- the model ---------------------------------------------------------------

/// The model of one tensor: contents, and which copies exist / are current.
/// Neither current = unwritten, and then `data` is all zeros.
/// Invariants: `host_cur` implies `has_host`; `dev_cur` implies `has_dev`
/// and `dev == Some(data)`.
#[derive(Clone, Debug)]
struct Model<T> {
    data: Vec<T>,
    has_host: bool,
    host_cur: bool,
    has_dev: bool,
    dev_cur: bool,
    /// What the device copy holds when this tensor wrote or cleared it
    /// (`None`: absent, or a range this tensor never wrote).
    dev: Option<Vec<T>>,
}

impl<T: Gen> Model<T> {
    fn bytes(&self) -> u64 {
        (self.data.len() * std::mem::size_of::<T>()) as u64
    }

    fn residency(&self) -> Residency {
        let side = |has: bool, cur: bool| match (has, cur) {
            (false, _) => CopyState::Absent,
            (true, false) => CopyState::Stale,
            (true, true) => CopyState::Current,
        };
        Residency {
            host: side(self.has_host, self.host_cur),
            device: side(self.has_dev, self.dev_cur),
        }
    }

    fn unwritten(&self) -> bool {
        !self.host_cur && !self.dev_cur
    }
}

/// Transfer counters the zone should show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Traffic {
    h2d: Transfers,
    d2h: Transfers,
    d2d: Transfers,
}

fn count(t: &mut Transfers, bytes: u64) {
    t.bytes += bytes;
    t.calls += 1;
}

impl Traffic {
    fn of(zone: &Zone) -> Traffic {
        let s = zone.stats();
        Traffic {
            h2d: s.host_to_device,
            d2h: s.device_to_host,
            d2d: s.device_to_device,
        }
    }

    /// The zone's transfers since `start`.
    fn since(zone: &Zone, start: Traffic) -> Traffic {
        let now = Traffic::of(zone);
        let d = |a: Transfers, b: Transfers| Transfers {
            bytes: a.bytes - b.bytes,
            calls: a.calls - b.calls,
        };
        Traffic {
            h2d: d(now.h2d, start.h2d),
            d2h: d(now.d2h, start.d2h),
            d2d: d(now.d2d, start.d2d),
        }
    }
}

/// The model's `sync_device`: upload once when the host copy is the
/// current one; an unwritten tensor is cleared on the device (no transfer).
fn model_sync_device<T: Gen>(m: &mut Model<T>, tr: &mut Traffic) {
    if m.dev_cur {
        return;
    }
    if m.host_cur {
        count(&mut tr.h2d, m.bytes());
    } else {
        debug_assert!(m.unwritten());
    }
    m.has_dev = true;
    m.dev_cur = true;
    m.dev = Some(m.data.clone());
}

/// The model's `sync_host`: download once when the device copy is the
/// current one; an unwritten tensor is zero-filled on the host.
fn model_sync_host<T: Gen>(m: &mut Model<T>, tr: &mut Traffic) {
    if m.host_cur {
        return;
    }
    if m.dev_cur {
        count(&mut tr.d2h, m.bytes());
    }
    m.has_host = true;
    m.host_cur = true;
}

// ----- running a sequence ------------------------------------------------------

struct Case<'z, T: Gen> {
    zone: &'z Zone,
    tensors: Vec<Option<Tensor<T>>>,
    model: Vec<Option<Model<T>>>,
    /// Transfers the model expects since the case started.
    traffic: Traffic,
    /// The zone's transfer counters when the case started.
    start_traffic: Traffic,
    /// Device range granularity: each device copy holds its byte length
    /// rounded up to this.
    align: u64,
    start_live: u64,
    start_host: u64,
    start_device: u64,
    /// The zone keeps an entry per tensor (`ZoneBuilder::track_tensors`).
    tracking: bool,
}

fn fail<E: std::fmt::Debug>(what: &str, e: E) -> TestCaseError {
    TestCaseError::fail(format!("{what}: unexpected error {e:?}"))
}

impl<'z, T: Gen> Case<'z, T> {
    fn new(zone: &'z Zone) -> Self {
        let s = zone.stats();
        Case {
            zone,
            tensors: (0..SLOTS).map(|_| None).collect(),
            model: (0..SLOTS).map(|_| None).collect(),
            traffic: Traffic::default(),
            start_traffic: Traffic::of(zone),
            align: zone.info().alignment.max(4).next_power_of_two(),
            start_live: s.tensors_live,
            start_host: s.host_live_bytes,
            start_device: s.device_live_bytes,
            tracking: zone.tracks_tensors(),
        }
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let zone = self.zone;
        match *op {
            Op::Create {
                slot,
                len,
                loc,
                kind,
                seed,
            } => {
                let host = loc == Location::Host;
                let (t, m) = match kind {
                    Kind::FromSlice => {
                        let d = data::<T>(seed, len);
                        let t = Tensor::from_slice(zone, [len], &d, loc);
                        // Host: a host copy only. Device: one upload straight
                        // from the slice, no host copy kept.
                        let m = Model {
                            dev: (!host).then(|| d.clone()),
                            data: d,
                            has_host: host,
                            host_cur: host,
                            has_dev: !host,
                            dev_cur: !host,
                        };
                        if !host {
                            count(&mut self.traffic.h2d, m.bytes());
                        }
                        (t, m)
                    }
                    Kind::Zeros => (
                        // On the device: cleared there, nothing moves.
                        Tensor::zeros(zone, [len], loc),
                        Model {
                            data: vec![T::zeroed(); len],
                            has_host: host,
                            host_cur: host,
                            has_dev: !host,
                            dev_cur: !host,
                            dev: (!host).then(|| vec![T::zeroed(); len]),
                        },
                    ),
                    Kind::Empty => (
                        Tensor::empty(zone, [len], loc),
                        Model {
                            data: vec![T::zeroed(); len],
                            has_host: host,
                            host_cur: false,
                            has_dev: !host,
                            dev_cur: false,
                            dev: None,
                        },
                    ),
                    Kind::Full => {
                        let v = T::from_u32(seed);
                        // Filled on the host; on the device one upload of the
                        // filled bytes, and the filled host copy stays
                        // (current) as the code does (`Tensor::place`).
                        let m = Model {
                            data: vec![v; len],
                            has_host: true,
                            host_cur: true,
                            has_dev: !host,
                            dev_cur: !host,
                            dev: (!host).then(|| vec![v; len]),
                        };
                        if !host {
                            count(&mut self.traffic.h2d, m.bytes());
                        }
                        (Tensor::full(zone, [len], v, loc), m)
                    }
                };
                let t = t.map_err(|e| fail("create", e))?;
                prop_assert_eq!(t.len(), len);
                prop_assert_eq!(t.byte_len(), m.bytes());
                self.tensors[slot] = Some(t);
                self.model[slot] = Some(m);
            }
            Op::ToDevice { slot } => {
                let (Some(t), Some(m)) = (&mut self.tensors[slot], &mut self.model[slot]) else {
                    return Ok(());
                };
                t.to_device().map_err(|e| fail("to_device", e))?;
                model_sync_device(m, &mut self.traffic);
            }
            Op::ToHost { slot } => {
                let (Some(t), Some(m)) = (&mut self.tensors[slot], &mut self.model[slot]) else {
                    return Ok(());
                };
                t.to_host().map_err(|e| fail("to_host", e))?;
                model_sync_host(m, &mut self.traffic);
            }
            Op::WriteHost {
                slot,
                seed,
                bad_len,
            } => {
                let (Some(t), Some(m)) = (&mut self.tensors[slot], &mut self.model[slot]) else {
                    return Ok(());
                };
                let n = m.data.len() + usize::from(bad_len);
                let d = data::<T>(seed, n);
                let r = t.write_host(&d);
                if bad_len {
                    prop_assert!(
                        matches!(r, Err(Error::LengthMismatch { .. })),
                        "write_host of {} elements into {}: {:?}",
                        n,
                        m.data.len(),
                        r
                    );
                } else {
                    r.map_err(|e| fail("write_host", e))?;
                    m.data = d;
                    m.has_host = true;
                    m.host_cur = true;
                    m.dev_cur = false;
                }
            }
            Op::EditHost {
                slot,
                seed,
                edits,
                via_view,
            } => {
                let (Some(t), Some(m)) = (&mut self.tensors[slot], &mut self.model[slot]) else {
                    return Ok(());
                };
                let len = m.data.len();
                let changes: Vec<(usize, T)> = (0..u64::from(edits))
                    .map(|k| {
                        let h = splitmix((u64::from(seed) << 8) | k);
                        ((h % len as u64) as usize, T::from_u32((h >> 32) as u32))
                    })
                    .collect();
                if via_view {
                    let mut v = t.view_mut().map_err(|e| fail("view_mut", e))?;
                    prop_assert_eq!(v.shape(), &[len]);
                    let s = v
                        .as_slice_mut()
                        .ok_or_else(|| TestCaseError::fail("view_mut not contiguous"))?;
                    for &(i, x) in &changes {
                        s[i] = x;
                    }
                } else {
                    let s = t.as_mut_slice().map_err(|e| fail("as_mut_slice", e))?;
                    prop_assert_eq!(s.len(), len);
                    for &(i, x) in &changes {
                        s[i] = x;
                    }
                }
                // Made current on the host first (a download when the device
                // is newer), then the device copy is stale.
                model_sync_host(m, &mut self.traffic);
                m.dev_cur = false;
                for &(i, x) in &changes {
                    m.data[i] = x;
                }
            }
            Op::WriteDevice {
                slot,
                seed,
                bad_len,
            } => {
                let (Some(t), Some(m)) = (&mut self.tensors[slot], &mut self.model[slot]) else {
                    return Ok(());
                };
                let n = m.data.len() + usize::from(bad_len);
                let d = data::<T>(seed, n);
                let r = t.write_device(&d);
                if bad_len {
                    prop_assert!(
                        matches!(r, Err(Error::LengthMismatch { .. })),
                        "write_device of {} elements into {}: {:?}",
                        n,
                        m.data.len(),
                        r
                    );
                } else {
                    r.map_err(|e| fail("write_device", e))?;
                    m.dev = Some(d.clone());
                    m.data = d;
                    count(&mut self.traffic.h2d, m.bytes());
                    m.has_dev = true;
                    m.dev_cur = true;
                    m.host_cur = false;
                }
            }
            Op::Read { slot, view } => {
                let (Some(t), Some(m)) = (&mut self.tensors[slot], &mut self.model[slot]) else {
                    return Ok(());
                };
                let got: Vec<T> = if view {
                    let v = t.view().map_err(|e| fail("view", e))?;
                    prop_assert_eq!(v.shape(), &[m.data.len()]);
                    v.iter().copied().collect()
                } else {
                    t.to_vec().map_err(|e| fail("to_vec", e))?
                };
                model_sync_host(m, &mut self.traffic);
                prop_assert!(
                    got == m.data,
                    "read of slot {} ({} elements) differs from the model: first difference at {:?}\n got: {:?}\nwant: {:?}",
                    slot,
                    m.data.len(),
                    got.iter().zip(&m.data).position(|(a, b)| a != b),
                    &got[..got.len().min(16)],
                    &m.data[..m.data.len().min(16)]
                );
            }
            Op::CopyFrom { dst, src, .. } => {
                if dst == src || self.tensors[dst].is_none() || self.tensors[src].is_none() {
                    return Ok(());
                }
                let mut s = self.tensors[src].take().expect("checked above");
                let r = self.tensors[dst]
                    .as_mut()
                    .expect("checked above")
                    .copy_from(&mut s);
                self.tensors[src] = Some(s);
                let dst_len = self.model[dst].as_ref().expect("model").data.len();
                let sm = self.model[src].as_mut().expect("model in step");
                let same = sm.data.len() == dst_len;
                if !same {
                    prop_assert!(
                        matches!(r, Err(Error::ShapeMismatch { .. })),
                        "copy_from between lengths that differ: {:?}",
                        r
                    );
                    return Ok(());
                }
                r.map_err(|e| fail("copy_from", e))?;
                // src made current on the device (an upload when its host copy
                // is newer), then one device→device copy.
                model_sync_device(sm, &mut self.traffic);
                let bytes = sm.bytes();
                let contents = sm.data.clone();
                count(&mut self.traffic.d2d, bytes);
                let dm = self.model[dst].as_mut().expect("model");
                dm.dev = Some(contents.clone());
                dm.data = contents;
                dm.has_dev = true;
                dm.dev_cur = true;
                dm.host_cur = false;
            }
            Op::Clone { src, dst } => {
                let (Some(t), Some(m)) = (&mut self.tensors[src], &self.model[src]) else {
                    return Ok(());
                };
                let c = t.try_clone().map_err(|e| fail("try_clone", e))?;
                let cm = if m.dev_cur {
                    // A device→device copy into a new device-only tensor.
                    count(&mut self.traffic.d2d, m.bytes());
                    Model {
                        data: m.data.clone(),
                        has_host: false,
                        host_cur: false,
                        has_dev: true,
                        dev_cur: true,
                        dev: Some(m.data.clone()),
                    }
                } else if m.host_cur {
                    // A host copy, nothing moves.
                    Model {
                        data: m.data.clone(),
                        has_host: true,
                        host_cur: true,
                        has_dev: false,
                        dev_cur: false,
                        dev: None,
                    }
                } else {
                    // Unwritten: a new unwritten tensor with its storage on
                    // the device when the source has a device copy, else on
                    // the host.
                    Model {
                        data: vec![T::zeroed(); m.data.len()],
                        has_host: !m.has_dev,
                        host_cur: false,
                        has_dev: m.has_dev,
                        dev_cur: false,
                        dev: None,
                    }
                };
                self.tensors[dst] = Some(c);
                self.model[dst] = Some(cm);
            }
            Op::DropHostCopy { slot } => {
                let (Some(t), Some(m)) = (&mut self.tensors[slot], &mut self.model[slot]) else {
                    return Ok(());
                };
                t.drop_host_copy().map_err(|e| fail("drop_host_copy", e))?;
                if m.has_host {
                    model_sync_device(m, &mut self.traffic);
                    m.has_host = false;
                    m.host_cur = false;
                }
            }
            Op::DropDeviceCopy { slot } => {
                let (Some(t), Some(m)) = (&mut self.tensors[slot], &mut self.model[slot]) else {
                    return Ok(());
                };
                t.drop_device_copy()
                    .map_err(|e| fail("drop_device_copy", e))?;
                if m.has_dev {
                    model_sync_host(m, &mut self.traffic);
                    m.has_dev = false;
                    m.dev_cur = false;
                    m.dev = None;
                }
            }
            Op::Drop { slot } => {
                self.tensors[slot] = None;
                self.model[slot] = None;
            }
            Op::Pinned {
                slot,
                seed,
                split,
                with_bytes,
                bad_len,
            } => {
                let (Some(t), Some(m)) = (&mut self.tensors[slot], &mut self.model[slot]) else {
                    return Ok(());
                };
                let n = m.data.len() + usize::from(bad_len);
                let d = data::<T>(seed, n);
                let mut p = zone.pinned::<T>(n).map_err(|e| fail("pinned", e))?;
                prop_assert_eq!(p.len(), n);
                if with_bytes {
                    p.with_bytes(|mut b| b.copy_from_slice(bytemuck::cast_slice(&d)))
                        .map_err(|e| fail("pinned with_bytes", e))?;
                } else {
                    let k = split.min(n);
                    p.write(0, &d[..k])
                        .map_err(|e| fail(&format!("pinned write(0, {k} elements)"), e))?;
                    p.write(k, &d[k..])
                        .map_err(|e| fail(&format!("pinned write({k}, {} elements)", n - k), e))?;
                    // Past the end: refused.
                    prop_assert!(
                        matches!(p.write(n, &d[..1]), Err(Error::OutOfRange { .. })),
                        "pinned write past the end accepted"
                    );
                }
                let r = t.upload_pinned(p);
                if bad_len {
                    prop_assert!(
                        matches!(r, Err(Error::LengthMismatch { .. })),
                        "upload_pinned of {} elements into {}: {:?}",
                        n,
                        m.data.len(),
                        r
                    );
                } else {
                    r.map_err(|e| fail("upload_pinned", e))?;
                    m.dev = Some(d.clone());
                    m.data = d;
                    count(&mut self.traffic.h2d, m.bytes());
                    m.has_dev = true;
                    m.dev_cur = true;
                    m.host_cur = false;
                }
            }
            Op::Bind { slot } => {
                let (Some(t), Some(m)) = (&mut self.tensors[slot], &mut self.model[slot]) else {
                    return Ok(());
                };
                let bytes = m.bytes();
                let align = self.align;
                match zone.backend() {
                    BackendKind::Cpu => {
                        let r = t.binding().map(|_| ());
                        prop_assert!(
                            matches!(r, Err(Error::NeedsGpu { .. })),
                            "binding on the CPU backend: {:?}",
                            r
                        );
                    }
                    BackendKind::Gpu => {
                        let b = t.binding().map_err(|e| fail("binding", e))?;
                        prop_assert_eq!(b.offset % align, 0, "binding offset alignment");
                        prop_assert_eq!(
                            b.size.map(|n| n.get()),
                            Some(bytes.div_ceil(4) * 4),
                            "binding size"
                        );
                        model_sync_device(m, &mut self.traffic);
                    }
                }
            }
            Op::MarkDeviceWritten { slot } => {
                let (Some(t), Some(m)) = (&mut self.tensors[slot], &mut self.model[slot]) else {
                    return Ok(());
                };
                let r = t.mark_device_written();
                if !m.has_dev {
                    prop_assert!(
                        matches!(r, Err(Error::NoDeviceCopy { .. })),
                        "mark_device_written without a device copy: {:?}",
                        r
                    );
                } else {
                    r.map_err(|e| fail("mark_device_written", e))?;
                    // The device copy's bytes become the contents. A range
                    // this tensor never wrote must not show another tensor's
                    // old bytes (`Tensor::empty`: "safe code never sees
                    // another tensor's old bytes"): it reads as zeros.
                    let len = m.data.len();
                    m.data = m.dev.take().unwrap_or_else(|| vec![T::zeroed(); len]);
                    m.dev = Some(m.data.clone());
                    m.dev_cur = true;
                    m.host_cur = false;
                }
            }
            Op::Trim => {
                zone.trim();
            }
        }
        Ok(())
    }

    /// Compares every tensor's residency and the zone's counters with the model.
    fn check(&self) -> Result<(), TestCaseError> {
        let mut live = 0u64;
        let mut host = 0u64;
        let mut device = 0u64;
        for (i, (t, m)) in self.tensors.iter().zip(&self.model).enumerate() {
            match (t, m) {
                (None, None) => {}
                (Some(t), Some(m)) => {
                    live += 1;
                    prop_assert!(
                        (!m.host_cur || m.has_host)
                            && (!m.dev_cur || (m.has_dev && m.dev.as_ref() == Some(&m.data)))
                            && (m.has_dev || m.dev.is_none()),
                        "slot {}: model invariant broken (test bug)",
                        i
                    );
                    prop_assert_eq!(t.len(), m.data.len(), "slot {} length", i);
                    let r = t.residency();
                    prop_assert_eq!(r, m.residency(), "slot {} residency", i);
                    prop_assert_eq!(r.is_unwritten(), m.unwritten(), "slot {} is_unwritten", i);
                    prop_assert_eq!(
                        r.is_synced(),
                        m.host_cur && m.dev_cur,
                        "slot {} is_synced",
                        i
                    );
                    if m.has_host {
                        host += m.bytes();
                    }
                    if m.has_dev {
                        device += m.bytes().div_ceil(self.align) * self.align;
                    }
                }
                _ => return Err(TestCaseError::fail(format!("slot {i}: test bookkeeping"))),
            }
        }
        let s = self.zone.stats();
        prop_assert_eq!(
            Traffic::since(self.zone, self.start_traffic),
            self.traffic,
            "transfer counters since the case started (zone left, model right)"
        );
        prop_assert_eq!(s.tensors_live, self.start_live + live, "tensors_live");
        prop_assert_eq!(s.host_live_bytes, self.start_host + host, "host_live_bytes");
        prop_assert_eq!(
            s.device_live_bytes,
            self.start_device + device,
            "device_live_bytes"
        );
        if self.tracking {
            // Every live tensor has its entry, with its element bytes.
            let leaks = self.zone.leaks();
            prop_assert_eq!(leaks.len() as u64, live, "tracked entries");
            let bytes: u64 = self.model.iter().flatten().map(|m| m.bytes()).sum();
            // An `empty` device tensor never used lists its reserved bytes
            // until its first use: compare on used tensors only.
            let listed: u64 = leaks
                .iter()
                .filter(|l| l.dtype.is_some())
                .map(|l| l.bytes)
                .sum();
            prop_assert!(listed <= bytes, "tracked bytes {listed} > model {bytes}");
        }
        Ok(())
    }

    /// Reads every live tensor back (checked like `Op::Read`), then drops
    /// everything and checks the zone is back where it started.
    fn finish(mut self) -> Result<(), TestCaseError> {
        for slot in 0..SLOTS {
            self.step(&Op::Read { slot, view: false })
                .map_err(|e| TestCaseError::fail(format!("final read of slot {slot}: {e}")))?;
            self.check()
                .map_err(|e| TestCaseError::fail(format!("final read of slot {slot}: {e}")))?;
        }
        for slot in 0..SLOTS {
            self.tensors[slot] = None;
            self.model[slot] = None;
        }
        self.check()
            .map_err(|e| TestCaseError::fail(format!("after dropping everything: {e}")))?;
        Ok(())
    }
}

fn run_case<T: Gen>(zone: &Zone, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut case = Case::<T>::new(zone);
    case.check()
        .map_err(|e| TestCaseError::fail(format!("before the first step: {e}")))?;
    for (i, op) in ops.iter().enumerate() {
        let Some(op) = resolve(&case.model, op) else {
            continue;
        };
        case.step(&op)
            .and_then(|()| case.check())
            .map_err(|e| TestCaseError::fail(format!("step {i} (as {op:?}): {e}")))?;
    }
    case.finish()
}

/// Runs the property on every backend: 64 cases on the CPU, 32 on the GPU.
fn run_model<T: Gen>() {
    // Small slabs: `Trim` then costs little, and blocks come and go often.
    // A tracking zone takes the pool's locked path and its registry: the
    // same model holds there.
    let plain = common::zones_with(Zone::builder().slab_size(64 << 10).track_tensors(false));
    let tracking = common::zones_with(Zone::builder().slab_size(64 << 10).track_tensors(true));
    for zone in plain.into_iter().chain(tracking) {
        let mut config = common::proptest_config(&zone, 64, 32);
        config.max_shrink_iters = 4096;
        let mut runner = TestRunner::new(config);
        if let Err(e) = runner.run(&ops(), |ops| run_case::<T>(&zone, &ops)) {
            panic!(
                "{:?} backend ({}), {:?} elements: {e}",
                zone.backend(),
                zone.info(),
                T::DTYPE
            );
        }
        let s = zone.stats();
        eprintln!(
            "model {:?} on {} (tracking: {}): {} tensors, h2d {:?}, d2h {:?}, d2d {:?}",
            T::DTYPE,
            zone.info(),
            zone.tracks_tensors(),
            s.tensors_created,
            s.host_to_device,
            s.device_to_host,
            s.device_to_device
        );
    }
}

#[test]
fn model_u32() {
    run_model::<u32>();
}

#[test]
fn model_f16() {
    run_model::<f16>();
}

#[test]
fn model_u8() {
    run_model::<u8>();
}

// ----- regressions found by the model ------------------------------------------

/// Found by `model_*` (minimal sequence: a tensor dropped, then
/// `Create { Device, Empty }` of the same length and `MarkDeviceWritten`):
/// `mark_device_written` on a device range the tensor never wrote makes
/// that range current, and the next read downloads another tensor's old
/// bytes. `Tensor::empty` promises "safe code never sees another tensor's
/// old bytes"; the tensor must read as zeros.
#[test]
fn mark_device_written_on_unwritten_tensor_reads_zeros() {
    for zone in common::zones() {
        let old: Vec<u32> = (1..=64).collect();
        drop(Tensor::from_slice(&zone, [64], &old, Location::Device).unwrap());
        let mut t = Tensor::<u32>::empty(&zone, [64], Location::Device).unwrap();
        t.mark_device_written().unwrap();
        assert_eq!(
            t.to_vec().unwrap(),
            vec![0u32; 64],
            "{:?} backend: an unwritten tensor shows a dropped tensor's bytes",
            zone.backend()
        );
    }
}

/// The same leak through a device copy that is stale but was never written
/// by this tensor: `empty(Device)`, `write_host`, `mark_device_written`.
#[test]
fn mark_device_written_on_never_written_stale_copy_reads_no_old_bytes() {
    for zone in common::zones() {
        let old: Vec<u32> = (1..=64).collect();
        drop(Tensor::from_slice(&zone, [64], &old, Location::Device).unwrap());
        let mut t = Tensor::<u32>::empty(&zone, [64], Location::Device).unwrap();
        t.write_host(&[7u32; 64]).unwrap();
        t.mark_device_written().unwrap();
        let got = t.to_vec().unwrap();
        assert_ne!(
            got,
            old,
            "{:?} backend: a never-written device range shows a dropped tensor's bytes",
            zone.backend()
        );
    }
}

/// Empty writes into a pinned buffer (at its start, middle and end) are
/// valid and change nothing.
#[test]
fn pinned_empty_writes_are_accepted() {
    for zone in common::zones() {
        let mut p = zone.pinned::<u8>(13).unwrap();
        p.write(0, &[]).unwrap();
        p.write(5, &[]).unwrap();
        p.write(8, &[]).unwrap();
        p.write(13, &[]).unwrap();
        p.write(0, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13])
            .unwrap();
        let mut t = Tensor::<u8>::empty(&zone, [13], Location::Device).unwrap();
        t.upload_pinned(p).unwrap();
        assert_eq!(t.to_vec().unwrap(), (1..=13).collect::<Vec<u8>>());
    }
}
