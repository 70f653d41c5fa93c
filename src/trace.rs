//! Opt-in event trace of a zone: allocations, frees, transfers and arena
//! resets with timestamps, exported as Chrome trace-event JSON (Perfetto,
//! chrome://tracing) with counter tracks of live bytes per tier.
//!
//! While no trace runs, the only cost on the allocation paths is one
//! relaxed load of a flag.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::residency::Location;
use crate::stats::{HostDevice, TierUsage};

/// The four tiers of tensor storage.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Inline small tensors (hold no zone memory).
    Small,
    /// Arenas: their host and device chunks.
    Arena,
    /// Owned tensors.
    Owned,
    /// Shared tensors.
    Shared,
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::Small => "small",
            Tier::Arena => "arena",
            Tier::Owned => "owned",
            Tier::Shared => "shared",
        }
    }
}

/// Which way a transfer went.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Host memory (or staging) to the device.
    HostToDevice,
    /// The device to host memory.
    DeviceToHost,
    /// Within the device.
    DeviceToDevice,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// `bytes` became live in `tier` at `location` (a tensor's storage, an
    /// arena chunk, or a tensor moving into that tier).
    Alloc {
        /// The tier that holds them now.
        tier: Tier,
        /// Host or device.
        location: Location,
        /// Bytes (device ranges rounded up to the offset alignment).
        bytes: u64,
    },
    /// `bytes` stopped being live in `tier` at `location`.
    Free {
        /// The tier that held them.
        tier: Tier,
        /// Host or device.
        location: Location,
        /// Bytes.
        bytes: u64,
    },
    /// A counted transfer.
    Transfer {
        /// Which way.
        direction: Direction,
        /// Bytes moved.
        bytes: u64,
    },
    /// An arena was reset; `used` bytes of its chunks were in use.
    /// Recorded for arenas made, or that last took a block, while the
    /// trace ran (a reset stays O(1) and touches no zone memory otherwise).
    ArenaReset {
        /// Bytes handed out since the arena's previous reset.
        used: u64,
    },
    /// A tensor's device copy moved to the host to stay within the device
    /// budget: `bytes` became live on the host (owned tier). The device
    /// range's free and the download are recorded as well.
    Spill {
        /// The tensor's bytes.
        bytes: u64,
    },
    /// A spilled copy went back to the device: `bytes` left the host.
    Reload {
        /// The tensor's bytes.
        bytes: u64,
    },
}

impl Event {
    /// `bytes` becoming live (`alloc`) or ceasing to be live in `tier` at
    /// `location`.
    pub(crate) fn live(alloc: bool, tier: Tier, location: Location, bytes: u64) -> Event {
        if alloc {
            Event::Alloc {
                tier,
                location,
                bytes,
            }
        } else {
            Event::Free {
                tier,
                location,
                bytes,
            }
        }
    }
}

/// One recorded event.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceEvent {
    /// Time since the trace started.
    pub at: Duration,
    /// A small number naming the thread that caused it.
    pub thread: u64,
    /// What happened.
    pub event: Event,
}

/// A finished trace, from [`crate::Zone::stop_trace`].
///
/// ```
/// use tensorzone::{Location, Tensor, Zone};
/// let zone = Zone::new().unwrap();
/// zone.start_trace();
/// let mut t = Tensor::from_slice(&zone, [4], &[1u32, 2, 3, 4], Location::Device).unwrap();
/// t.to_vec().unwrap();
/// drop(t);
/// let trace = zone.stop_trace();
/// assert!(trace.events().len() >= 4); // alloc, upload, host copy + download, frees
/// let json = trace.to_chrome_json();  // open it in https://ui.perfetto.dev
/// assert!(json.contains("traceEvents"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Trace {
    events: Vec<TraceEvent>,
    /// Live bytes per tier when the trace started.
    start: TierUsage,
}

impl Trace {
    /// The events, oldest first.
    pub fn events(&self) -> &[TraceEvent] {
        &self.events
    }

    /// Live bytes per tier when the trace started.
    pub fn start(&self) -> TierUsage {
        self.start
    }

    /// The trace as Chrome trace-event JSON: one instant event per event
    /// (name, bytes, tier and location in `args`), and after each
    /// allocation or free two counter events, `host bytes` and `device
    /// bytes`, with the live bytes of every tier.
    pub fn to_chrome_json(&self) -> String {
        let mut live = self.start;
        let mut out: Vec<Value> = Vec::with_capacity(self.events.len() * 2 + 2);
        out.push(json!({
            "name": "process_name", "ph": "M", "pid": 1,
            "args": { "name": "tensorzone" }
        }));
        counters(&mut out, 0.0, &live);
        for e in &self.events {
            let ts = e.at.as_secs_f64() * 1e6;
            let (name, args) = match &e.event {
                Event::Alloc {
                    tier,
                    location,
                    bytes,
                } => {
                    *slot(&mut live, *tier, *location) += bytes;
                    (
                        "alloc",
                        json!({"tier": tier.name(), "location": loc(*location), "bytes": bytes}),
                    )
                }
                Event::Free {
                    tier,
                    location,
                    bytes,
                } => {
                    let s = slot(&mut live, *tier, *location);
                    *s = s.saturating_sub(*bytes);
                    (
                        "free",
                        json!({"tier": tier.name(), "location": loc(*location), "bytes": bytes}),
                    )
                }
                Event::Transfer { direction, bytes } => (
                    match direction {
                        Direction::HostToDevice => "upload",
                        Direction::DeviceToHost => "download",
                        Direction::DeviceToDevice => "device copy",
                    },
                    json!({ "bytes": bytes }),
                ),
                Event::ArenaReset { used } => ("arena reset", json!({ "used": used })),
                Event::Spill { bytes } => {
                    *slot(&mut live, Tier::Owned, Location::Host) += bytes;
                    ("spill", json!({ "bytes": bytes }))
                }
                Event::Reload { bytes } => {
                    let s = slot(&mut live, Tier::Owned, Location::Host);
                    *s = s.saturating_sub(*bytes);
                    ("reload", json!({ "bytes": bytes }))
                }
            };
            out.push(json!({
                "name": name, "cat": "memory", "ph": "i", "s": "t",
                "ts": ts, "pid": 1, "tid": e.thread, "args": args
            }));
            if matches!(
                e.event,
                Event::Alloc { .. }
                    | Event::Free { .. }
                    | Event::Spill { .. }
                    | Event::Reload { .. }
            ) {
                counters(&mut out, ts, &live);
            }
        }
        json!({ "traceEvents": out, "displayTimeUnit": "ms" }).to_string()
    }

    /// Writes [`Trace::to_chrome_json`] to `path`.
    pub fn write_chrome_json(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_chrome_json())
    }
}

fn loc(l: Location) -> &'static str {
    match l {
        Location::Host => "host",
        Location::Device => "device",
    }
}

fn slot(live: &mut TierUsage, tier: Tier, location: Location) -> &mut u64 {
    let t: &mut HostDevice = match tier {
        Tier::Small => &mut live.small,
        Tier::Arena => &mut live.arena,
        Tier::Owned => &mut live.owned,
        Tier::Shared => &mut live.shared,
    };
    match location {
        Location::Host => &mut t.host,
        Location::Device => &mut t.device,
    }
}

fn counters(out: &mut Vec<Value>, ts: f64, live: &TierUsage) {
    for (name, l) in [
        ("host bytes", Location::Host),
        ("device bytes", Location::Device),
    ] {
        let mut args = serde_json::Map::new();
        for tier in [Tier::Arena, Tier::Owned, Tier::Shared] {
            let mut copy = *live;
            args.insert(tier.name().into(), json!(*slot(&mut copy, tier, l)));
        }
        out.push(json!({ "name": name, "ph": "C", "ts": ts, "pid": 1, "args": args }));
    }
}

/// The zone's recorder: off unless a trace runs.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    on: AtomicBool,
    inner: Mutex<Option<(Instant, Trace)>>,
}

static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static THREAD: Cell<u64> = const { Cell::new(0) };
}

fn thread_number() -> u64 {
    THREAD
        .try_with(|t| {
            if t.get() == 0 {
                t.set(NEXT_THREAD.fetch_add(1, Relaxed));
            }
            t.get()
        })
        .unwrap_or(0)
}

impl Recorder {
    /// Whether a trace runs (the hot paths' one check).
    #[inline(always)]
    pub(crate) fn on(&self) -> bool {
        self.on.load(Relaxed)
    }

    pub(crate) fn start(&self, live: TierUsage) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g = Some((
            Instant::now(),
            Trace {
                events: Vec::new(),
                start: live,
            },
        ));
        self.on.store(true, Relaxed);
    }

    pub(crate) fn stop(&self) -> Trace {
        self.on.store(false, Relaxed);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.take().map(|(_, t)| t).unwrap_or_default()
    }

    /// Records `event` if a trace runs.
    #[cold]
    pub(crate) fn record(&self, event: Event) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((start, trace)) = g.as_mut() {
            trace.events.push(TraceEvent {
                at: start.elapsed(),
                thread: thread_number(),
                event,
            });
        }
    }
}
