//! The zone: one per device; owns the backend, the pools and the counters.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::gpu::{GpuBackend, MAP_FAILED, MAP_READY};
use crate::backend::{cpu::CpuBackend, Backend, CreateError, DeviceBlock, StagingBlock};
use crate::error::{Error, Result};
use crate::local::{self, LocalCounters};
use crate::pool::{BlockId, BlockPlan, DevicePool, DevicePoolConfig, PoolAlloc, StagingPool};
use crate::stats::{Counters, ZoneStats};
use crate::trace::{Event, Tier};

/// Source of zone ids, which key the per-thread caches.
pub(crate) static NEXT_ZONE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Environment variable that overrides the backend choice of every zone.
pub const BACKEND_ENV: &str = "TENSORZONE_BACKEND";

/// Environment variable that sets whether zones track their tensors
/// ([`ZoneBuilder::track_tensors`]) when the builder does not say:
/// `1`, `on` or `true`; `0`, `off` or `false`. Unset or empty: on in debug
/// builds, off in release builds.
pub const TRACK_ENV: &str = "TENSORZONE_TRACK";

/// Whether a zone built without [`ZoneBuilder::track_tensors`] tracks its
/// tensors: [`TRACK_ENV`], else whether this is a debug build.
fn default_tracking() -> Result<bool> {
    let bad = |value: String| Error::InvalidTrackEnv { value };
    match std::env::var(TRACK_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(cfg!(debug_assertions)),
        Err(std::env::VarError::NotUnicode(v)) => Err(bad(v.to_string_lossy().into_owned())),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" => Ok(cfg!(debug_assertions)),
            "1" | "on" | "true" => Ok(true),
            "0" | "off" | "false" => Ok(false),
            _ => Err(bad(v)),
        },
    }
}

const DEFAULT_SLAB_SIZE: u64 = 32 << 20;
const DEFAULT_STAGING_IDLE_LIMIT: u64 = 256 << 20;
const STAGING_MIN_SIZE: u64 = 64 << 10;
const MAX_SLAB_SIZE: u64 = 1 << 30;

/// The largest power of two at most a quarter of `limit`, and no smaller
/// than the smallest slab: the slab size a limit allows.
fn quarter_pow2(limit: u64) -> u64 {
    let quarter = (limit / 4).max(STAGING_MIN_SIZE);
    1 << quarter.ilog2()
}
/// Most bytes one thread's range cache (magazine) may hold per zone.
const MAGAZINE_MAX_BYTES: u64 = 4 << 20;
/// Idle staging buffers not reused within this many acquisitions are
/// released, so a burst of large transfers does not pin memory forever.
const STAGING_IDLE_EPOCHS: u64 = 1024;

/// Which backend a zone should use.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// A GPU adapter when one exists, else the CPU.
    #[default]
    Auto,
    /// A GPU adapter, or [`Error::NoAdapter`].
    Gpu,
    /// The CPU backend, even when a GPU exists.
    Cpu,
}

impl BackendChoice {
    /// Reads [`BACKEND_ENV`]: `None` when unset or empty.
    pub fn from_env() -> Result<Option<BackendChoice>> {
        match std::env::var(BACKEND_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => Err(Error::InvalidBackendEnv {
                value: v.to_string_lossy().into_owned(),
            }),
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" => Ok(None),
                "auto" => Ok(Some(BackendChoice::Auto)),
                "gpu" => Ok(Some(BackendChoice::Gpu)),
                "cpu" => Ok(Some(BackendChoice::Cpu)),
                _ => Err(Error::InvalidBackendEnv { value: v }),
            },
        }
    }
}

/// The backend a zone runs on.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// wgpu on a GPU adapter (which may be a software one such as lavapipe).
    Gpu,
    /// Host memory only.
    Cpu,
}

/// What a zone runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendInfo {
    /// GPU or CPU.
    pub kind: BackendKind,
    /// The adapter's name (`"llvmpipe (LLVM 15.0.6, 256 bits)"`), or `"cpu"`.
    pub adapter: String,
    /// The graphics API (`"Vulkan"`), or `"none"`.
    pub api: String,
    /// The adapter's device type (`"Cpu"`, `"DiscreteGpu"` …), or `"host"`.
    pub device_type: String,
    /// The driver's name and version, when the adapter reports them.
    pub driver: String,
    /// Largest single buffer the device can hold.
    pub max_buffer_size: u64,
    /// Offset alignment of every device range the zone hands out.
    pub alignment: u64,
    /// Host and device share memory and wgpu maps storage buffers (a CPU
    /// adapter such as lavapipe, or an integrated GPU): tensors in their
    /// own dedicated buffer are uploaded and read back in place, with no
    /// staging copy. Always false on the CPU backend, whose "device" copies
    /// are plain host blocks.
    pub unified_memory: bool,
    /// Why an `auto` zone fell back to the CPU, when it did.
    pub fallback_reason: Option<String>,
}

impl fmt::Display for BackendInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            BackendKind::Cpu => match &self.fallback_reason {
                Some(reason) => write!(f, "cpu (fallback: {reason})"),
                None => write!(f, "cpu"),
            },
            BackendKind::Gpu => write!(
                f,
                "gpu: {} ({}, {}{})",
                self.adapter,
                self.api,
                self.device_type,
                if self.driver.is_empty() {
                    String::new()
                } else {
                    format!(", {}", self.driver)
                }
            ),
        }
    }
}

/// Configures and opens a [`Zone`].
///
/// ```
/// use tensorzone::{BackendChoice, Zone};
/// let zone = Zone::builder()
///     .backend(BackendChoice::Cpu)
///     .label("example")
///     .device_memory_limit(256 << 20)
///     .build()
///     .unwrap();
/// assert_eq!(zone.label(), "example");
/// ```
#[derive(Clone, Debug)]
pub struct ZoneBuilder {
    choice: BackendChoice,
    label: String,
    /// `None`: the default, `DEFAULT_SLAB_SIZE` or a quarter of the
    /// limit.
    slab_size: Option<u64>,
    limit: Option<u64>,
    staging_idle_limit: u64,
    power: wgpu::PowerPreference,
    /// `None`: the default (see [`TRACK_ENV`]).
    track: Option<bool>,
    spill: bool,
}

impl Default for ZoneBuilder {
    fn default() -> Self {
        ZoneBuilder {
            choice: BackendChoice::Auto,
            label: "tensorzone".into(),
            slab_size: None,
            limit: None,
            staging_idle_limit: DEFAULT_STAGING_IDLE_LIMIT,
            power: wgpu::PowerPreference::HighPerformance,
            track: None,
            spill: false,
        }
    }
}

impl ZoneBuilder {
    /// Backend choice; [`BACKEND_ENV`] overrides it when set.
    pub fn backend(mut self, choice: BackendChoice) -> Self {
        self.choice = choice;
        self
    }

    /// Name used in wgpu labels and reports.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Size of the device slabs small tensors are carved from, clamped to
    /// [64 KiB, 1 GiB], then to the adapter's `max_buffer_size`. The
    /// default is 32 MiB, or under a [`ZoneBuilder::device_memory_limit`]
    /// or [`ZoneBuilder::device_budget`] a quarter of it if less (a power
    /// of two, at least 64 KiB). Requests over a quarter of the slab size
    /// get a dedicated buffer. Near the limit, a new slab that would not
    /// fit is halved until it does (while it holds the request).
    pub fn slab_size(mut self, bytes: u64) -> Self {
        self.slab_size = Some(bytes.clamp(STAGING_MIN_SIZE, MAX_SLAB_SIZE));
        self
    }

    /// Most device bytes the zone may reserve for tensor storage (slabs and
    /// dedicated blocks). Past it, cached blocks are released, then
    /// allocation fails with [`Error::OutOfMemory`]. Staging buffers are
    /// host memory and not counted here; `staging_idle_limit` bounds them.
    /// Nor are the GPU backend's own small buffers: the kernels' 64 KiB of
    /// parameters and the scratch buffer a copy within one slab uses.
    pub fn device_memory_limit(mut self, bytes: u64) -> Self {
        self.limit = Some(bytes);
        self
    }

    /// A device budget: most device bytes the zone may reserve, like
    /// [`ZoneBuilder::device_memory_limit`], but an allocation past it
    /// first releases cached blocks, then spills the least recently used
    /// device copies of owned and shared tensors to the host, and fails
    /// with [`Error::OutOfMemory`] only when neither makes room. A spilled
    /// copy keeps its bytes and goes back to the device on its next device
    /// use; [`crate::ZoneStats::spills`] and `reloads` count both. A use
    /// that overwrites every byte (`write_device`, `upload_pinned`, the
    /// destination of `copy_from`, a kernel's output) drops the kept bytes
    /// instead of reloading them.
    ///
    /// Never spilled: arena tensors; a tensor whose binding was taken
    /// (`binding()`, for work of your own) until the zone has next waited
    /// for the device at one of your calls (a read back, or
    /// [`Zone::synchronize`]), since your kernel may still use it; an
    /// operand of the crate's kernels until the zone next waits, which an
    /// allocation that finds nothing else to spill also does, once, so a
    /// chain of kernels recorded without a wait does not run out while the
    /// tensors its earlier kernels used could go;
    /// and a shared tensor once [`crate::SharedTensor::binding`] was taken
    /// (the crate's kernels keep a shared input in place only until the
    /// zone next waits).
    ///
    /// It turns on [`ZoneBuilder::track_tensors`].
    ///
    /// ```
    /// use tensorzone::{BackendChoice, Location, Tensor, Zone};
    /// let zone = Zone::builder()
    ///     .backend(BackendChoice::Cpu)
    ///     .slab_size(1 << 20)
    ///     .device_budget(1 << 20)
    ///     .build()
    ///     .unwrap();
    /// let mut a = Tensor::full(&zone, [192 << 10], 1.0f32, Location::Device).unwrap();
    /// a.drop_host_copy().unwrap();
    /// // `a` takes 768 KiB of the 1 MiB budget: `b` spills it.
    /// let b = Tensor::full(&zone, [192 << 10], 2.0f32, Location::Device).unwrap();
    /// assert_eq!(zone.stats().spills.calls, 1);
    /// // `a` reads back from its kept host bytes, contents intact: a host
    /// // read needs no reload.
    /// assert!(a.to_vec().unwrap().iter().all(|&x| x == 1.0));
    /// assert_eq!(zone.stats().reloads.calls, 0);
    /// # drop(b);
    /// ```
    pub fn device_budget(mut self, bytes: u64) -> Self {
        self.limit = Some(bytes);
        self.spill = true;
        self
    }

    /// Whether to track each owned tensor, shared tensor and arena, for
    /// [`Zone::leaks`], the report made when the zone's last handle is
    /// dropped while they are alive (see [`Zone::set_leak_hook`]), and
    /// [`crate::ZoneStats::by_dtype`].
    ///
    /// Each tensor then takes a registry entry (a heap allocation and the
    /// pool's lock) when it is made, and the zone keeps no per-thread cache
    /// of freed ranges: pooled allocation and free cost several times what
    /// they do untracked (`cargo bench --bench pool` prints both).
    ///
    /// Default: on in debug builds, off in release builds, unless
    /// [`TRACK_ENV`] says otherwise. [`ZoneBuilder::device_budget`] turns it
    /// on whatever this says (spilling needs the records).
    ///
    /// ```
    /// use tensorzone::{BackendChoice, Zone};
    /// let fast = Zone::builder().backend(BackendChoice::Cpu).track_tensors(false).build().unwrap();
    /// assert!(!fast.tracks_tensors());
    /// let audited = Zone::builder().backend(BackendChoice::Cpu).track_tensors(true).build().unwrap();
    /// assert!(audited.tracks_tensors());
    /// ```
    pub fn track_tensors(mut self, on: bool) -> Self {
        self.track = Some(on);
        self
    }

    /// Idle staging bytes kept for reuse (default 256 MiB); older idle
    /// buffers past it are released.
    pub fn staging_idle_limit(mut self, bytes: u64) -> Self {
        self.staging_idle_limit = bytes;
        self
    }

    /// Which adapter to prefer when several exist.
    pub fn power_preference(mut self, power: wgpu::PowerPreference) -> Self {
        self.power = power;
        self
    }

    /// Opens the zone.
    ///
    /// Errors: [`Error::InvalidBackendEnv`] for a bad [`BACKEND_ENV`],
    /// [`Error::InvalidTrackEnv`] for a bad [`TRACK_ENV`];
    /// [`Error::NoAdapter`] when a GPU is required and none can be opened.
    pub fn build(self) -> Result<Zone> {
        let choice = BackendChoice::from_env()?.unwrap_or(self.choice);
        let track = self.tracks()?;
        let mut fallback = None;
        let backend = match choice {
            BackendChoice::Cpu => Backend::Cpu(CpuBackend),
            BackendChoice::Gpu => Backend::Gpu(GpuBackend::open(self.power, &self.label)?),
            BackendChoice::Auto => match GpuBackend::open(self.power, &self.label) {
                Ok(g) => Backend::Gpu(g),
                Err(e) => {
                    fallback = Some(e.to_string());
                    Backend::Cpu(CpuBackend)
                }
            },
        };
        Ok(self.assemble(backend, fallback, track))
    }

    /// Whether the zone will track its tensors: a budget needs it, else
    /// [`ZoneBuilder::track_tensors`], else the default ([`TRACK_ENV`]).
    fn tracks(&self) -> Result<bool> {
        Ok(self.spill || self.track.map_or_else(default_tracking, Ok)?)
    }

    fn assemble(self, backend: Backend, fallback_reason: Option<String>, track: bool) -> Zone {
        let info = match &backend {
            Backend::Cpu(_) => BackendInfo {
                kind: BackendKind::Cpu,
                adapter: "cpu".into(),
                api: "none".into(),
                device_type: "host".into(),
                driver: String::new(),
                max_buffer_size: isize::MAX as u64,
                alignment: 256,
                unified_memory: false,
                fallback_reason,
            },
            Backend::Gpu(g) => BackendInfo {
                kind: BackendKind::Gpu,
                adapter: g.info.name.clone(),
                api: format!("{:?}", g.info.backend),
                device_type: format!("{:?}", g.info.device_type),
                driver: format!("{} {}", g.info.driver, g.info.driver_info)
                    .trim()
                    .to_string(),
                max_buffer_size: g.limits.max_buffer_size,
                alignment: u64::from(g.limits.min_storage_buffer_offset_alignment)
                    .max(wgpu::MAP_ALIGNMENT),
                unified_memory: g.uma,
                fallback_reason: None,
            },
        };
        // Under a limit, a default slab takes at most a quarter of it, so
        // one small tensor does not reserve the whole limit for its slab
        // and leave no room for a large tensor's own block.
        let slab_size = match (self.slab_size, self.limit) {
            (Some(bytes), _) => bytes,
            (None, Some(limit)) => DEFAULT_SLAB_SIZE.min(quarter_pow2(limit)),
            (None, None) => DEFAULT_SLAB_SIZE,
        }
        .min(info.max_buffer_size);
        let state = State {
            device: DevicePool::new(DevicePoolConfig {
                alignment: info.alignment,
                slab_size,
            }),
            blocks: Vec::new(),
            upload: StagingPool::new(STAGING_MIN_SIZE, self.staging_idle_limit),
            upload_bufs: Vec::new(),
            pending: Vec::new(),
            readback: StagingPool::new(STAGING_MIN_SIZE, self.staging_idle_limit),
            readback_bufs: Vec::new(),
            blocks_made: 0,
            tensors_created: 0,
            tensors_dropped: 0,
            locals: Vec::new(),
            local_totals: LocalTotals::default(),
            mag_returned: 0,
            peak_staging_reserved: 0,
        };
        Zone {
            inner: Arc::new(ZoneInner {
                backend: Arc::new(backend),
                info,
                label: self.label,
                limit: self.limit,
                counters: Counters::default(),
                state: Arc::new(Mutex::new(state)),
                id: NEXT_ZONE_ID.fetch_add(1, Ordering::Relaxed),
                trim_epoch: std::sync::atomic::AtomicU64::new(0),
                // A tracking zone registers each tensor on the pool's path,
                // so it keeps no per-thread cache.
                local_max_bytes: if track {
                    0
                } else {
                    (slab_size / 8).min(MAGAZINE_MAX_BYTES)
                },
                local_max_range: if track { 0 } else { slab_size / 4 },
                started: std::time::Instant::now(),
                recorder: Default::default(),
                labels: Default::default(),
                tracked: track,
                spill: self.spill,
                tracking: Default::default(),
                lru_clock: Default::default(),
                child: None,
                children: Mutex::new(Vec::new()),
            }),
        }
    }
}

/// wgpu's allocator report for a zone's device, from [`Zone::driver_report`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct DriverReport {
    /// Bytes of the zone's device blocks (slabs, dedicated blocks and the
    /// copy scratch buffer) as the driver allocated them: at least
    /// [`crate::ZoneStats::device_reserved_bytes`], plus the driver's own
    /// rounding per block.
    pub device_block_bytes: u64,
    /// Allocations of the zone's device blocks.
    pub device_blocks: u64,
    /// Every other allocation on the device: staging buffers, wgpu's own.
    pub other_bytes: u64,
    /// Memory the allocator holds, used or not.
    pub allocator_reserved_bytes: u64,
}

/// One device's memory: pooled device storage, pooled staging buffers,
/// residency-tracked tensors and the counters behind [`Zone::stats`].
///
/// Cloning a zone is cheap and shares everything; it is `Send + Sync`.
///
/// ```
/// use tensorzone::{Location, Tensor, Zone};
/// let zone = Zone::new().unwrap(); // a GPU if there is one, else the CPU
/// let mut t = Tensor::from_slice(&zone, [2, 2], &[1.0f32, 2.0, 3.0, 4.0], Location::Device).unwrap();
/// assert_eq!(t.to_vec().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
/// println!("{}", zone.info());
/// ```
#[derive(Clone)]
pub struct Zone {
    pub(crate) inner: Arc<ZoneInner>,
}

/// A zone handle that does not keep the zone alive.
#[derive(Clone)]
pub(crate) struct WeakZone(std::sync::Weak<ZoneInner>);

impl WeakZone {
    pub(crate) fn upgrade(&self) -> Option<Zone> {
        self.0.upgrade().map(|inner| Zone { inner })
    }

    /// Whether this is `zone`.
    pub(crate) fn is(&self, zone: &Zone) -> bool {
        std::ptr::eq(self.0.as_ptr(), Arc::as_ptr(&zone.inner))
    }
}

pub(crate) struct ZoneInner {
    /// Shared with child zones (as is `state`).
    pub(crate) backend: Arc<Backend>,
    pub(crate) info: BackendInfo,
    pub(crate) label: String,
    pub(crate) limit: Option<u64>,
    pub(crate) counters: Counters,
    pub(crate) state: Arc<Mutex<State>>,
    /// Unique per zone: keys this zone's per-thread magazines.
    pub(crate) id: u64,
    /// Bumped by `trim`; a magazine that sees a new value returns its ranges.
    pub(crate) trim_epoch: std::sync::atomic::AtomicU64,
    /// Bytes one thread's magazine may hold.
    pub(crate) local_max_bytes: u64,
    /// Largest request served from slabs (so eligible for magazines).
    pub(crate) local_max_range: u64,
    /// When the zone opened: snapshots carry their time since then.
    pub(crate) started: std::time::Instant,
    /// The opt-in event trace.
    pub(crate) recorder: crate::trace::Recorder,
    /// Label names and the bytes each holds.
    pub(crate) labels: crate::labels::Labels,
    /// Tensors and arenas get registry entries (see `track`).
    pub(crate) tracked: bool,
    /// Over the limit, spill tracked device copies before failing.
    pub(crate) spill: bool,
    /// Boxed: the fast path reads fields of this struct, and they keep the
    /// places they had before tracking came.
    pub(crate) tracking: Box<Tracking>,
    /// The clock of device uses for least-recently-used spilling, shared
    /// by a zone and its children (they spill each other's tensors).
    pub(crate) lru_clock: Arc<std::sync::atomic::AtomicU64>,
    /// A child zone's parent and quota (see `Zone::child`).
    pub(crate) child: Option<Box<crate::child::ChildOf>>,
    /// This zone's children, whose figures its stats roll up.
    pub(crate) children: Mutex<Vec<std::sync::Weak<ZoneInner>>>,
}

impl Drop for ZoneInner {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            c.parent.inner.counters.absorb(&self.counters);
        }
    }
}

/// What a tracking zone keeps (see [`crate::track`]).
#[derive(Default)]
pub(crate) struct Tracking {
    pub(crate) registry: crate::track::Registry,
    pub(crate) leak_hook: Mutex<Option<LeakHook>>,
    /// The leak report ran (once per zone).
    pub(crate) leaks_reported: std::sync::atomic::AtomicBool,
    /// A leak check found pending entries and waits for a tensor to take
    /// one over (see `Zone::report_leaks_if_unheld`).
    pub(crate) leak_check_waits: std::sync::atomic::AtomicBool,
    /// While a leak check waits: what was alive when the wait began, by
    /// creation order; the report, when it comes, lists these and what is
    /// alive then (a tensor alive when the last handle went and dropped
    /// meanwhile was still a leak).
    pub(crate) leaks_seen: Mutex<Vec<(u64, crate::Leak)>>,
    /// Taken by every spill on this zone's pool, on the root zone's
    /// (see [`crate::spill::Gate`]).
    pub(crate) spill_gate: crate::spill::Gate,
}

/// What [`Zone::set_leak_hook`] takes.
pub type LeakHook = Box<dyn Fn(&str, &[crate::Leak]) + Send + Sync>;

impl ZoneInner {
    #[inline]
    fn lock(&self) -> MutexGuard<'_, State> {
        // Pool state is updated in single steps that cannot be torn by a
        // panic elsewhere, so a poisoned lock still holds consistent data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counters for a new per-thread magazine, which `stats` will read.
    pub(crate) fn register_local(&self) -> Arc<LocalCounters> {
        let c = Arc::new(LocalCounters::default());
        self.lock().locals.push(Arc::clone(&c));
        c
    }

    /// Takes back an exiting thread's magazine: its ranges and counters.
    pub(crate) fn absorb_local(&self, ranges: Vec<PoolAlloc>, counters: &Arc<LocalCounters>) {
        let mut st = self.lock();
        st.give_back(ranges);
        st.locals.retain(|c| !Arc::ptr_eq(c, counters));
        let t = &mut st.local_totals;
        t.allocations += counters.allocations.load(Ordering::Relaxed);
        t.frees += counters.frees.load(Ordering::Relaxed);
        let (allocs, frees) = (
            counters.allocations.load(Ordering::Relaxed),
            counters.frees.load(Ordering::Relaxed),
        );
        t.tensors_created +=
            allocs.saturating_sub(counters.non_tensor_allocs.load(Ordering::Relaxed));
        t.tensors_dropped +=
            frees.saturating_sub(counters.non_tensor_frees.load(Ordering::Relaxed));
    }
}

/// Which staging pool: uploads (mapped for writing) or readbacks.
#[derive(Copy, Clone)]
enum Direction {
    Upload,
    Readback,
}

impl State {
    /// The pool and block table of one staging direction.
    fn staging(&mut self, dir: Direction) -> (&mut StagingPool, &mut Vec<Option<StagingBlock>>) {
        match dir {
            Direction::Upload => (&mut self.upload, &mut self.upload_bufs),
            Direction::Readback => (&mut self.readback, &mut self.readback_bufs),
        }
    }

    /// Returns magazine ranges to the pool.
    fn give_back(&mut self, ranges: Vec<PoolAlloc>) {
        self.mag_returned += ranges.len() as u64;
        for a in ranges {
            self.device.free(a);
        }
    }
}

/// Totals of per-thread magazines whose threads have exited.
#[derive(Debug, Default)]
struct LocalTotals {
    allocations: u64,
    frees: u64,
    tensors_created: u64,
    tensors_dropped: u64,
}

pub(crate) struct State {
    device: DevicePool,
    blocks: Vec<Option<DeviceBlock>>,
    upload: StagingPool,
    upload_bufs: Vec<Option<StagingBlock>>,
    /// Upload buffers being re-mapped after a copy, with their map flags.
    pending: Vec<(BlockId, Arc<AtomicU8>)>,
    readback: StagingPool,
    readback_bufs: Vec<Option<StagingBlock>>,
    blocks_made: u64,
    /// Tensors created and dropped through `alloc_device`/`free_device`:
    /// counted here, under the lock those calls take anyway, instead of
    /// with two more atomics on the allocation hot path. Other tensors are
    /// counted in `Counters`; `stats` adds both.
    tensors_created: u64,
    tensors_dropped: u64,
    /// Counters of live threads' magazines.
    locals: Vec<Arc<LocalCounters>>,
    /// Counters of exited threads' magazines.
    local_totals: LocalTotals,
    /// Ranges magazines gave back to the pool: the pool counts each as a
    /// free, but the user's free was counted when the magazine took it.
    mag_returned: u64,
    /// Highest staging bytes reserved since the start or `reset_peaks`.
    peak_staging_reserved: u64,
}

fn put<T>(table: &mut Vec<Option<T>>, id: BlockId, value: T) {
    let i = id.0 as usize;
    if table.len() <= i {
        table.resize_with(i + 1, || None);
    }
    table[i] = Some(value);
}

fn take<T>(table: &mut [Option<T>], id: BlockId) -> Option<T> {
    table.get_mut(id.0 as usize).and_then(Option::take)
}

/// Who takes or gives back a device range, for the counters: a new or
/// dropped tensor (or neither) and its tier.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Use {
    /// Counts a tensor created (on alloc) or dropped (on free) with it.
    pub(crate) tensor: bool,
    pub(crate) tier: Tier,
}

impl Use {
    /// An owned tensor's storage; `tensor` counts it as created or
    /// dropped along with the range.
    #[inline(always)]
    pub(crate) fn owned(tensor: bool) -> Use {
        Use {
            tensor,
            tier: Tier::Owned,
        }
    }

    /// An arena's chunk.
    pub(crate) fn arena() -> Use {
        Use {
            tensor: false,
            tier: Tier::Arena,
        }
    }
}

/// A device range a tensor holds: the pool's record (block id, offset,
/// reserved size). It holds no handle to the block itself, so taking and
/// returning a range touches no reference count; transfers look the block
/// up when they run.
#[derive(Debug)]
pub(crate) struct DeviceRange {
    alloc: PoolAlloc,
}

impl DeviceRange {
    /// A tracked tensor's stand-in for the range its registry entry holds
    /// (see [`crate::track`]): freeing it releases that entry.
    pub(crate) fn ticket(key: u32) -> DeviceRange {
        DeviceRange {
            alloc: PoolAlloc::ticket(key),
        }
    }

    /// The registry key, if this is a ticket.
    #[inline]
    pub(crate) fn ticket_key(&self) -> Option<u32> {
        self.alloc.ticket_key()
    }

    /// A ticket whose registry entry still lacks the tensor's shape (it
    /// was registered at allocation, where only its dtype and bytes were
    /// known): the tensor's first use fills it in.
    pub(crate) fn ticket_to_describe(key: u32) -> DeviceRange {
        DeviceRange {
            alloc: PoolAlloc::ticket_to_describe(key),
        }
    }

    /// Whether this is a [`DeviceRange::ticket_to_describe`] not yet
    /// described.
    #[inline]
    pub(crate) fn ticket_undescribed(&self) -> bool {
        self.alloc.ticket_undescribed()
    }

    /// Marks a ticket's entry as described.
    pub(crate) fn ticket_described(&mut self) {
        self.alloc.ticket_described();
    }

    /// Bytes reserved for the range.
    pub(crate) fn size(&self) -> u64 {
        self.alloc.size
    }

    /// Where the range lies, for transfers.
    #[inline]
    pub(crate) fn place(&self) -> DevicePlace {
        DevicePlace {
            block: self.alloc.block,
            offset: self.alloc.offset,
        }
    }
}

/// A position in a device block: where a tensor's device bytes start.
/// Owned tensors take theirs from a pool range, arena tensors from a
/// bump offset inside one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DevicePlace {
    pub(crate) block: BlockId,
    pub(crate) offset: u64,
}

impl DevicePlace {
    /// The same block, `by` bytes further on.
    pub(crate) fn advance(self, by: u64) -> DevicePlace {
        DevicePlace {
            block: self.block,
            offset: self.offset + by,
        }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }
}

/// A staging buffer taken out of a pool.
#[derive(Debug)]
pub(crate) struct Staging {
    pub(crate) id: BlockId,
    pub(crate) block: StagingBlock,
    /// Newly created (zero-filled), not reused with an earlier transfer's bytes.
    pub(crate) fresh: bool,
}

impl Zone {
    /// A zone on the best GPU adapter, or on the CPU when there is none
    /// (or when [`BACKEND_ENV`] says so).
    pub fn new() -> Result<Zone> {
        Zone::builder().build()
    }

    /// A builder to choose the backend, limits and label.
    pub fn builder() -> ZoneBuilder {
        ZoneBuilder::default()
    }

    /// A zone on the CPU backend, whatever the environment says (an
    /// unreadable [`TRACK_ENV`] leaves tracking at the build's default).
    pub fn cpu() -> Zone {
        let b = ZoneBuilder::default();
        let track = b.tracks().unwrap_or(cfg!(debug_assertions));
        b.assemble(Backend::Cpu(CpuBackend), None, track)
    }

    /// What the zone runs on.
    pub fn info(&self) -> &BackendInfo {
        &self.inner.info
    }

    /// GPU or CPU.
    pub fn backend(&self) -> BackendKind {
        self.inner.info.kind
    }

    /// The zone's label.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// The wgpu device, for building your own pipelines over tensor
    /// bindings; `None` on the CPU backend.
    pub fn wgpu_device(&self) -> Option<&wgpu::Device> {
        match &*self.inner.backend {
            Backend::Gpu(g) => Some(&g.device),
            Backend::Cpu(_) => None,
        }
    }

    /// Submits the kernels recorded so far ([`crate::kernels`] batches
    /// them until something else needs the queue).
    pub(crate) fn flush_kernels(&self) {
        if let Backend::Gpu(g) = &*self.inner.backend {
            g.flush_kernels();
        }
    }

    /// The largest tensor, in bytes, a kernel or a binding of your own can
    /// bind on this zone's device (wgpu's `max_storage_buffer_binding_size`;
    /// `None` on the CPU backend, which has no such limit).
    ///
    /// ```
    /// let zone = tensorzone::Zone::new().unwrap();
    /// if let Some(max) = zone.max_binding_size() {
    ///     assert!(max >= 128 << 20); // WebGPU's default, which wgpu guarantees
    /// }
    /// ```
    pub fn max_binding_size(&self) -> Option<u64> {
        match &*self.inner.backend {
            Backend::Gpu(g) => Some(g.limits.max_storage_buffer_binding_size),
            Backend::Cpu(_) => None,
        }
    }

    /// The wgpu queue; `None` on the CPU backend.
    pub fn wgpu_queue(&self) -> Option<&wgpu::Queue> {
        match &*self.inner.backend {
            Backend::Gpu(g) => Some(&g.queue),
            Backend::Cpu(_) => None,
        }
    }

    /// A new tick of the pool's device-use clock.
    pub(crate) fn lru_tick(&self) -> u64 {
        self.inner.lru_clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn downgrade(&self) -> WeakZone {
        WeakZone(Arc::downgrade(&self.inner))
    }

    /// Whether two handles are the same zone.
    pub fn same_zone(&self, other: &Zone) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Waits until all GPU work submitted so far has finished (kernels
    /// recorded so far are submitted first).
    ///
    /// Under a device budget, tensors whose bindings were taken before it
    /// may be spilled again afterwards.
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::new().unwrap();
    /// let mut t = Tensor::<f32>::empty(&zone, [1024], Location::Device).unwrap();
    /// zone.kernels().fill(&mut t, 1.0).unwrap(); // recorded, not yet run
    /// zone.synchronize().unwrap(); // submitted and finished
    /// assert_eq!(t.to_vec().unwrap()[1023], 1.0);
    /// ```
    pub fn synchronize(&self) -> Result<()> {
        let wait = self.inner.tracking.registry.wait_start();
        match &*self.inner.backend {
            Backend::Gpu(g) => {
                g.check_alive()?;
                g.wait_idle()?;
                // The device is idle even if a batch it refused is reported
                // below: what was bound before the wait may spill again.
                self.inner.tracking.registry.wait_done(wait);
                // Map callbacks of buffers re-mapped after the last submit
                // may fire on the next poll rather than inside the wait.
                g.poll();
                self.sweep_pending(&mut self.lock());
                g.check_alive()
            }
            Backend::Cpu(_) => {
                self.inner.tracking.registry.wait_done(wait);
                Ok(())
            }
        }
    }

    /// A snapshot of memory and traffic.
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::cpu();
    /// let t = Tensor::<u32>::zeros(&zone, [1024], Location::Device).unwrap();
    /// let s = zone.stats();
    /// assert_eq!(s.tensors_live, 1);
    /// assert_eq!(s.device_live_bytes, 4096);
    /// drop(t);
    /// assert_eq!(zone.stats().device_live_bytes, 0);
    /// ```
    pub fn stats(&self) -> ZoneStats {
        // This zone's counters and its children's (a child's device
        // tensors are counted there, not in the shared pool's state).
        let t = self.totals();
        let is_child = self.inner.child.is_some();
        let c = &self.inner.counters;
        let mut st = self.lock();
        self.sweep_pending(&mut st);
        // The scratch buffer for copies within one slab is reserved device
        // memory no tensor holds: cached.
        let scratch = match &*self.inner.backend {
            Backend::Gpu(g) => g.scratch_bytes(),
            Backend::Cpu(_) => 0,
        };
        let lt = &st.local_totals;
        let (mut l_cached, mut l_allocs, mut l_frees, mut l_created, mut l_dropped) = (
            0,
            lt.allocations,
            lt.frees,
            lt.tensors_created,
            lt.tensors_dropped,
        );
        for l in &st.locals {
            let (allocs, frees) = (
                l.allocations.load(Ordering::Relaxed),
                l.frees.load(Ordering::Relaxed),
            );
            l_cached += l.cached_bytes.load(Ordering::Relaxed);
            l_allocs += allocs;
            l_frees += frees;
            l_created += allocs.saturating_sub(l.non_tensor_allocs.load(Ordering::Relaxed));
            l_dropped += frees.saturating_sub(l.non_tensor_frees.load(Ordering::Relaxed));
        }
        // The pool's state and per-thread caches count a root zone's
        // tensors; a child has neither of its own.
        let (created, dropped) = if is_child {
            (t.tensors_created, t.tensors_dropped)
        } else {
            (
                t.tensors_created + st.tensors_created + l_created,
                t.tensors_dropped + st.tensors_dropped + l_dropped,
            )
        };
        let dev = st.device.stats();
        let device_live = if is_child {
            t.device_live
        } else {
            dev.live_bytes.saturating_sub(l_cached)
        };
        let up = st.upload.stats();
        let down = st.readback.stats();
        ZoneStats {
            // Per-thread counters are read one after another, so a tensor
            // made on one thread and dropped on another can show its drop
            // first; a snapshot never reports a negative count.
            tensors_live: created.saturating_sub(dropped),
            tensors_created: created,
            host_live_bytes: t.host_live,
            device_live_bytes: device_live,
            device_reserved_bytes: dev.reserved_bytes + scratch,
            device_cached_bytes: dev.cached_bytes + l_cached + scratch,
            device_slabs: dev.slabs,
            device_dedicated_blocks: dev.dedicated_blocks,
            device_allocations: dev.allocations + l_allocs,
            device_frees: dev.frees.saturating_sub(st.mag_returned) + l_frees,
            pool_hits: dev.hits + l_allocs,
            pool_misses: dev.misses,
            device_blocks_created: t.device_blocks_created
                + match &*self.inner.backend {
                    Backend::Gpu(g) => g.scratch_created.load(Ordering::Relaxed),
                    Backend::Cpu(_) => 0,
                },
            staging_buffers_created: t.staging_buffers_created,
            staging_reserved_bytes: up.reserved_bytes + down.reserved_bytes,
            staging_in_use_bytes: up.in_use_bytes + down.in_use_bytes,
            host_to_device: t.h2d,
            device_to_host: t.d2h,
            device_to_device: t.d2d,
            spills: t.spills,
            reloads: t.reloads,
            spilled_held_bytes: t.spilled_held,
            tiers: t.tiers(t.host_live, device_live),
            peak_host_live_bytes: c.peak_host_live.load(Ordering::Relaxed),
            peak_device_live_bytes: dev.peak_live_bytes,
            peak_device_reserved_bytes: dev.peak_reserved_bytes + scratch,
            peak_staging_reserved_bytes: st.peak_staging_reserved,
            uptime: self.inner.started.elapsed(),
            by_label: self.inner.labels.snapshot(),
            by_dtype: self.inner.tracking.registry.by_dtype(),
        }
    }

    /// What wgpu's own allocator reports for this zone's device
    /// (`Device::generate_allocator_report`), to check the zone's figures
    /// against: `None` on the CPU backend and where the wgpu backend gives
    /// no report.
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::new().unwrap();
    /// let t = Tensor::<f32>::zeros(&zone, [1024], Location::Device).unwrap();
    /// if let Some(r) = zone.driver_report() {
    ///     // the driver may round each block up a little
    ///     assert!(r.device_block_bytes >= zone.stats().device_reserved_bytes);
    /// }
    /// ```
    pub fn driver_report(&self) -> Option<DriverReport> {
        let report = self.wgpu_device()?.generate_allocator_report()?;
        let mut out = DriverReport {
            allocator_reserved_bytes: report.total_reserved_bytes,
            ..DriverReport::default()
        };
        for a in &report.allocations {
            // Every device block and the copy scratch buffer is labeled
            // "... (device)" (DESIGN.md: label every wgpu buffer).
            if a.name.ends_with("(device)") {
                out.device_block_bytes += a.size;
                out.device_blocks += 1;
            } else {
                out.other_bytes += a.size;
            }
        }
        Some(out)
    }

    /// Starts recording allocations, frees, transfers and arena resets
    /// (dropping any trace still running). See [`crate::Trace`].
    pub fn start_trace(&self) {
        let tiers = self.stats().tiers;
        self.inner.recorder.start(tiers);
        // Every thread's range cache sees a new epoch and steps aside while
        // the trace runs, so the cached paths need no trace check.
        // Release: a thread that sees the new epoch (Acquire in the
        // caches' slow paths) also sees the recorder on.
        self.inner.trim_epoch.fetch_add(1, Ordering::Release);
    }

    /// Stops recording and returns what was recorded (empty if no trace
    /// ran).
    pub fn stop_trace(&self) -> crate::Trace {
        self.inner.recorder.stop()
    }

    /// Records the event `make` builds, if a trace runs.
    #[inline(always)]
    pub(crate) fn trace(&self, make: impl FnOnce() -> Event) {
        if self.inner.recorder.on() {
            self.inner.recorder.record(make());
        }
    }

    /// Counts a transfer (and traces it).
    fn count_transfer(&self, direction: crate::trace::Direction, bytes: u64) {
        use crate::trace::Direction;
        let c = &self.inner.counters;
        match direction {
            Direction::HostToDevice => c.h2d.add(bytes),
            Direction::DeviceToHost => c.d2h.add(bytes),
            Direction::DeviceToDevice => c.d2d.add(bytes),
        }
        self.trace(|| Event::Transfer { direction, bytes });
    }

    /// Restarts every peak in [`Zone::stats`] from the current figure.
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::cpu();
    /// drop(Tensor::<u8>::zeros(&zone, [1 << 20], Location::Host).unwrap());
    /// assert_eq!(zone.stats().peak_host_live_bytes, 1 << 20);
    /// zone.reset_peaks();
    /// assert_eq!(zone.stats().peak_host_live_bytes, 0);
    /// ```
    pub fn reset_peaks(&self) {
        let c = &self.inner.counters;
        c.peak_host_live
            .store(c.host_bytes_live.load(Ordering::Relaxed), Ordering::Relaxed);
        let mut st = self.lock();
        st.device.reset_peaks();
        st.peak_staging_reserved =
            st.upload.stats().reserved_bytes + st.readback.stats().reserved_bytes;
    }

    /// Releases cached memory: device blocks no tensor uses and idle
    /// staging buffers. Returns the device and staging bytes released.
    ///
    /// Ranges that other threads freed may wait in those threads' range
    /// caches (at most 4 MiB per thread and zone); they return to the pool
    /// when their thread next allocates or frees, or exits, and a later
    /// `trim` releases their blocks. This thread's cache is emptied at once.
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::new().unwrap();
    /// drop(Tensor::<u8>::zeros(&zone, [1 << 20], Location::Device).unwrap());
    /// assert!(zone.stats().device_cached_bytes > 0); // kept for reuse
    /// assert!(zone.trim() > 0);
    /// assert_eq!(zone.stats().device_reserved_bytes, 0);
    /// ```
    pub fn trim(&self) -> u64 {
        // Other threads' magazines return their ranges when they next
        // allocate or exit; this thread's go back now.
        self.inner.trim_epoch.fetch_add(1, Ordering::Relaxed);
        let mine = local::drain(&self.inner);
        let mut st = self.lock();
        st.give_back(mine);
        self.sweep_pending(&mut st);
        let before = st.device.stats().reserved_bytes
            + st.upload.stats().reserved_bytes
            + st.readback.stats().reserved_bytes;
        for id in st.device.trim() {
            take(&mut st.blocks, id);
        }
        for id in st.upload.trim() {
            take(&mut st.upload_bufs, id);
        }
        for id in st.readback.trim() {
            take(&mut st.readback_bufs, id);
        }
        let after = st.device.stats().reserved_bytes
            + st.upload.stats().reserved_bytes
            + st.readback.stats().reserved_bytes;
        let scratch = match &*self.inner.backend {
            Backend::Gpu(g) => g.release_scratch(),
            Backend::Cpu(_) => 0,
        };
        before - after + scratch
    }

    /// Largest device request the pool can serve now without a new block.
    pub fn largest_free_range(&self) -> u64 {
        self.lock().device.largest_free()
    }

    #[inline]
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }

    #[inline]
    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Checks a byte count against what one device buffer can hold.
    #[inline]
    pub(crate) fn check_fits(&self, bytes: u64) -> Result<()> {
        let max = self.inner.info.max_buffer_size;
        // GPU copies move whole 4-byte words, so the padded length must fit.
        let needed = match self.inner.info.kind {
            BackendKind::Gpu => crate::backend::copy_len(bytes),
            BackendKind::Cpu => bytes,
        };
        if needed > max {
            return Err(Error::TooLarge { bytes, max });
        }
        Ok(())
    }

    /// Largest block size: `max_buffer_size` rounded down to whole words.
    pub(crate) fn max_block(&self) -> u64 {
        self.inner.info.max_buffer_size & !(wgpu::COPY_BUFFER_ALIGNMENT - 1)
    }

    /// A device range of at least `bytes` (contents unspecified: a previous
    /// tensor's bytes; callers overwrite or clear before exposing them).
    /// `new_tensor` counts a tensor created along with it. The caller has
    /// checked `bytes` with `check_fits`.
    #[inline(always)]
    pub(crate) fn alloc_device(&self, bytes: u64, by: Use) -> Result<DeviceRange> {
        if let Some(range) = self.alloc_local(bytes, by) {
            return Ok(range);
        }
        self.alloc_device_locked(bytes, by)
    }

    /// A range from this thread's cache, if it has one. It is already
    /// allocated: like any pool hit it skips the device-lost check, which
    /// the first transfer on it makes.
    #[inline(always)]
    fn alloc_local(&self, bytes: u64, by: Use) -> Option<DeviceRange> {
        if bytes <= self.inner.local_max_range {
            // The alignment is a power of two: round with a mask, not a
            // division (a `div` is tens of cycles on this path).
            let mask = self.inner.info.alignment - 1;
            if let Some(alloc) = local::pop(&self.inner, (bytes + mask) & !mask, by.tensor) {
                return Some(DeviceRange { alloc });
            }
        }
        None
    }

    /// [`Zone::alloc_device`] for a new owned tensor of `dtype` (`bytes`
    /// of elements). In a tracking zone the tensor is registered at once,
    /// its range in the registry and a ticket for the handle: its dtype and
    /// bytes are in the leak report and breakdowns, and under a budget it
    /// is a spill candidate, before its first use (which fills in its
    /// shape; until then it is one line of elements). Budget zones track,
    /// and tracking zones never take the thread cache: that
    /// work is all on the locked path, and the fast path is
    /// `alloc_device`'s. (Passing the shape here, by reference, cost the
    /// fast path a fifth.)
    #[inline(always)]
    pub(crate) fn alloc_tensor_device(
        &self,
        bytes: u64,
        dtype: crate::DType,
    ) -> Result<DeviceRange> {
        let by = Use::owned(true);
        if let Some(range) = self.alloc_local(bytes, by) {
            return Ok(range);
        }
        self.alloc_tensor_device_locked(bytes, dtype)
    }

    #[inline(never)]
    fn alloc_tensor_device_locked(&self, bytes: u64, dtype: crate::DType) -> Result<DeviceRange> {
        let range = self.alloc_device_locked(bytes, Use::owned(true))?;
        if !self.inner.tracked {
            return Ok(range);
        }
        // The pending entry the pool made for it, taken over as a tensor's
        // first use would (past four billion entries: none, untracked).
        // The tensor has no zone handle yet: until its first use a leak
        // check counts the entry as pending and waits.
        let registry = &self.inner.tracking.registry;
        let Some(cell) = registry.adopt_awaiting(range.place()) else {
            return Ok(range);
        };
        // Until the first use says otherwise: the elements in one line.
        let numel = bytes.checked_div(dtype.size() as u64).unwrap_or(0) as usize;
        *cell.meta.shape.lock().unwrap_or_else(|p| p.into_inner()) = (Some(dtype), vec![numel]);
        cell.meta.bytes.store(bytes, Ordering::Relaxed);
        let mut dev = cell.dev();
        dev.range = Some(range);
        dev.last_use = self.lru_tick();
        drop(dev);
        Ok(DeviceRange::ticket_to_describe(cell.id))
    }

    /// `alloc_device` past this thread's cache: the pool, under its lock.
    #[inline(never)]
    ///
    /// A running trace keeps every thread's cache out of the way (see
    /// `start_trace`), so every device allocation and free comes here and
    /// is recorded without a check on the cached path.
    fn alloc_device_locked(&self, bytes: u64, by: Use) -> Result<DeviceRange> {
        // Held until the range is counted (see `check_quota`).
        // Checked for the bytes a new range takes, so that a request the
        // quota refuses spills, trims and creates nothing first.
        let quota = match self.inner.child {
            Some(_) => {
                let size = self.lock().device.reserved_for(bytes);
                Some(self.check_quota(size)?)
            }
            None => None,
        };
        let mut waited = false;
        loop {
            // Read before the try: a spill another thread finishes after
            // it fails sends this one back to the pool, not to a search
            // that may find nothing left to spill.
            let seen = if self.inner.spill {
                self.spills_seen()
            } else {
                0
            };
            match self.alloc_device_pool(bytes, by, quota.as_ref()) {
                Err(e @ Error::OutOfMemory { .. }) if self.inner.spill => {
                    if self.spill_one(seen)? {
                        continue;
                    }
                    // What recorded kernels hold may spill once the device
                    // has caught up with them: wait once, then try again.
                    if waited || !self.wait_for_bound()? {
                        return Err(e);
                    }
                    waited = true;
                }
                Ok(range) => {
                    self.count_child_device(range.size(), true);
                    return Ok(range);
                }
                r => return r,
            }
        }
    }

    /// One try at the pool for `alloc_device_locked`; a child zone's
    /// range must fit its quotas (held by `quota`) as rounded.
    fn alloc_device_pool(
        &self,
        bytes: u64,
        by: Use,
        quota: Option<&crate::child::QuotaGuard<'_>>,
    ) -> Result<DeviceRange> {
        let stale = local::take_stale(&self.inner);
        self.inner.backend.check_alive()?;
        let mut st = self.lock();
        if !stale.is_empty() {
            st.give_back(stale);
        }
        let mut range = match st.device.try_alloc(bytes) {
            Some(alloc) => DeviceRange { alloc },
            None => self.alloc_device_slow(&mut st, bytes)?,
        };
        if self.inner.child.is_some() {
            drop(st);
            if let Some(guard) = quota {
                range = self.fit_quota(range, bytes, guard)?;
            }
            // A child counts its own; its parent sums them in.
            let c = &self.inner.counters.tensors_created;
            c.fetch_add(u64::from(by.tensor), Ordering::Relaxed);
        } else {
            st.tensors_created += u64::from(by.tensor);
            drop(st);
        }
        let size = range.size();
        self.trace(|| Event::Alloc {
            tier: by.tier,
            location: crate::residency::Location::Device,
            bytes: size,
        });
        if self.inner.tracked && by.tensor {
            // The new tensor takes this entry over on its first use.
            self.inner
                .tracking
                .registry
                .add_pending(size, range.place());
        }
        Ok(range)
    }

    /// `range`, given to a child for `bytes`, if it fits the quotas
    /// `guard` holds as rounded. Otherwise it goes back unused, nothing
    /// counted; and as a reused cached block may be up to a quarter larger
    /// than a fresh one, a fresh one is tried before the error.
    fn fit_quota(
        &self,
        range: DeviceRange,
        bytes: u64,
        guard: &crate::child::QuotaGuard<'_>,
    ) -> Result<DeviceRange> {
        let Err(e) = self.recheck_quota(range.size(), guard) else {
            return Ok(range);
        };
        let size = range.size();
        let mut st = self.lock();
        st.device.free(range.alloc);
        if size <= st.device.reserved_for(bytes) {
            return Err(e);
        }
        let fresh = self.alloc_device_slow(&mut st, bytes)?;
        drop(st);
        if let Err(e) = self.recheck_quota(fresh.size(), guard) {
            self.lock().device.free(fresh.alloc);
            return Err(e);
        }
        Ok(fresh)
    }

    /// The miss path: a new block, within the zone's limit.
    #[cold]
    fn alloc_device_slow(&self, st: &mut State, bytes: u64) -> Result<DeviceRange> {
        self.check_fits(bytes)?;
        // Before growing, merge what this thread's magazine holds.
        let mine = local::drain(&self.inner);
        if !mine.is_empty() {
            st.give_back(mine);
            st.device.retract_miss();
            if let Some(alloc) = st.device.try_alloc(bytes) {
                return Ok(DeviceRange { alloc });
            }
        }
        let mut plan = self.block_plan(st, bytes, u64::MAX);
        if let Some(limit) = self.inner.limit {
            if st.device.stats().reserved_bytes + plan.size > limit {
                self.release_cached_device(st);
                st.device.retract_miss();
                if let Some(alloc) = st.device.try_alloc(bytes) {
                    return Ok(DeviceRange { alloc });
                }
                let reserved = st.device.stats().reserved_bytes;
                plan = self.block_plan(st, bytes, limit.saturating_sub(reserved));
                if reserved + plan.size > limit {
                    return Err(self.oom(st, plan.size, "the zone's device memory limit".into()));
                }
            }
        }
        st.blocks_made += 1;
        let label = format!(
            "{} {} {} (device)",
            self.inner.label,
            if plan.dedicated { "block" } else { "slab" },
            st.blocks_made
        );
        let block = match self
            .inner
            .backend
            .create_block(plan.size, &label, plan.dedicated)
        {
            Ok(b) => b,
            Err(CreateError::OutOfMemory(_)) => {
                // The driver is full: give back what we cache and try once more.
                self.release_cached_device(st);
                match self
                    .inner
                    .backend
                    .create_block(plan.size, &label, plan.dedicated)
                {
                    Ok(b) => b,
                    Err(CreateError::OutOfMemory(detail)) => {
                        return Err(self.oom(st, plan.size, detail))
                    }
                    Err(CreateError::Other(e)) => return Err(e),
                }
            }
            Err(CreateError::Other(e)) => return Err(e),
        };
        self.inner
            .counters
            .device_blocks_created
            .fetch_add(1, Ordering::Relaxed);
        let (id, alloc) = st.device.add_block(plan, bytes);
        put(&mut st.blocks, id, block);
        Ok(DeviceRange { alloc })
    }

    /// The block to create for `bytes` with `room` bytes left under the
    /// zone's limit (a smaller slab where a whole one would not fit).
    fn block_plan(&self, st: &State, bytes: u64, room: u64) -> BlockPlan {
        let mut plan = st.device.plan_within(bytes, room);
        // Size classes round up; never past what one buffer can hold.
        plan.size = plan.size.min(self.max_block()).max(bytes);
        plan
    }

    fn release_cached_device(&self, st: &mut State) {
        for id in st.device.trim() {
            take(&mut st.blocks, id);
        }
    }

    fn oom(&self, st: &State, requested: u64, detail: String) -> Error {
        let s = st.device.stats();
        let in_threads: u64 = st
            .locals
            .iter()
            .map(|l| l.cached_bytes.load(Ordering::Relaxed))
            .sum();
        let mut detail = if in_threads > 0 {
            format!("{detail}; {in_threads} cached bytes wait in other threads' range caches")
        } else {
            detail
        };
        let holders: Vec<String> = self
            .inner
            .labels
            .snapshot()
            .into_iter()
            .filter(|(_, b)| b.device > 0)
            .take(3)
            .map(|(name, b)| format!("{name:?} {} bytes", b.device))
            .collect();
        if !holders.is_empty() {
            detail = format!("{detail}; biggest labeled holders: {}", holders.join(", "));
        }
        let live = s.live_bytes.saturating_sub(in_threads);
        Error::OutOfMemory {
            requested,
            reserved: s.reserved_bytes,
            live,
            cached: s.reserved_bytes.saturating_sub(live),
            largest_free: st.device.largest_free(),
            limit: self.inner.limit,
            detail,
        }
    }

    /// Whether a device allocation of `bytes` would succeed now as far as
    /// the zone can tell: it fits one buffer, and a free range or a new
    /// block within the zone's device memory limit (after releasing cached
    /// blocks, as an allocation would) can hold it. Without a limit the
    /// driver's free memory is unknown, so a new block counts as possible.
    /// It may say no where the pool would first merge freed ranges it
    /// caches and then find room, and under a
    /// [`ZoneBuilder::device_budget`] it does not count what spilling
    /// tensors to the host would free.
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::builder().device_memory_limit(64 << 20).build().unwrap();
    /// assert!(zone.can_allocate(16 << 20));
    /// assert!(!zone.can_allocate(65 << 20));
    /// let _t = Tensor::<u8>::empty(&zone, [48 << 20], Location::Device).unwrap();
    /// assert!(!zone.can_allocate(32 << 20));
    /// assert!(zone.largest_allocatable() >= 8 << 20);
    /// ```
    pub fn can_allocate(&self, bytes: u64) -> bool {
        if bytes == 0 || self.check_fits(bytes).is_err() {
            return false;
        }
        let st = self.lock();
        self.can_allocate_in(&st, bytes)
    }

    fn can_allocate_in(&self, st: &State, bytes: u64) -> bool {
        if st.device.can_serve(bytes) {
            return true;
        }
        let Some(limit) = self.inner.limit else {
            return true;
        };
        let s = st.device.stats();
        let kept = s.reserved_bytes - st.device.releasable_bytes();
        let size = self.block_plan(st, bytes, limit.saturating_sub(kept)).size;
        kept + size <= limit
    }

    /// The size of a new arena chunk: `wanted`, but under a quota, and on
    /// the device under a budget or memory limit when `wanted` does not fit
    /// now without spilling, at most half of what is left, and never below
    /// `needed`, the request it is for. A chunk past the room would fail a
    /// small request; one that took all of it would leave none for the
    /// tensors beside the arena (arena chunks never spill).
    pub(crate) fn arena_chunk(&self, wanted: u64, needed: u64, device: bool) -> u64 {
        let mut size = wanted;
        if let Some(room) = self.quota_room() {
            size = size.min(room / 2);
        }
        if device && self.inner.limit.is_some() && size > needed && !self.can_allocate(size) {
            size = size.min(self.largest_allocatable() / 2);
        }
        size.max(needed)
    }

    /// The largest device allocation [`Zone::can_allocate`] accepts now.
    pub fn largest_allocatable(&self) -> u64 {
        let max = self.max_block();
        let st = self.lock();
        let slab_max = st.device.max_slab_request().min(max);
        // Within the slab sizes and within the dedicated sizes the answer
        // only gets harder as requests grow, but not across the boundary
        // (a request just over it needs a smaller block than a new slab):
        // bisect each range on its own.
        let largest_in = |lo: u64, hi: u64| -> u64 {
            if lo > hi || !self.can_allocate_in(&st, lo) {
                return 0;
            }
            let (mut ok, mut bad) = (lo, hi + 1);
            if self.can_allocate_in(&st, hi) {
                return hi;
            }
            while bad - ok > 1 {
                let mid = ok + (bad - ok) / 2;
                if self.can_allocate_in(&st, mid) {
                    ok = mid;
                } else {
                    bad = mid;
                }
            }
            ok
        };
        largest_in(1, slab_max).max(largest_in(slab_max + 1, max))
    }

    /// The block a range lies in.
    pub(crate) fn block_of(&self, place: DevicePlace) -> Result<DeviceBlock> {
        self.lock()
            .blocks
            .get(place.block.0 as usize)
            .cloned()
            .flatten()
            .ok_or_else(|| Error::Backend {
                detail: format!("pool range of unknown block {:?}", place.block),
            })
    }

    /// Gives a range back to the pool; `tensor_dropped` counts the tensor
    /// that held it as gone.
    #[inline(always)]
    pub(crate) fn free_device(&self, range: DeviceRange, by: Use) {
        let alloc = range.alloc;
        if alloc.is_slab() {
            if let Err(alloc) = local::push(&self.inner, alloc, by.tensor) {
                self.free_device_locked(alloc, by);
            }
        } else {
            self.free_device_locked(alloc, by);
        }
    }

    /// `free_device` past this thread's cache's fast path: the cache's
    /// slow path, then the pool under its lock for what it did not keep.
    #[inline(never)]
    fn free_device_locked(&self, alloc: PoolAlloc, by: Use) {
        if let Some(key) = alloc.ticket_key() {
            // A tracked tensor dropped: its entry holds the real range.
            if let Some(cell) = self.inner.tracking.registry.remove(key) {
                self.release_tracked(&cell, by.tensor);
            }
            return;
        }
        let size = alloc.size;
        self.count_child_device(size, false);
        if self.inner.tracked && by.tensor {
            // A tensor dropped before its first use never took its entry.
            self.inner.tracking.registry.drop_pending(DevicePlace {
                block: alloc.block,
                offset: alloc.offset,
            });
        }
        self.trace(|| Event::Free {
            tier: by.tier,
            location: crate::residency::Location::Device,
            bytes: size,
        });
        let pushed = if alloc.is_slab() {
            local::push_slow(&self.inner, alloc, by.tensor)
        } else {
            local::Pushed {
                back: Some(alloc),
                stale: Vec::new(),
            }
        };
        if pushed.back.is_none() && pushed.stale.is_empty() {
            return;
        }
        let mut st = self.lock();
        st.give_back(pushed.stale);
        if let Some(alloc) = pushed.back {
            st.device.free(alloc);
            if self.inner.child.is_some() {
                let c = &self.inner.counters.tensors_dropped;
                c.fetch_add(u64::from(by.tensor), Ordering::Relaxed);
            } else {
                st.tensors_dropped += u64::from(by.tensor);
            }
        }
    }

    /// Moves pending upload buffers whose re-mapping finished back to idle.
    fn sweep_pending(&self, st: &mut State) {
        let mut i = 0;
        while i < st.pending.len() {
            let state = st.pending[i].1.load(Ordering::Acquire);
            if state == MAP_READY || state == MAP_FAILED {
                let (id, _) = st.pending.swap_remove(i);
                if state == MAP_READY {
                    for gone in st.upload.release(id) {
                        take(&mut st.upload_bufs, gone);
                    }
                } else {
                    st.upload.remove(id);
                    take(&mut st.upload_bufs, id);
                }
            } else {
                i += 1;
            }
        }
    }

    /// An upload staging buffer of at least `bytes`, mapped for writing.
    pub(crate) fn acquire_upload(&self, bytes: u64) -> Result<Staging> {
        self.inner.backend.check_alive_polled()?;
        let mut st = self.lock();
        self.sweep_pending(&mut st);
        let mut hit = self.reuse_staging(&mut st, Direction::Upload, bytes);
        if hit.is_none() && !st.pending.is_empty() {
            // A re-map may have finished since the sweep: poll once before
            // making a new buffer.
            if let Backend::Gpu(g) = &*self.inner.backend {
                g.poll();
                self.sweep_pending(&mut st);
                hit = self.reuse_staging(&mut st, Direction::Upload, bytes);
            }
        }
        match hit {
            Some(staging) => Ok(staging),
            None => self.create_staging(&mut st, Direction::Upload, bytes),
        }
    }

    /// A readback staging buffer of at least `bytes`.
    pub(crate) fn acquire_readback(&self, bytes: u64) -> Result<Staging> {
        self.inner.backend.check_alive_polled()?;
        let mut st = self.lock();
        match self.reuse_staging(&mut st, Direction::Readback, bytes) {
            Some(staging) => Ok(staging),
            None => self.create_staging(&mut st, Direction::Readback, bytes),
        }
    }

    /// An idle staging buffer of the direction's pool, after releasing the
    /// ones unused for too long.
    fn reuse_staging(&self, st: &mut State, dir: Direction, bytes: u64) -> Option<Staging> {
        let (pool, table) = st.staging(dir);
        for id in pool.trim_unused(STAGING_IDLE_EPOCHS) {
            take(table, id);
        }
        let (id, _) = pool.acquire(bytes)?;
        match take(table, id) {
            Some(block) => Some(Staging {
                id,
                block,
                fresh: false,
            }),
            None => {
                pool.remove(id);
                None
            }
        }
    }

    /// A new staging buffer for the direction's pool.
    fn create_staging(&self, st: &mut State, dir: Direction, bytes: u64) -> Result<Staging> {
        let size = st
            .staging(dir)
            .0
            .plan(bytes)
            .min(self.max_block())
            .max(crate::backend::copy_len(bytes));
        let backend = &*self.inner.backend;
        let made = match dir {
            Direction::Upload => {
                backend.create_upload(size, &format!("{} staging upload", self.inner.label))
            }
            Direction::Readback => {
                backend.create_readback(size, &format!("{} staging readback", self.inner.label))
            }
        };
        let block = made.map_err(|e| self.staging_error(st, size, e))?;
        self.count_staging_created();
        let id = st.staging(dir).0.add(size);
        let reserved = st.upload.stats().reserved_bytes + st.readback.stats().reserved_bytes;
        st.peak_staging_reserved = st.peak_staging_reserved.max(reserved);
        Ok(Staging {
            id,
            block,
            fresh: true,
        })
    }

    fn count_staging_created(&self) {
        self.inner
            .counters
            .staging_buffers_created
            .fetch_add(1, Ordering::Relaxed);
    }

    fn staging_error(&self, st: &State, size: u64, e: CreateError) -> Error {
        match e {
            CreateError::OutOfMemory(detail) => {
                self.oom(st, size, format!("staging buffer: {detail}"))
            }
            CreateError::Other(e) => e,
        }
    }

    /// Returns an upload buffer that is still mapped (an unused pinned buffer).
    pub(crate) fn release_upload(&self, staging: Staging) {
        let mut st = self.lock();
        put(&mut st.upload_bufs, staging.id, staging.block);
        for gone in st.upload.release(staging.id) {
            take(&mut st.upload_bufs, gone);
        }
    }

    /// Forgets an upload buffer whose state is unknown after a failure.
    fn discard_upload(&self, staging: Staging) {
        self.lock().upload.remove(staging.id);
    }

    /// Returns an upload buffer whose re-mapping is under way.
    fn release_upload_pending(&self, staging: Staging, flag: Arc<AtomicU8>) {
        let mut st = self.lock();
        put(&mut st.upload_bufs, staging.id, staging.block);
        st.pending.push((staging.id, flag));
    }

    /// Returns a readback buffer (unmapped).
    fn release_readback(&self, staging: Staging) {
        let mut st = self.lock();
        put(&mut st.readback_bufs, staging.id, staging.block);
        for gone in st.readback.release(staging.id) {
            take(&mut st.readback_bufs, gone);
        }
    }

    /// Copies `data` into a device range: straight into the block on the
    /// CPU, through a pooled upload buffer on the GPU. Counted.
    pub(crate) fn upload(&self, dst: DevicePlace, data: &[u8]) -> Result<()> {
        match (&*self.inner.backend, self.block_of(dst)?) {
            (_, DeviceBlock::Cpu(b)) => b.write(dst.offset(), data),
            (Backend::Gpu(g), DeviceBlock::Gpu(buf))
                if buf.usage().contains(wgpu::BufferUsages::MAP_WRITE) =>
            {
                g.write_direct(&buf, dst.offset(), data)
                    .map_err(|e| self.lost_or(e))?
            }
            (_, DeviceBlock::Gpu(_)) => {
                let staging = self.acquire_upload(data.len() as u64)?;
                let len = data.len() as u64;
                // The copy moves whole words: zero the padding after the
                // data, or a reused buffer's old bytes land in the binding.
                let tail = (crate::backend::copy_len(len) - len) as usize;
                let written = match &staging.block {
                    StagingBlock::Gpu(buf) => GpuBackend::write_mapped(buf, 0, data)
                        .and_then(|()| GpuBackend::write_mapped(buf, len, &[0; 3][..tail])),
                    StagingBlock::Cpu(_) => Err(Error::ZoneMismatch),
                };
                if let Err(e) = written {
                    self.discard_upload(staging);
                    return Err(self.lost_or(e));
                }
                return self.upload_staging(staging, dst, data.len() as u64);
            }
        }
        self.count_transfer(crate::trace::Direction::HostToDevice, data.len() as u64);
        Ok(())
    }

    /// Copies the first `len` bytes of an upload buffer into a device range
    /// and gives the buffer back to the pool. Counted.
    pub(crate) fn upload_staging(
        &self,
        staging: Staging,
        dst: DevicePlace,
        len: u64,
    ) -> Result<()> {
        let block = match self.block_of(dst) {
            Ok(b) => b,
            Err(e) => {
                self.release_upload(staging);
                return Err(e);
            }
        };
        let result = match (&*self.inner.backend, &staging.block, &block) {
            (Backend::Gpu(g), StagingBlock::Gpu(src), DeviceBlock::Gpu(d)) => {
                let copy = crate::backend::copy_len(len);
                match g.upload_from_staging(src, d, dst.offset(), copy) {
                    Ok(flag) => {
                        self.release_upload_pending(staging, flag);
                        self.count_transfer(crate::trace::Direction::HostToDevice, len);
                        return Ok(());
                    }
                    Err(e) => Err(e),
                }
            }
            (Backend::Cpu(_), StagingBlock::Cpu(src), DeviceBlock::Cpu(d)) => {
                d.write(dst.offset(), &src[..len as usize]);
                self.count_transfer(crate::trace::Direction::HostToDevice, len);
                Ok(())
            }
            _ => Err(Error::ZoneMismatch),
        };
        // The GPU path re-maps before releasing; here the buffer is still
        // mapped (CPU) or its copy failed before unmapping mattered.
        match (&*self.inner.backend, result) {
            (Backend::Gpu(_), Err(e)) => {
                self.lock().upload.remove(staging.id);
                Err(self.lost_or(e))
            }
            (_, r) => {
                self.release_upload(staging);
                r
            }
        }
    }

    /// Copies a device range into `out`. Counted. It waits for the work
    /// submitted before it, which lets spills consider bound tensors again.
    pub(crate) fn download(&self, src: DevicePlace, out: &mut [u8]) -> Result<()> {
        let wait = self.inner.tracking.registry.wait_start();
        self.download_now(src, out)?;
        self.inner.tracking.registry.wait_done(wait);
        Ok(())
    }

    pub(crate) fn download_now(&self, src: DevicePlace, out: &mut [u8]) -> Result<()> {
        match (&*self.inner.backend, &self.block_of(src)?) {
            (Backend::Cpu(_), DeviceBlock::Cpu(b)) => b.read(src.offset(), out),
            (Backend::Gpu(g), DeviceBlock::Gpu(buf))
                if buf.usage().contains(wgpu::BufferUsages::MAP_READ) =>
            {
                g.read_direct(buf, src.offset(), out)
                    .map_err(|e| self.lost_or(e))?
            }
            (Backend::Gpu(g), DeviceBlock::Gpu(buf)) => {
                let staging = self.acquire_readback(out.len() as u64)?;
                let result = match &staging.block {
                    StagingBlock::Gpu(s) => g.download(buf, src.offset(), s, out),
                    StagingBlock::Cpu(_) => Err(Error::ZoneMismatch),
                };
                match result {
                    Ok(()) => self.release_readback(staging),
                    Err(e) => {
                        // A failed readback may leave a map pending: never reuse it.
                        self.lock().readback.remove(staging.id);
                        return Err(self.lost_or(e));
                    }
                }
            }
            _ => return Err(Error::ZoneMismatch),
        }
        self.count_transfer(crate::trace::Direction::DeviceToHost, out.len() as u64);
        Ok(())
    }

    /// A failed GPU call after a device loss is a `DeviceLost`, whatever
    /// wgpu's own message said (a destroyed buffer, a failed map).
    fn lost_or(&self, e: Error) -> Error {
        match &*self.inner.backend {
            Backend::Gpu(g) => match g.check_alive_waited() {
                Err(lost) => lost,
                Ok(()) => e,
            },
            Backend::Cpu(_) => e,
        }
    }

    /// Copies `len` bytes between two device ranges. Counted.
    pub(crate) fn copy_device(&self, src: DevicePlace, dst: DevicePlace, len: u64) -> Result<()> {
        self.inner.backend.check_alive()?;
        let (src_block, dst_block) = (self.block_of(src)?, self.block_of(dst)?);
        let copy = match &src_block {
            DeviceBlock::Gpu(_) => crate::backend::copy_len(len),
            DeviceBlock::Cpu(_) => len,
        };
        self.inner
            .backend
            .copy_device(&src_block, src.offset(), &dst_block, dst.offset(), copy)?;
        self.count_transfer(crate::trace::Direction::DeviceToDevice, len);
        Ok(())
    }

    /// Zero-fills the first `len` bytes of a device range.
    pub(crate) fn clear_device(&self, range: DevicePlace, len: u64) -> Result<()> {
        self.inner.backend.check_alive()?;
        let block = self.block_of(range)?;
        let len = match &block {
            DeviceBlock::Gpu(_) => crate::backend::copy_len(len),
            DeviceBlock::Cpu(_) => len,
        };
        self.inner.backend.clear(&block, range.offset(), len)
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Zone")
            .field("label", &self.inner.label)
            .field("backend", &self.inner.info)
            .finish_non_exhaustive()
    }
}
