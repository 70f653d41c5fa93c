//! Tier 2: arenas for per-frame and per-batch temporaries.
//!
//! An [`Arena`] bump-allocates tensors on the host and on the device from
//! blocks it keeps: host chunks it owns, and device ranges taken from the
//! zone's pool. [`Arena::reset`] forgets every allocation in O(1) and keeps
//! the blocks for the next frame; dropping the arena gives them back.
//!
//! An [`ArenaTensor<'a, T>`] borrows its arena, so the compiler rejects an
//! arena tensor that outlives its arena, is used after `reset`, or leaves the
//! function that owns the arena. Copy one out with [`ArenaTensor::to_owned`].
//!
//! GPU work submitted in one frame sees that frame's bytes even after the
//! next frame reuses the memory: every write to device memory (uploads,
//! clears, copies) goes through the zone's queue, which runs it after the
//! work submitted before it.

// The arena core hands out disjoint slices of its host chunks while the
// arena is shared-borrowed; that needs raw pointers (see `HostChunks`).
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::fmt;
use std::ptr::NonNull;

use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::pool::bump::{Bump, Bumped};
use crate::residency::Location;
use crate::shape::{IntoShape, Shape};
use crate::stats::HostDevice;
use crate::tier::owned::{checked, Tensor};
use crate::tier::sync::{self, check_len, Parts, Storage, SyncState};
use crate::track::{Cell, LeakKind, Meta};
use crate::zone::{DevicePlace, DeviceRange, Zone};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Smallest host chunk (bytes).
const HOST_CHUNK: u64 = 64 << 10;
/// Smallest device chunk (bytes) when the arena was made without a capacity.
const DEVICE_CHUNK: u64 = 1 << 20;
/// Alignment of host allocations: the largest element alignment.
const HOST_ALIGN: u64 = 8;

/// Host chunks: zeroed `u64` blocks, leaked from their boxes so that slices
/// handed out of them stay valid while the chunk list grows, and freed on
/// drop.
struct HostChunks {
    chunks: Vec<(NonNull<u64>, usize)>,
}

impl HostChunks {
    /// Adds a zeroed chunk of at least `bytes`; returns its size in bytes.
    fn add(&mut self, bytes: u64) -> Result<u64> {
        let words = usize::try_from(bytes.div_ceil(8)).map_err(|_| Error::HostOutOfMemory {
            bytes,
            detail: "larger than the address space".into(),
        })?;
        let mut v: Vec<u64> = Vec::new();
        v.try_reserve_exact(words)
            .map_err(|e| Error::HostOutOfMemory {
                bytes,
                detail: e.to_string(),
            })?;
        v.resize(words, 0);
        let raw = Box::into_raw(v.into_boxed_slice());
        let ptr = NonNull::new(raw.cast::<u64>()).ok_or_else(|| Error::HostOutOfMemory {
            bytes,
            detail: "null chunk".into(),
        })?;
        self.chunks.push((ptr, words));
        Ok(words as u64 * 8)
    }

    /// A slice of `len` elements at byte `offset` of chunk `chunk`,
    /// zero-filled when `zero`.
    ///
    /// The caller (the arena) guarantees that the bytes were handed out by
    /// its bump allocator since the last reset, to this call only.
    fn slice<'a, T: Element>(
        &self,
        chunk: usize,
        offset: u64,
        len: usize,
        zero: bool,
    ) -> &'a mut [T] {
        debug_assert!(
            chunk < self.chunks.len(),
            "arena chunk {chunk} of {}",
            self.chunks.len()
        );
        // SAFETY: the bump allocator only names chunks it was given (it
        // never places a request in a chunk it has not been told of, and
        // requests are never empty: `Bump::alloc` counts at least one
        // byte), and the arena gives it each chunk after pushing it here.
        let (base, words) = *unsafe { self.chunks.get_unchecked(chunk) };
        let bytes = len * std::mem::size_of::<T>();
        debug_assert!(
            offset as usize + bytes <= words * 8 && offset.is_multiple_of(std::mem::align_of::<T>() as u64),
            "arena slice out of its chunk or misaligned: offset {offset}, {bytes} bytes, chunk of {} bytes",
            words * 8
        );
        // SAFETY: `base` points to a live allocation of `words` u64s (freed
        // only in `drop`, which needs the arena by value, so after every
        // `'a` borrow ended). The bump allocator placed `offset..offset +
        // bytes` inside it, aligned to `HOST_ALIGN` (>= align_of::<T>()),
        // and hands each byte to one allocation between resets; `reset`
        // takes `&mut Arena`, so no slice from before it is alive. The
        // memory was zero-initialised when the chunk was made and `T: Pod`
        // accepts any bytes, so every element is a valid `T`.
        let s = unsafe {
            let p = base.as_ptr().cast::<u8>().add(offset as usize).cast::<T>();
            std::slice::from_raw_parts_mut(p, len)
        };
        if zero {
            s.fill(T::zeroed());
        }
        s
    }
}

// SAFETY: the chunks are plain heap memory owned by this value, with no
// tie to the thread that made them; the slices handed out of them borrow
// the arena, whose `UnsafeCell` keeps it from being shared between threads.
unsafe impl Send for HostChunks {}

impl Drop for HostChunks {
    fn drop(&mut self) {
        for &(ptr, words) in &self.chunks {
            // SAFETY: each pointer came from `Box::into_raw` of a boxed
            // slice of exactly `words` u64s and is freed once, here.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr.as_ptr(), words)) });
        }
    }
}

struct State {
    /// A trace was running when the arena was made or last took a block:
    /// its resets are recorded (see `reset`).
    traced: bool,
    host: Bump,
    host_chunks: HostChunks,
    device: Bump,
    device_chunks: Vec<DeviceRange>,
    /// Device chunks are the default size, which a budget, memory limit or
    /// quota may cut (see `Zone::arena_chunk`); a capacity the caller
    /// asked for is taken whole or fails.
    device_default: bool,
    /// The registry entry, in a tracking zone (for the leak report).
    entry: Option<Arc<Cell>>,
}

impl State {
    /// Counts a new chunk of `bytes` in the leak report's figure.
    fn note_growth(&self, bytes: u64) {
        if let Some(e) = &self.entry {
            e.meta.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

/// A bump allocator of tensors for one frame, batch or request.
///
/// It allocates [`ArenaTensor`]s on the host and on the device from blocks
/// it keeps: host chunks of its own, and device ranges taken from the
/// zone's pool. [`Arena::reset`] forgets every allocation in O(1) and keeps
/// the blocks for the next frame; dropping the arena gives them back. An
/// arena tensor borrows its arena, so the compiler rejects one that
/// outlives it, is used after `reset`, or leaves the function that owns
/// the arena; copy one out with [`ArenaTensor::to_owned`].
///
/// GPU work submitted in one frame sees that frame's bytes even after the
/// next frame reuses the memory: every write to device memory goes through
/// the zone's queue, which runs it after the work submitted before it.
///
/// ```
/// use tensorzone::{Location, Zone};
/// let zone = Zone::new().unwrap();
/// let mut arena = zone.arena();
/// for frame in 0..3u32 {
///     let mut a = arena.from_slice([4], &[frame; 4], Location::Device).unwrap();
///     let b = arena.zeros::<f32>([1024], Location::Device).unwrap();
///     assert_eq!(a.to_vec().unwrap(), [frame; 4]);
///     drop(b);
///     arena.reset(); // O(1); the blocks stay for the next frame
/// }
/// ```
pub struct Arena {
    zone: Zone,
    /// Bump state, changed through `&self` (tensors borrow the arena while
    /// more are allocated). `UnsafeCell` makes the arena `Send` but not
    /// `Sync`, so one thread at a time allocates from it and its tensors
    /// stay on that thread. Only `with_state` touches it.
    state: UnsafeCell<State>,
    /// Debug builds check that `with_state` is never re-entered.
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    in_state: std::cell::Cell<bool>,
    /// Label id in the zone's label table (0: none).
    label: u8,
}

impl Zone {
    /// An empty arena: it takes blocks on first use (host chunks of 64 KiB
    /// and up, device chunks of 1 MiB and up from the pool). Under a quota,
    /// or a device budget or memory limit that a chunk would not fit
    /// without spilling, a chunk takes at most half the room left (and
    /// always what its request needs), so a small zone's arena still works
    /// and leaves room for its other tensors.
    ///
    /// ```
    /// use tensorzone::{Location, Zone};
    /// let zone = Zone::builder().device_budget(256 << 10).build().unwrap();
    /// let arena = zone.arena();
    /// let t = arena.zeros::<f32>([16], Location::Device).unwrap();
    /// assert!(zone.stats().tiers.arena.device <= 128 << 10);
    /// ```
    pub fn arena(&self) -> Arena {
        Arena::new(self, DEVICE_CHUNK, true)
    }

    /// An arena whose first device chunk holds at least `bytes`; later
    /// chunks are as large. A chunk that does not fit (the budget with
    /// everything spillable spilled, the limit, a quota) fails its request
    /// with `OutOfMemory` or `QuotaExceeded`.
    pub fn arena_with_capacity(&self, bytes: u64) -> Arena {
        Arena::new(self, bytes.max(1), false)
    }

    /// Runs `f` with an arena of its own, dropped (its blocks given back)
    /// when `f` returns. Nothing `f` allocates in it can escape.
    ///
    /// ```
    /// use tensorzone::{Location, Zone};
    /// let zone = Zone::new().unwrap();
    /// let sum: u32 = zone.scope(|arena| {
    ///     let mut t = arena.from_slice([3], &[1u32, 2, 3], Location::Device)?;
    ///     Ok::<_, tensorzone::Error>(t.to_vec()?.iter().sum())
    /// }).unwrap();
    /// assert_eq!(sum, 6);
    /// ```
    pub fn scope<R>(&self, f: impl FnOnce(&Arena) -> R) -> R {
        let arena = self.arena();
        f(&arena)
    }
}

impl Arena {
    fn new(zone: &Zone, device_chunk: u64, device_default: bool) -> Arena {
        Arena {
            zone: zone.clone(),
            state: UnsafeCell::new(State {
                traced: zone.inner.recorder.on(),
                host: Bump::new(HOST_CHUNK),
                host_chunks: HostChunks { chunks: Vec::new() },
                device: Bump::new(device_chunk),
                device_chunks: Vec::new(),
                device_default,
                entry: zone
                    .inner
                    .tracked
                    .then(|| {
                        zone.inner.tracking.registry.add(Meta {
                            kind: LeakKind::Arena,
                            shape: Default::default(),
                            bytes: AtomicU64::new(0),
                            label: Default::default(),
                        })
                    })
                    .flatten(),
            }),
            in_state: std::cell::Cell::new(false),
            label: 0,
        }
    }

    /// The zone the arena takes device blocks from.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// Bytes handed out since the last reset, host and device (alignment
    /// padding included).
    pub fn used(&self) -> u64 {
        self.with_state(|st| st.host.used() + st.device.used())
    }

    /// Bytes of the blocks the arena holds, host and device.
    pub fn capacity(&self) -> u64 {
        self.with_state(|st| st.host.capacity() + st.device.capacity())
    }

    /// Bytes of the device blocks the arena holds.
    pub fn device_capacity(&self) -> u64 {
        self.with_state(|st| st.device.capacity())
    }

    /// Forgets every tensor allocated so far, in O(1) whatever their
    /// number, and keeps the blocks for what comes next. Taking `&mut self`
    /// means no arena tensor can be alive across it.
    pub fn reset(&mut self) {
        let st = self.state.get_mut();
        // Only an arena that saw a trace running (when it was made or last
        // took a block) looks at the zone here: after a frame's worth of
        // allocations the zone's memory is out of cache, and reading it
        // would cost more than the reset.
        if st.traced && self.zone.inner.recorder.on() {
            let used = st.host.used() + st.device.used();
            self.zone.trace(|| crate::trace::Event::ArenaReset { used });
        }
        st.host.reset();
        st.device.reset();
    }

    /// Runs `f` on the bump state. `f` must not call back into the arena
    /// (none of the closures below do), so no two `&mut State` coexist.
    #[inline(always)]
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        #[cfg(debug_assertions)]
        let _guard = {
            assert!(
                !self.in_state.replace(true),
                "arena state borrowed re-entrantly"
            );
            // Cleared on the way out, a panic in `f` included.
            struct Clear<'c>(&'c std::cell::Cell<bool>);
            impl Drop for Clear<'_> {
                fn drop(&mut self) {
                    self.0.set(false);
                }
            }
            Clear(&self.in_state)
        };
        // SAFETY: the arena is not `Sync`, so only this thread can be here;
        // `f` does not re-enter `with_state` (checked in debug builds), so
        // this is the only reference to the state while `f` runs.
        f(unsafe { &mut *self.state.get() })
    }

    /// `len` host elements of this arena, zero-filled when `zero`. Each
    /// call hands out bytes no other live slice covers (see
    /// `HostChunks::slice`), hence `&mut` from `&self`.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    fn host_slice<T: Element>(&self, len: usize, zero: bool) -> Result<&mut [T]> {
        if std::mem::align_of::<T>() > HOST_ALIGN as usize {
            // Not one of the crate's element types (all align to 8 or
            // less): chunk memory is only 8-aligned. Constant per `T`.
            return Err(Error::Backend {
                detail: format!(
                    "{} needs {}-byte alignment; arenas give {HOST_ALIGN}",
                    std::any::type_name::<T>(),
                    std::mem::align_of::<T>()
                ),
            });
        }
        let bytes = (len * std::mem::size_of::<T>()) as u64;
        self.with_state(|st| {
            let (chunk, offset) = match st.host.alloc(bytes, HOST_ALIGN) {
                Bumped::At { chunk, offset } => (chunk, offset),
                Bumped::NeedChunk { size } => {
                    Arena::grow_host(&self.zone, self.label, st, size, bytes)?
                }
            };
            Ok(st.host_chunks.slice(chunk, offset, len, zero))
        })
    }

    #[cold]
    fn grow_host(
        zone: &Zone,
        label: u8,
        st: &mut State,
        size: u64,
        bytes: u64,
    ) -> Result<(usize, u64)> {
        // Chunks double with the arena's size, so a growing frame takes
        // few of them.
        // Whole words: the chunk holds `u64`s.
        let needed = bytes.next_multiple_of(HOST_ALIGN);
        let size =
            zone.arena_chunk(size.max(st.host.capacity()), needed, false) & !(HOST_ALIGN - 1);
        let quota = match zone.inner.child {
            Some(_) => Some(zone.check_quota(size)?),
            None => None,
        };
        let got = st.host_chunks.add(size)?;
        st.host.add_chunk(got);
        st.note_growth(got);
        st.traced = zone.inner.recorder.on();
        zone.counters().add_host(got);
        drop(quota);
        zone.counters().arena.add(HostDevice {
            host: got,
            device: 0,
        });
        zone.trace(|| arena_event(true, Location::Host, got));
        zone.inner.labels.count(
            label,
            HostDevice {
                host: got,
                device: 0,
            },
            true,
        );
        match st.host.alloc(bytes, HOST_ALIGN) {
            Bumped::At { chunk, offset } => Ok((chunk, offset)),
            Bumped::NeedChunk { .. } => Err(Error::HostOutOfMemory {
                bytes,
                detail: "a new arena chunk did not fit the request".into(),
            }),
        }
    }

    /// A device place for `bytes` in this arena's device chunks.
    fn device_place(&self, bytes: u64) -> Result<DevicePlace> {
        // Transfers move whole words: reserve the padded length.
        let reserve = crate::backend::copy_len(bytes);
        let align = self.zone.info().alignment;
        let zone = &self.zone;
        let label = self.label;
        self.with_state(|st| {
            let (chunk, offset) = match st.device.alloc(reserve, align) {
                Bumped::At { chunk, offset } => (chunk, offset),
                Bumped::NeedChunk { size } => {
                    // No chunk past what one buffer holds, or the budget
                    // and quotas take (a huge capacity must not make small
                    // requests fail).
                    let size = size.min(zone.max_block());
                    let size = match st.device_default {
                        true => zone.arena_chunk(size, reserve, true),
                        false => size.max(reserve),
                    };
                    // The zone's pool, not this arena: no re-entry.
                    zone.check_fits(size)?;
                    let range = zone.alloc_device(size, crate::zone::Use::arena())?;
                    zone.counters().arena.add(HostDevice {
                        host: 0,
                        device: range.size(),
                    });
                    st.device.add_chunk(range.size());
                    st.note_growth(range.size());
                    st.traced = zone.inner.recorder.on();
                    zone.inner.labels.count(
                        label,
                        HostDevice {
                            host: 0,
                            device: range.size(),
                        },
                        true,
                    );
                    st.device_chunks.push(range);
                    match st.device.alloc(reserve, align) {
                        Bumped::At { chunk, offset } => (chunk, offset),
                        Bumped::NeedChunk { .. } => {
                            return Err(Error::Backend {
                                detail: "a new arena chunk did not fit the request".into(),
                            })
                        }
                    }
                }
            };
            Ok(st.device_chunks[chunk].place().advance(offset))
        })
    }

    /// A handle built in one go, so the caller's copy of it reads whole
    /// stores (see BENCHMARKS.md on store forwarding).
    #[inline(always)]
    fn handle<'s, T: Element>(
        &'s self,
        shape: Shape,
        host: Option<&'s mut [T]>,
        device: Option<DevicePlace>,
        host_current: bool,
    ) -> ArenaTensor<'s, T> {
        ArenaTensor {
            arena: self,
            shape,
            host,
            device,
            bound: None,
            state: SyncState {
                host_current,
                device_current: false,
                device_init: false,
            },
        }
    }

    /// Storage at `loc` for a checked shape; `host_current` marks the host
    /// slice's zeros as the tensor's contents.
    #[inline(always)]
    fn alloc_at<T: Element>(
        &self,
        shape: Shape,
        bytes: u64,
        loc: Location,
        host_current: bool,
    ) -> Result<ArenaTensor<'_, T>> {
        match loc {
            Location::Host => {
                let host = self.host_slice(shape.numel(), true)?;
                Ok(self.handle(shape, Some(host), None, host_current))
            }
            Location::Device => {
                self.zone.check_fits(bytes)?;
                let place = self.device_place(bytes)?;
                Ok(self.handle(shape, None, Some(place), false))
            }
        }
    }

    /// Names this arena in the zone's breakdowns
    /// ([`crate::ZoneStats::by_label`]): the blocks it holds count for the
    /// label.
    ///
    /// Errors: [`Error::TooManyLabels`] past 255 distinct labels in a zone.
    pub fn set_label(&mut self, label: &str) -> Result<()> {
        let id = self.zone.inner.labels.id(label)?;
        let st = self.state.get_mut();
        let held = HostDevice {
            host: st.host.capacity(),
            device: st.device.capacity(),
        };
        self.zone.inner.labels.count(self.label, held, false);
        self.label = id;
        if let Some(e) = &st.entry {
            e.meta.label.store(id, Ordering::Relaxed);
        }
        self.zone.inner.labels.count(self.label, held, true);
        Ok(())
    }

    /// `len` zeroed host elements of scratch memory: plain bump allocation
    /// with no tensor handle, valid until the arena is reset or dropped.
    /// Use it for host-side buffers of a frame (decode targets, staging of
    /// your own); the arena's tensors use the same memory.
    ///
    /// ```
    /// use tensorzone::Zone;
    /// let zone = Zone::cpu();
    /// let mut arena = zone.arena();
    /// let a = arena.alloc_slice::<u8>(32).unwrap();
    /// a[0] = 7;
    /// let b = arena.alloc_slice::<f32>(4).unwrap();
    /// assert_eq!((a[0], b), (7, &mut [0.0; 4][..]));
    /// arena.reset();
    /// ```
    ///
    /// Errors: [`Error::ShapeOverflow`] when `len` elements of `T` overflow
    /// the address space; [`Error::HostOutOfMemory`] when the host has no
    /// room for a new chunk.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_slice<T: Element>(&self, len: usize) -> Result<&mut [T]> {
        if len == 0 {
            return Ok(&mut []);
        }
        match len.checked_mul(std::mem::size_of::<T>()) {
            Some(b) if b <= isize::MAX as usize => self.host_slice(len, true),
            _ => Err(Error::ShapeOverflow {
                dims: vec![len],
                dtype: T::DTYPE,
            }),
        }
    }

    /// An unwritten arena tensor with storage at `loc`: it reads as zeros
    /// and nothing is written until a read or binding needs it. Use it for
    /// kernel outputs.
    #[inline]
    pub fn empty<T: Element>(
        &self,
        shape: impl IntoShape,
        loc: Location,
    ) -> Result<ArenaTensor<'_, T>> {
        let (shape, bytes) = checked::<T>(shape)?;
        self.alloc_at(shape, bytes, loc, false)
    }

    /// An arena tensor of zeros at `loc`.
    #[inline]
    pub fn zeros<T: Element>(
        &self,
        shape: impl IntoShape,
        loc: Location,
    ) -> Result<ArenaTensor<'_, T>> {
        let (shape, bytes) = checked::<T>(shape)?;
        match loc {
            Location::Host => self.alloc_at(shape, bytes, loc, true),
            Location::Device => {
                let mut t = self.alloc_at(shape, bytes, loc, false)?;
                sync::sync_device(&mut t)?;
                Ok(t)
            }
        }
    }

    /// An arena tensor with every element `value`, at `loc`.
    pub fn full<T: Element>(
        &self,
        shape: impl IntoShape,
        value: T,
        loc: Location,
    ) -> Result<ArenaTensor<'_, T>> {
        let (shape, bytes) = checked::<T>(shape)?;
        let mut t = self.alloc_at(shape, bytes, Location::Host, true)?;
        if let Some(h) = t.host.as_deref_mut() {
            h.fill(value);
        }
        if loc == Location::Device {
            sync::sync_device(&mut t)?;
        }
        Ok(t)
    }

    /// An arena tensor holding a copy of `data` (row-major), at `loc`: on
    /// the device, one upload and no host copy.
    ///
    /// Errors: [`Error::LengthMismatch`] when `data` does not hold exactly
    /// the shape's element count.
    pub fn from_slice<T: Element>(
        &self,
        shape: impl IntoShape,
        data: &[T],
        loc: Location,
    ) -> Result<ArenaTensor<'_, T>> {
        let (shape, bytes) = checked::<T>(shape)?;
        check_len(&shape, data.len())?;
        match loc {
            Location::Host => {
                let h = self.host_slice(data.len(), false)?;
                h.copy_from_slice(data);
                Ok(self.handle(shape, Some(h), None, true))
            }
            Location::Device => {
                self.zone.check_fits(bytes)?;
                let mut t = self.handle(shape, None, None, false);
                sync::write_device(&mut t, data)?;
                Ok(t)
            }
        }
    }
}

/// An arena tier event (see [`crate::trace::Event::live`]).
fn arena_event(alloc: bool, location: Location, bytes: u64) -> crate::trace::Event {
    crate::trace::Event::live(alloc, crate::trace::Tier::Arena, location, bytes)
}

impl Drop for Arena {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        if let Some(e) = st.entry.take() {
            self.zone.inner.tracking.registry.remove(e.id);
        }
        let c = self.zone.counters();
        for range in st.device_chunks.drain(..) {
            self.zone.free_device(range, crate::zone::Use::arena());
        }
        let host = st.host.capacity();
        let held = HostDevice {
            host,
            device: st.device.capacity(),
        };
        self.zone.inner.labels.count(self.label, held, false);
        c.sub_host(host);
        c.arena.sub(held);
        if host > 0 {
            self.zone.trace(|| arena_event(false, Location::Host, host));
        }
    }
}

impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arena")
            .field("used", &self.used())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// A tensor in an [`Arena`], alive until the arena is reset or dropped.
/// It has the residency calls of [`Tensor`]: the same lazy, counted moves
/// between host and device.
pub struct ArenaTensor<'a, T: Element> {
    arena: &'a Arena,
    shape: Shape,
    host: Option<&'a mut [T]>,
    device: Option<DevicePlace>,
    bound: Option<Box<wgpu::Buffer>>,
    state: SyncState,
}

impl<'a, T: Element> ArenaTensor<'a, T> {
    sync::residency_api!();

    /// A wgpu binding of the device copy (made current first); see
    /// [`Tensor::binding`] for the rules. The bind group must not be used
    /// after the arena is reset or dropped.
    pub fn binding(&mut self) -> Result<wgpu::BufferBinding<'_>> {
        sync::binding(self)
    }

    /// Copies `src` into this tensor on the device (one device→device copy).
    pub fn copy_from(&mut self, src: &mut ArenaTensor<'_, T>) -> Result<()> {
        sync::copy_device(self, src)
    }

    /// Copies the tensor out to an owned [`Tensor`] that outlives the
    /// arena: a device→device copy when the device copy is current, else a
    /// host copy.
    #[allow(clippy::wrong_self_convention)]
    pub fn to_owned(&mut self) -> Result<Tensor<T>> {
        Tensor::copy_of(self)
    }

    /// The arena the tensor lives in.
    pub fn arena(&self) -> &'a Arena {
        self.arena
    }
}

impl<T: Element> Storage<T> for ArenaTensor<'_, T> {
    fn zone(&self) -> &Zone {
        &self.arena.zone
    }
    fn shape(&self) -> &Shape {
        &self.shape
    }
    fn state(&self) -> &SyncState {
        &self.state
    }
    fn has_host(&self) -> bool {
        self.host.is_some()
    }
    fn host(&self) -> Option<&[T]> {
        self.host.as_deref()
    }
    fn has_device(&self) -> bool {
        self.device.is_some()
    }
    fn parts(&mut self) -> Result<Parts<'_, T>> {
        Ok(Parts {
            zone: &self.arena.zone,
            host: self.host.as_deref_mut(),
            device: self.device,
            state: &mut self.state,
            bound: &mut self.bound,
            pin: None,
        })
    }
    fn ensure_host(&mut self) -> Result<()> {
        if self.host.is_none() {
            self.host = Some(self.arena.host_slice(self.shape.numel(), true)?);
        }
        Ok(())
    }
    fn ensure_host_to_overwrite(&mut self) -> Result<()> {
        if self.host.is_none() {
            // The caller writes every element, and a copy it leaves
            // unwritten is cleared before it is read (`sync_host`): a
            // clear now would be a memset of the tensor for nothing.
            self.host = Some(self.arena.host_slice(self.shape.numel(), false)?);
        }
        Ok(())
    }
    fn ensure_device(&mut self) -> Result<()> {
        if self.device.is_none() {
            let len = Storage::byte_len(self);
            self.arena.zone.check_fits(len)?;
            self.device = Some(self.arena.device_place(len)?);
        }
        Ok(())
    }
}

impl<T: Element> fmt::Debug for ArenaTensor<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArenaTensor")
            .field("dtype", &T::DTYPE)
            .field("shape", &self.shape)
            .field("residency", &self.residency())
            .finish()
    }
}
