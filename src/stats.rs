//! Counters and the snapshot `Zone::stats` returns.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Lock-free counters the hot paths bump (relaxed atomics: each counter is
/// exact, a snapshot of several is not one instant).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) h2d: TransferCounter,
    pub(crate) d2h: TransferCounter,
    pub(crate) d2d: TransferCounter,
    pub(crate) tensors_created: AtomicU64,
    pub(crate) tensors_dropped: AtomicU64,
    pub(crate) host_bytes_live: AtomicU64,
    pub(crate) device_blocks_created: AtomicU64,
    pub(crate) staging_buffers_created: AtomicU64,
    pub(crate) peak_host_live: AtomicU64,
    /// Bytes arenas hold: host chunks, and device chunks from the pool.
    pub(crate) arena: HostDeviceCounter,
    /// Bytes shared tensors hold (their host copies and device ranges).
    pub(crate) shared: HostDeviceCounter,
    /// Device copies moved to the host under the device budget.
    pub(crate) spills: TransferCounter,
    /// Spilled copies moved back on their next device use.
    pub(crate) reloads: TransferCounter,
    /// Host bytes spilled copies hold now.
    pub(crate) spilled_held: AtomicU64,
    /// A child zone's live device bytes (a root zone reads its pool).
    pub(crate) device_live: AtomicU64,
}

/// One zone's counters read out, summed with its child zones'.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Totals {
    pub(crate) h2d: Transfers,
    pub(crate) d2h: Transfers,
    pub(crate) d2d: Transfers,
    pub(crate) spills: Transfers,
    pub(crate) reloads: Transfers,
    pub(crate) tensors_created: u64,
    pub(crate) tensors_dropped: u64,
    pub(crate) host_live: u64,
    pub(crate) device_live: u64,
    pub(crate) device_blocks_created: u64,
    pub(crate) staging_buffers_created: u64,
    pub(crate) spilled_held: u64,
    pub(crate) arena: HostDevice,
    pub(crate) shared: HostDevice,
}

fn add_t(a: &mut Transfers, b: Transfers) {
    a.bytes += b.bytes;
    a.calls += b.calls;
}

impl Totals {
    /// Bytes by tier, from host and device live bytes and what arenas and
    /// shared tensors hold (owned tensors hold the rest).
    pub(crate) fn tiers(&self, host_live: u64, device_live: u64) -> TierUsage {
        TierUsage {
            small: HostDevice::default(),
            owned: HostDevice {
                host: host_live.saturating_sub(self.arena.host + self.shared.host),
                device: device_live.saturating_sub(self.arena.device + self.shared.device),
            },
            arena: self.arena,
            shared: self.shared,
        }
    }
}

/// Host and device byte counts, changed together (relaxed atomics).
#[derive(Debug, Default)]
pub(crate) struct HostDeviceCounter {
    host: AtomicU64,
    device: AtomicU64,
}

impl HostDeviceCounter {
    pub(crate) fn add(&self, b: HostDevice) {
        self.host.fetch_add(b.host, Relaxed);
        self.device.fetch_add(b.device, Relaxed);
    }

    pub(crate) fn sub(&self, b: HostDevice) {
        self.host.fetch_sub(b.host, Relaxed);
        self.device.fetch_sub(b.device, Relaxed);
    }

    pub(crate) fn get(&self) -> HostDevice {
        HostDevice {
            host: self.host.load(Relaxed),
            device: self.device.load(Relaxed),
        }
    }
}

/// Bytes and calls of one transfer direction.
#[derive(Debug, Default)]
pub(crate) struct TransferCounter {
    bytes: AtomicU64,
    calls: AtomicU64,
}

impl TransferCounter {
    pub(crate) fn add(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Relaxed);
        self.calls.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Transfers {
        Transfers {
            bytes: self.bytes.load(Relaxed),
            calls: self.calls.load(Relaxed),
        }
    }
}

impl Counters {
    /// Adds what these counters hold to `t`.
    pub(crate) fn add_to(&self, t: &mut Totals) {
        let (h2d, d2h, d2d) = self.transfers();
        add_t(&mut t.h2d, h2d);
        add_t(&mut t.d2h, d2h);
        add_t(&mut t.d2d, d2d);
        add_t(&mut t.spills, self.spills.snapshot());
        add_t(&mut t.reloads, self.reloads.snapshot());
        t.tensors_created += self.tensors_created.load(Relaxed);
        t.tensors_dropped += self.tensors_dropped.load(Relaxed);
        t.host_live += self.host_bytes_live.load(Relaxed);
        t.device_live += self.device_live.load(Relaxed);
        t.device_blocks_created += self.device_blocks_created.load(Relaxed);
        t.staging_buffers_created += self.staging_buffers_created.load(Relaxed);
        t.spilled_held += self.spilled_held.load(Relaxed);
        let (a, sh) = (self.arena.get(), self.shared.get());
        t.arena.host += a.host;
        t.arena.device += a.device;
        t.shared.host += sh.host;
        t.shared.device += sh.device;
    }

    /// Takes over the running totals of a child zone that is gone (its
    /// live figures are zero by then: its tensors kept it alive).
    pub(crate) fn absorb(&self, child: &Counters) {
        for (to, from) in [
            (&self.h2d, &child.h2d),
            (&self.d2h, &child.d2h),
            (&self.d2d, &child.d2d),
            (&self.spills, &child.spills),
            (&self.reloads, &child.reloads),
        ] {
            let t = from.snapshot();
            to.bytes.fetch_add(t.bytes, Relaxed);
            to.calls.fetch_add(t.calls, Relaxed);
        }
        for (to, from) in [
            (&self.tensors_created, &child.tensors_created),
            (&self.tensors_dropped, &child.tensors_dropped),
            (&self.device_blocks_created, &child.device_blocks_created),
            (
                &self.staging_buffers_created,
                &child.staging_buffers_created,
            ),
        ] {
            to.fetch_add(from.load(Relaxed), Relaxed);
        }
    }

    pub(crate) fn add_host(&self, bytes: u64) {
        let now = self.host_bytes_live.fetch_add(bytes, Relaxed) + bytes;
        self.peak_host_live.fetch_max(now, Relaxed);
    }

    pub(crate) fn sub_host(&self, bytes: u64) {
        self.host_bytes_live.fetch_sub(bytes, Relaxed);
    }
    pub(crate) fn transfers(&self) -> (Transfers, Transfers, Transfers) {
        (
            self.h2d.snapshot(),
            self.d2h.snapshot(),
            self.d2d.snapshot(),
        )
    }
}

/// Bytes moved and calls made in one direction.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Bytes moved (the tensor's byte length per call, without padding).
    pub bytes: u64,
    /// Transfers made.
    pub calls: u64,
}

/// Bytes held on the host and on the device.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct HostDevice {
    /// Host bytes.
    pub host: u64,
    /// Device bytes (pool ranges, rounded up to the offset alignment).
    pub device: u64,
}

/// Live bytes by tier (see the crate docs' "Choosing a tier").
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TierUsage {
    /// Inline small tensors: always zero, they hold no zone memory.
    pub small: HostDevice,
    /// Arenas: the host chunks and device chunks they hold, used or not.
    pub arena: HostDevice,
    /// Owned tensors' host copies and device ranges.
    pub owned: HostDevice,
    /// Shared tensors' host copies and device ranges.
    pub shared: HostDevice,
}

/// What happened per second between two snapshots (`later - &earlier`).
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct Rates {
    /// Seconds between the snapshots.
    pub seconds: f64,
    /// Device allocations per second.
    pub allocations_per_s: f64,
    /// Device frees per second.
    pub frees_per_s: f64,
    /// Tensors created per second.
    pub tensors_per_s: f64,
    /// Host → device GB/s (10^9 bytes).
    pub host_to_device_gbps: f64,
    /// Device → host GB/s.
    pub device_to_host_gbps: f64,
    /// Device → device GB/s.
    pub device_to_device_gbps: f64,
}

impl std::ops::Sub<&ZoneStats> for &ZoneStats {
    type Output = Rates;

    /// Rates from `rhs` (the earlier snapshot) to `self`.
    fn sub(self, rhs: &ZoneStats) -> Rates {
        let seconds = self.uptime.saturating_sub(rhs.uptime).as_secs_f64();
        let per_s = |a: u64, b: u64| {
            if seconds > 0.0 {
                a.saturating_sub(b) as f64 / seconds
            } else {
                0.0
            }
        };
        Rates {
            seconds,
            allocations_per_s: per_s(self.device_allocations, rhs.device_allocations),
            frees_per_s: per_s(self.device_frees, rhs.device_frees),
            tensors_per_s: per_s(self.tensors_created, rhs.tensors_created),
            host_to_device_gbps: per_s(self.host_to_device.bytes, rhs.host_to_device.bytes) / 1e9,
            device_to_host_gbps: per_s(self.device_to_host.bytes, rhs.device_to_host.bytes) / 1e9,
            device_to_device_gbps: per_s(self.device_to_device.bytes, rhs.device_to_device.bytes)
                / 1e9,
        }
    }
}

/// A snapshot of a zone's memory and traffic, from [`crate::Zone::stats`].
///
/// `Display` prints it as a table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZoneStats {
    /// Owned and shared tensors alive now. Arena tensors are not counted
    /// one by one (that would cost their allocation its speed): their
    /// bytes are in [`ZoneStats::tiers`]`.arena`.
    pub tensors_live: u64,
    /// Owned and shared tensors created since the zone started (arena
    /// tensors not counted).
    pub tensors_created: u64,
    /// Host bytes held by tensors' host copies.
    pub host_live_bytes: u64,
    /// Device bytes held by tensors (ranges rounded up to the offset alignment).
    pub device_live_bytes: u64,
    /// Device bytes reserved from the backend: slabs and dedicated
    /// blocks, and on the GPU the zone's own scratch buffer for copies
    /// within one slab (which a device limit or budget does not cap).
    pub device_reserved_bytes: u64,
    /// Reserved device bytes no tensor holds, ready for reuse or `trim`.
    pub device_cached_bytes: u64,
    /// Device slabs held.
    pub device_slabs: u64,
    /// Dedicated device blocks held (live or cached).
    pub device_dedicated_blocks: u64,
    /// Device ranges handed out by the pool.
    pub device_allocations: u64,
    /// Device ranges returned to the pool.
    pub device_frees: u64,
    /// Device requests served from memory the pool already held.
    pub pool_hits: u64,
    /// Device requests that needed a new block.
    pub pool_misses: u64,
    /// Device blocks the backend created (wgpu `create_buffer` calls for
    /// tensor storage on the GPU backend).
    pub device_blocks_created: u64,
    /// Staging buffers the backend created (upload and readback).
    pub staging_buffers_created: u64,
    /// Staging bytes reserved (upload and readback).
    pub staging_reserved_bytes: u64,
    /// Staging bytes handed out now (pinned buffers, transfers in flight).
    pub staging_in_use_bytes: u64,
    /// Host → device transfers.
    pub host_to_device: Transfers,
    /// Device → host transfers.
    pub device_to_host: Transfers,
    /// Device → device copies.
    pub device_to_device: Transfers,
    /// Device copies spilled to the host to stay within the device budget
    /// (their downloads count in `device_to_host` too).
    pub spills: Transfers,
    /// Spilled copies uploaded again on their next device use (counted in
    /// `host_to_device` too).
    pub reloads: Transfers,
    /// Host bytes that spilled device copies hold now.
    pub spilled_held_bytes: u64,
    /// Live bytes by tier and location.
    pub tiers: TierUsage,
    /// Highest `host_live_bytes` since the zone opened or `reset_peaks`.
    pub peak_host_live_bytes: u64,
    /// Highest device bytes the pool had handed out (ranges in threads'
    /// caches count as handed out) since the zone opened or `reset_peaks`.
    pub peak_device_live_bytes: u64,
    /// Highest `device_reserved_bytes` since the zone opened or `reset_peaks`.
    pub peak_device_reserved_bytes: u64,
    /// Highest `staging_reserved_bytes` since the zone opened or `reset_peaks`.
    pub peak_staging_reserved_bytes: u64,
    /// Time from the zone's start to this snapshot: two snapshots subtract
    /// into [`Rates`].
    pub uptime: std::time::Duration,
    /// Live bytes by label (tensors' and arenas'), largest device holders
    /// first; labels holding nothing are left out.
    pub by_label: Vec<(String, HostDevice)>,
    /// Live owned and shared tensors by element type, most bytes first.
    /// Filled in zones that track tensors
    /// ([`crate::ZoneBuilder::track_tensors`]: the default in debug
    /// builds); empty otherwise, where the allocation fast path keeps no
    /// per-tensor record. A device tensor
    /// made with `Tensor::empty` is counted from its creation.
    pub by_dtype: Vec<DTypeUsage>,
}

/// Live tensors of one element type, from [`ZoneStats::by_dtype`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DTypeUsage {
    /// The element type.
    pub dtype: crate::DType,
    /// Live tensors of it.
    pub tensors: u64,
    /// Their element bytes (shape × element size, whichever side holds
    /// them).
    pub bytes: u64,
}

impl ZoneStats {
    /// `create_buffer` calls of every kind (device blocks and staging).
    pub fn create_buffer_calls(&self) -> u64 {
        self.device_blocks_created + self.staging_buffers_created
    }

    /// Share of device requests served without a new block, in `0..=1`.
    pub fn pool_hit_rate(&self) -> f64 {
        let total = self.pool_hits + self.pool_misses;
        if total == 0 {
            1.0
        } else {
            self.pool_hits as f64 / total as f64
        }
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

impl fmt::Display for ZoneStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = "=".repeat(60);
        writeln!(f, "{line}")?;
        writeln!(f, "{:<34}{:>26}", "tensorzone memory summary", "")?;
        writeln!(f, "{line}")?;
        let rows: [(&str, String); 22] = [
            (
                "tensors live / created (not arena)",
                format!("{} / {}", self.tensors_live, self.tensors_created),
            ),
            ("host live", bytes(self.host_live_bytes)),
            ("device live", bytes(self.device_live_bytes)),
            ("device cached", bytes(self.device_cached_bytes)),
            ("device reserved", bytes(self.device_reserved_bytes)),
            (
                "device slabs / dedicated",
                format!("{} / {}", self.device_slabs, self.device_dedicated_blocks),
            ),
            (
                "device allocs / frees",
                format!("{} / {}", self.device_allocations, self.device_frees),
            ),
            (
                "pool hit rate",
                format!("{:.1}%", self.pool_hit_rate() * 100.0),
            ),
            (
                "create_buffer: device / staging",
                format!(
                    "{} / {}",
                    self.device_blocks_created, self.staging_buffers_created
                ),
            ),
            ("staging reserved", bytes(self.staging_reserved_bytes)),
            ("staging in use", bytes(self.staging_in_use_bytes)),
            ("host -> device", transfer(self.host_to_device)),
            ("device -> host", transfer(self.device_to_host)),
            ("device -> device", transfer(self.device_to_device)),
            (
                "spills / reloads",
                format!("{} / {}", self.spills.calls, self.reloads.calls),
            ),
            (
                "spilled / reloaded / held",
                format!(
                    "{} / {} / {}",
                    bytes(self.spills.bytes),
                    bytes(self.reloads.bytes),
                    bytes(self.spilled_held_bytes)
                ),
            ),
            (
                "peak host / device live",
                format!(
                    "{} / {}",
                    bytes(self.peak_host_live_bytes),
                    bytes(self.peak_device_live_bytes)
                ),
            ),
            (
                "peak device / staging reserved",
                format!(
                    "{} / {}",
                    bytes(self.peak_device_reserved_bytes),
                    bytes(self.peak_staging_reserved_bytes)
                ),
            ),
            ("tier: host / device", String::new()),
            ("  arena", tier(self.tiers.arena)),
            ("  owned", tier(self.tiers.owned)),
            ("  shared", tier(self.tiers.shared)),
        ];
        for (name, value) in &rows {
            writeln!(f, "{name:<34}{value:>26}")?;
        }
        if !self.by_dtype.is_empty() {
            writeln!(f, "{:<34}{:>26}", "dtype: tensors / bytes", "")?;
            for d in &self.by_dtype {
                writeln!(
                    f,
                    "{:<34}{:>26}",
                    format!("  {}", d.dtype),
                    format!("{} / {}", d.tensors, bytes(d.bytes))
                )?;
            }
        }
        if !self.by_label.is_empty() {
            writeln!(f, "{:<34}{:>26}", "label: host / device", "")?;
            for (name, b) in &self.by_label {
                writeln!(f, "{:<34}{:>26}", format!("  {name}"), tier(*b))?;
            }
        }
        write!(f, "{line}")
    }
}

fn tier(t: HostDevice) -> String {
    format!("{} / {}", bytes(t.host), bytes(t.device))
}

fn transfer(t: Transfers) -> String {
    format!("{} in {} calls", bytes(t.bytes), t.calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lists_every_figure() {
        let s = ZoneStats {
            tensors_live: 2,
            tensors_created: 5,
            device_live_bytes: 3 << 20,
            host_to_device: Transfers {
                bytes: 1536,
                calls: 3,
            },
            ..Default::default()
        };
        let s = ZoneStats {
            by_label: vec![(
                "weights".into(),
                HostDevice {
                    host: 0,
                    device: 2048,
                },
            )],
            ..s
        };
        let text = s.to_string();
        assert!(text.contains("0 B / 2.00 KiB"), "{text}");
        assert!(text.contains("weights"), "{text}");
        assert!(text.contains("2 / 5"), "{text}");
        assert!(text.contains("3.00 MiB"), "{text}");
        assert!(text.contains("1.50 KiB in 3 calls"), "{text}");
        assert_eq!(s.pool_hit_rate(), 1.0);
    }
}
