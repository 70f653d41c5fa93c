//! Tier 3: `Tensor<T>`, uniquely owned storage that returns to the pool on drop.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ndarray::{ArrayBase, Data, Dimension};

use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::residency::Location;
use crate::shape::{IntoShape, Shape};
use crate::stats::HostDevice;
use crate::tier::pinned::PinnedBuffer;
use crate::tier::sync::{self, check_len, Parts, Storage, SyncState};
use crate::trace::Tier;
use crate::track::{Cell, LeakKind, Meta, SharedMoved};
use crate::zone::{DeviceRange, Use, Zone};

/// A tensor owned by one handle. Its bytes may live on the host, on the
/// device or both; the tensor knows which copy is current and moves data
/// only when a read on the other side needs it, counting every transfer.
///
/// Calls that may move data take `&mut self`: while a host view is
/// borrowed, nothing can make the device copy newer.
///
/// ```
/// use tensorzone::{CopyState, Location, Tensor, Zone};
/// let zone = Zone::new().unwrap();
/// let mut t = Tensor::from_slice(&zone, [3], &[1u32, 2, 3], Location::Host).unwrap();
/// t.to_device().unwrap();                      // one upload
/// assert!(t.residency().is_synced());
/// t.write_device(&[7, 8, 9]).unwrap();         // device newer, host stale
/// assert_eq!(t.residency().host, CopyState::Stale);
/// assert_eq!(t.to_vec().unwrap(), [7, 8, 9]);  // one download
/// assert_eq!(t.to_vec().unwrap(), [7, 8, 9]);  // moves nothing
/// assert_eq!(zone.stats().device_to_host.calls, 1);
/// ```
pub struct Tensor<T: Element> {
    zone: Zone,
    shape: Shape,
    host: Option<Box<[T]>>,
    /// The device range; in a tracking zone, once the tensor has taken its
    /// registry entry, a ticket (`DeviceRange::ticket`) naming the entry,
    /// which holds the range so the zone can spill it. The ticket lives in
    /// this field so the handle keeps the layout the allocation fast path
    /// was tuned on (a key field of its own cost a third more per pooled
    /// alloc + free).
    device: Option<DeviceRange>,
    /// The device block's wgpu buffer, looked up on the first `binding` so
    /// that allocation itself touches no buffer handle.
    bound: Option<Box<wgpu::Buffer>>,
    state: SyncState,
    /// Label id in the zone's label table (0: none).
    label: u8,
}

/// Turns a shape-like value into a checked shape and byte count for `T`.
#[inline(always)]
pub(crate) fn checked<T: Element>(shape: impl IntoShape) -> Result<(Shape, u64)> {
    let shape = shape.into_shape().map_err(|e| match e {
        // `Shape::new` cannot know the element type; name it here.
        Error::ShapeOverflow { dims, .. } => Error::ShapeOverflow {
            dims,
            dtype: T::DTYPE,
        },
        e => e,
    })?;
    let bytes = shape.byte_len(T::DTYPE)?;
    Ok((shape, bytes))
}

/// An empty `Vec` with room for `len` elements, or a typed error instead
/// of the allocator's abort.
fn host_reserve<T: Element>(len: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|e| Error::HostOutOfMemory {
            bytes: len.saturating_mul(std::mem::size_of::<T>()) as u64,
            detail: e.to_string(),
        })?;
    Ok(v)
}

fn host_vec<T: Element>(len: usize, fill: T) -> Result<Vec<T>> {
    let mut v = host_reserve(len)?;
    v.resize(len, fill);
    Ok(v)
}

impl<T: Element> Tensor<T> {
    fn unplaced(zone: &Zone, shape: Shape) -> Tensor<T> {
        let mut t = Tensor::new_handle(zone, shape, true, None);
        if zone.inner.tracked {
            t.register();
        }
        t
    }

    /// A tensor with no storage yet; `count` says whether to count it as
    /// created here (else its device allocation has counted it).
    #[inline(always)]
    fn new_handle(
        zone: &Zone,
        shape: Shape,
        count: bool,
        device: Option<DeviceRange>,
    ) -> Tensor<T> {
        if count {
            zone.counters()
                .tensors_created
                .fetch_add(1, Ordering::Relaxed);
        }
        Tensor {
            zone: zone.clone(),
            shape,
            host: None,
            device,
            bound: None,
            state: SyncState::default(),
            label: 0,
        }
    }

    /// In a tracking zone: gives a new tensor a registry entry, which
    /// takes its device range. Past four billion live entries the tensor
    /// stays untracked rather than failing.
    #[cold]
    #[inline(never)]
    fn register(&mut self) {
        let registry = &self.zone.inner.tracking.registry;
        let Some(cell) = registry.add(Meta {
            kind: LeakKind::Tensor,
            shape: (Some(T::DTYPE), self.shape.dims().to_vec()).into(),
            bytes: self.byte_len().into(),
            label: Default::default(),
        }) else {
            return;
        };
        if self.device.is_some() {
            let mut dev = cell.dev();
            dev.range = self.device.take();
            dev.last_use = self.zone.lru_tick();
        }
        self.device = Some(DeviceRange::ticket(cell.id));
    }

    /// In a tracking zone, takes over the registry entry the pool made for
    /// this tensor's new range (see `Registry::add_pending`), so the zone
    /// can spill it from now on.
    #[inline]
    fn adopt(&mut self) {
        if self.track() == 0 {
            if self.zone.inner.tracked {
                self.adopt_entry();
            }
        } else if self
            .device
            .as_ref()
            .is_some_and(DeviceRange::ticket_undescribed)
        {
            self.describe_entry();
        }
    }

    /// Gives a tensor registered at allocation its shape in the registry,
    /// and ends the leak check's wait for its handle (which it holds).
    #[cold]
    #[inline(never)]
    fn describe_entry(&mut self) {
        if let Some(cell) = self.cell() {
            *cell.meta.shape.lock().unwrap_or_else(|p| p.into_inner()) =
                (Some(T::DTYPE), self.shape.dims().to_vec());
            self.zone.inner.tracking.registry.handle_taken(cell.id);
        }
        if let Some(d) = self.device.as_mut() {
            d.ticket_described();
        }
        self.zone.leak_check_after_adopt();
    }

    #[cold]
    #[inline(never)]
    fn adopt_entry(&mut self) {
        let Some(range) = &self.device else {
            return;
        };
        let registry = &self.zone.inner.tracking.registry;
        let Some(cell) = registry.adopt(range.place()) else {
            return;
        };
        *cell.meta.shape.lock().unwrap_or_else(|p| p.into_inner()) =
            (Some(T::DTYPE), self.shape.dims().to_vec());
        cell.meta.bytes.store(self.byte_len(), Ordering::Relaxed);
        let mut dev = cell.dev();
        dev.range = self.device.take();
        dev.last_use = self.zone.lru_tick();
        drop(dev);
        self.device = Some(DeviceRange::ticket(cell.id));
        self.zone.leak_check_after_adopt();
    }

    /// The registry key of a tensor in a tracking zone, else 0.
    #[inline]
    fn track(&self) -> u32 {
        self.device
            .as_ref()
            .and_then(DeviceRange::ticket_key)
            .unwrap_or(0)
    }

    /// Gives back what the entry `cell` holds of the device copy: its saved
    /// bytes, and its range too with `range`; the label counts follow.
    /// Taken out under the cell's lock, so no spill moves bytes between
    /// the two counts. `false` if there was nothing to give back.
    fn release_from_entry(&mut self, cell: &Cell, range: bool) -> bool {
        let mut dev = cell.dev();
        if dev.saved.is_none() && !(range && dev.range.is_some()) {
            return false;
        }
        let before = self.held_with(Some(&dev));
        let taken = if range { dev.range.take() } else { None };
        let saved = dev.saved.take();
        let after = self.held_with(Some(&dev));
        drop(dev);
        self.zone.release_device_copy(taken, saved, false);
        self.label_count(
            HostDevice {
                host: before.host - after.host,
                device: before.device - after.device,
            },
            false,
        );
        true
    }

    /// The registry entry of a tensor in a tracking zone.
    fn cell(&self) -> Option<Arc<Cell>> {
        match self.track() {
            0 => None,
            id => self.zone.inner.tracking.registry.get(id),
        }
    }

    /// Makes `v` the host copy; in a child zone, within its quota.
    fn set_host(&mut self, v: Vec<T>) -> Result<()> {
        let bytes = self.byte_len();
        let quota = match self.zone.inner.child {
            Some(_) => Some(self.zone.check_quota(bytes)?),
            None => None,
        };
        let c = self.zone.counters();
        c.add_host(bytes);
        drop(quota);
        self.label_count(
            HostDevice {
                host: bytes,
                device: 0,
            },
            true,
        );
        self.zone.trace(|| owned_event(true, Location::Host, bytes));
        self.host = Some(v.into_boxed_slice());
        Ok(())
    }

    /// An unwritten tensor with storage at `loc`: it reads as zeros, and
    /// no zeros are written until a read or binding needs them.
    ///
    /// Use it for outputs a kernel or [`Tensor::write_device`] overwrites;
    /// safe code never sees another tensor's old bytes.
    #[inline(always)]
    pub fn empty(zone: &Zone, shape: impl IntoShape, loc: Location) -> Result<Tensor<T>> {
        let (shape, bytes) = checked::<T>(shape)?;
        match loc {
            Location::Host => Tensor::empty_host(zone, shape),
            Location::Device => {
                zone.check_fits(bytes)?;
                // The hot path of pooled allocation: the range comes first,
                // counting the tensor along with it. A tracking zone takes
                // no fast path: its pool registers the tensor (see `adopt`).
                let range = zone.alloc_tensor_device(bytes, T::DTYPE)?;
                Ok(Tensor::new_handle(zone, shape, false, Some(range)))
            }
        }
    }

    fn empty_host(zone: &Zone, shape: Shape) -> Result<Tensor<T>> {
        let mut t = Tensor::unplaced(zone, shape);
        let v = host_vec(t.shape.numel(), T::zeroed())?;
        t.set_host(v)?;
        Ok(t)
    }

    /// A tensor of zeros at `loc`.
    pub fn zeros(zone: &Zone, shape: impl IntoShape, loc: Location) -> Result<Tensor<T>> {
        let mut t = Tensor::empty(zone, shape, loc)?;
        match loc {
            Location::Host => t.state.host_current = true,
            Location::Device => sync::sync_device(&mut t)?,
        }
        Ok(t)
    }

    /// A tensor with every element `value`, at `loc` (on the device, one
    /// upload of the filled bytes; the filled host copy stays current too).
    pub fn full(zone: &Zone, shape: impl IntoShape, value: T, loc: Location) -> Result<Tensor<T>> {
        let (shape, bytes) = checked::<T>(shape)?;
        let v = host_vec(shape.numel(), value)?;
        Tensor::place(zone, shape, bytes, v, loc)
    }

    /// A tensor holding a copy of `data` (row-major), at `loc`.
    ///
    /// Errors: [`Error::LengthMismatch`] when `data` does not hold exactly
    /// the shape's element count.
    pub fn from_slice(
        zone: &Zone,
        shape: impl IntoShape,
        data: &[T],
        loc: Location,
    ) -> Result<Tensor<T>> {
        let (shape, bytes) = checked::<T>(shape)?;
        check_len(&shape, data.len())?;
        match loc {
            Location::Host => {
                let mut v = host_reserve(data.len())?;
                v.extend_from_slice(data);
                Tensor::place(zone, shape, bytes, v, loc)
            }
            Location::Device => {
                zone.check_fits(bytes)?;
                let mut t = Tensor::unplaced(zone, shape);
                t.write_device(data)?;
                Ok(t)
            }
        }
    }

    /// A tensor that takes ownership of `data` as its host copy (no copy on
    /// the host); for [`Location::Device`] it is also uploaded, and both
    /// copies stay current.
    pub fn from_vec(
        zone: &Zone,
        shape: impl IntoShape,
        data: Vec<T>,
        loc: Location,
    ) -> Result<Tensor<T>> {
        let (shape, bytes) = checked::<T>(shape)?;
        check_len(&shape, data.len())?;
        Tensor::place(zone, shape, bytes, data, loc)
    }

    /// A tensor with the shape and elements of an ndarray of any memory
    /// layout (strided, transposed, reversed), in logical row-major order.
    ///
    /// ```
    /// use ndarray::array;
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::cpu();
    /// let a = array![[1i32, 2, 3], [4, 5, 6]];
    /// let mut t = Tensor::from_ndarray(&zone, &a.t(), Location::Device).unwrap();
    /// assert_eq!(t.dims(), &[3, 2]);
    /// assert_eq!(t.to_vec().unwrap(), [1, 4, 2, 5, 3, 6]);
    /// ```
    pub fn from_ndarray<S, D>(
        zone: &Zone,
        array: &ArrayBase<S, D>,
        loc: Location,
    ) -> Result<Tensor<T>>
    where
        S: Data<Elem = T>,
        D: Dimension,
    {
        let (shape, bytes) = checked::<T>(array.shape())?;
        match array.as_slice() {
            Some(contiguous) => Tensor::from_slice(zone, shape, contiguous, loc),
            None => {
                let mut v = host_reserve(shape.numel())?;
                v.extend(array.iter().copied());
                Tensor::place(zone, shape, bytes, v, loc)
            }
        }
    }

    /// A device tensor whose bytes come from a pinned buffer written in
    /// place, with no further host copy: one staging→device copy.
    ///
    /// ```
    /// use tensorzone::{Tensor, Zone};
    /// let zone = Zone::new().unwrap();
    /// let mut pinned = zone.pinned::<u8>(4).unwrap();
    /// pinned.write(0, &[10, 20, 30, 40]).unwrap(); // e.g. a decoder's output
    /// let mut t = Tensor::from_pinned(&zone, [2, 2], pinned).unwrap();
    /// assert_eq!(t.to_vec().unwrap(), [10, 20, 30, 40]);
    /// ```
    pub fn from_pinned(
        zone: &Zone,
        shape: impl IntoShape,
        pinned: PinnedBuffer<T>,
    ) -> Result<Tensor<T>> {
        let (shape, bytes) = checked::<T>(shape)?;
        check_len(&shape, pinned.len())?;
        if !pinned.zone().same_device(zone) {
            return Err(Error::ZoneMismatch);
        }
        zone.check_fits(bytes)?;
        let mut t = Tensor::unplaced(zone, shape);
        t.upload_pinned(pinned)?;
        Ok(t)
    }

    fn place(zone: &Zone, shape: Shape, bytes: u64, v: Vec<T>, loc: Location) -> Result<Tensor<T>> {
        if loc == Location::Device {
            zone.check_fits(bytes)?;
        }
        let mut t = Tensor::unplaced(zone, shape);
        t.set_host(v)?;
        t.state.host_current = true;
        if loc == Location::Device {
            sync::sync_device(&mut t)?;
        }
        Ok(t)
    }

    // ----- residency -------------------------------------------------------

    sync::residency_api!();

    /// Releases the host copy, keeping the device one (made current first).
    pub fn drop_host_copy(&mut self) -> Result<()> {
        if self.host.is_some() {
            sync::sync_device(self)?;
            self.host = None;
            self.state.host_current = false;
            let bytes = self.byte_len();
            let c = self.zone.counters();
            c.sub_host(bytes);
            self.label_count(
                HostDevice {
                    host: bytes,
                    device: 0,
                },
                false,
            );
            self.zone
                .trace(|| owned_event(false, Location::Host, bytes));
        }
        Ok(())
    }

    /// Releases the device copy, keeping the host one (made current first).
    pub fn drop_device_copy(&mut self) -> Result<()> {
        self.adopt();
        if let Some(cell) = self.cell() {
            if !Storage::has_device(self) {
                return Ok(());
            }
            sync::sync_host(self)?;
            self.state.device_current = false;
            self.state.device_init = false;
            self.bound = None;
            self.release_from_entry(&cell, true);
            return Ok(());
        }
        if self.device.is_some() {
            sync::sync_host(self)?;
            self.state.device_current = false;
            self.state.device_init = false;
            self.bound = None;
            if let Some(range) = self.device.take() {
                self.label_count(
                    HostDevice {
                        host: 0,
                        device: range.size(),
                    },
                    false,
                );
                self.zone.free_device(range, Use::owned(false));
            }
        }
        Ok(())
    }

    // ----- host access -----------------------------------------------------

    // ----- device access ---------------------------------------------------

    /// A wgpu binding of the device copy (made current first) for your own
    /// kernels. The binding's size is the byte length rounded up to 4. If a
    /// kernel writes through it, call [`Tensor::mark_device_written`].
    ///
    /// Tensors share pooled buffers and wgpu tracks usage per buffer, so
    /// declare tensor bindings `var<storage, read_write>` in WGSL: a
    /// `read`-only binding next to a `read_write` one of the same buffer is
    /// a usage conflict.
    ///
    /// The bytes between the end of the data and the end of the binding
    /// are zero. A bind group made from the binding must not be used after
    /// the tensor is dropped or its device copy released: the range goes
    /// back to the pool, and may hold another tensor's data by then.
    ///
    /// Under a device budget the tensor is not spilled until the zone next
    /// waits for the device at one of your calls (a read back, or
    /// [`Zone::synchronize`]): submit the work that uses the binding
    /// before making one, or keep the tensor in an arena, which never
    /// spills.
    ///
    /// Errors: [`Error::NeedsGpu`] on the CPU backend.
    ///
    /// A kernel of your own that doubles a tensor in place:
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::new().unwrap();
    /// let mut t = Tensor::from_slice(&zone, [4], &[1.0f32, 2.0, 3.0, 4.0], Location::Device).unwrap();
    /// if let (Some(device), Some(queue)) = (zone.wgpu_device(), zone.wgpu_queue()) {
    ///     let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
    ///         label: None,
    ///         source: wgpu::ShaderSource::Wgsl(
    ///             "@group(0) @binding(0) var<storage, read_write> x: array<f32>;
    ///              @compute @workgroup_size(64)
    ///              fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    ///                  if (g.x < 4u) { x[g.x] = 2.0 * x[g.x]; }
    ///              }"
    ///             .into(),
    ///         ),
    ///     });
    ///     let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
    ///         label: None,
    ///         layout: None,
    ///         module: &module,
    ///         entry_point: Some("main"),
    ///         compilation_options: Default::default(),
    ///         cache: None,
    ///     });
    ///     let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
    ///         label: None,
    ///         layout: &pipeline.get_bind_group_layout(0),
    ///         entries: &[wgpu::BindGroupEntry {
    ///             binding: 0,
    ///             resource: wgpu::BindingResource::Buffer(t.binding().unwrap()),
    ///         }],
    ///     });
    ///     let mut enc = device.create_command_encoder(&Default::default());
    ///     {
    ///         let mut pass = enc.begin_compute_pass(&Default::default());
    ///         pass.set_pipeline(&pipeline);
    ///         pass.set_bind_group(0, &group, &[]);
    ///         pass.dispatch_workgroups(1, 1, 1);
    ///     }
    ///     queue.submit([enc.finish()]);
    ///     t.mark_device_written().unwrap(); // the host copy is stale now
    ///     assert_eq!(t.to_vec().unwrap(), [2.0, 4.0, 6.0, 8.0]);
    /// } else {
    ///     assert!(t.binding().is_err()); // Error::NeedsGpu on the CPU backend
    /// }
    /// ```
    pub fn binding(&mut self) -> Result<wgpu::BufferBinding<'_>> {
        sync::binding(self)
    }

    /// Copies `src` into this tensor on the device (one device→device copy;
    /// `src` is uploaded first if its host copy is newer).
    ///
    /// Errors: [`Error::ShapeMismatch`], [`Error::ZoneMismatch`].
    pub fn copy_from(&mut self, src: &mut Tensor<T>) -> Result<()> {
        sync::copy_device(self, src)
    }

    /// A new tensor with the same contents and label: a device→device copy
    /// when the device copy is current, else a host copy; an unwritten
    /// tensor gives an unwritten one with its storage on the same side.
    pub fn try_clone(&mut self) -> Result<Tensor<T>> {
        let mut copy = Tensor::copy_of(self)?;
        if self.label != 0 {
            copy.set_label_id(self.label);
        }
        Ok(copy)
    }

    /// Takes what the tensor holds off its label's count (on drop; out of
    /// line, so the unlabeled drop stays small enough to inline).
    #[cold]
    #[inline(never)]
    fn unlabel(&self) {
        match self.cell() {
            Some(c) => {
                // Under the cell's lock, and with the entry's label cleared:
                // a spill meanwhile moves no label bytes this misses.
                let dev = c.dev();
                c.meta.label.store(0, Ordering::Relaxed);
                self.label_count(self.held_with(Some(&dev)), false);
            }
            None => self.label_count(self.held(), false),
        }
    }

    /// Lets a tensor whose binding a shared handle pinned for good be
    /// spilled again once the zone next waits for the device (it leaves
    /// the shared tier through `make_mut`, whose buffer cache goes with
    /// it). A tensor no handle pinned keeps its mark, so one never bound
    /// stays free to spill at once.
    pub(crate) fn unpin_shared_binding(&self) {
        if let Some(c) = self.cell() {
            let mut dev = c.dev();
            if dev.bound_at == Some(u64::MAX) {
                // The shared handle's binding was the caller's own.
                let mark = self.zone.inner.tracking.registry.binding_mark();
                dev.bound_at = Some(mark);
                dev.user_bound_at = dev.user_bound_at.max(Some(mark));
            }
        }
    }

    /// Counts `held` for this tensor's label, if it has one.
    #[inline]
    fn label_count(&self, held: HostDevice, add: bool) {
        if self.label != 0 {
            self.zone.inner.labels.count(self.label, held, add);
        }
    }

    /// Names this tensor in the zone's breakdowns
    /// ([`crate::ZoneStats::by_label`]) and out-of-memory errors; what it
    /// holds moves to the new label.
    ///
    /// ```
    /// use tensorzone::{Location, Tensor, Zone};
    /// let zone = Zone::cpu();
    /// let mut w = Tensor::<f32>::zeros(&zone, [256], Location::Host).unwrap();
    /// w.set_label("weights").unwrap();
    /// assert_eq!(zone.stats().by_label[0].0, "weights");
    /// assert_eq!(zone.stats().by_label[0].1.host, 1024);
    /// ```
    ///
    /// Errors: [`Error::TooManyLabels`] past 255 distinct labels in a zone.
    pub fn set_label(&mut self, label: &str) -> Result<()> {
        let id = self.zone.inner.labels.id(label)?;
        self.set_label_id(id);
        Ok(())
    }

    /// [`Tensor::set_label`] with the label's id in the zone's table.
    fn set_label_id(&mut self, id: u8) {
        self.adopt();
        // The device lock keeps a spill from moving bytes between the two
        // label counts.
        let cell = self.cell();
        let _dev = cell.as_ref().map(|c| c.dev());
        let held = self.held_with(_dev.as_deref());
        self.label_count(held, false);
        self.label = id;
        if let Some(c) = &cell {
            c.meta.label.store(id, Ordering::Relaxed);
        }
        self.label_count(held, true);
    }

    /// This tensor with a label (see [`Tensor::set_label`]).
    pub fn with_label(mut self, label: &str) -> Result<Tensor<T>> {
        self.set_label(label)?;
        Ok(self)
    }

    /// The tensor's label, if it has one.
    pub fn label(&self) -> Option<String> {
        (self.label != 0)
            .then(|| self.zone.inner.labels.name(self.label))
            .flatten()
    }

    /// Bytes this tensor holds: its host copy and its device range (or,
    /// spilled, the host bytes that keep the device copy).
    pub(crate) fn held(&self) -> HostDevice {
        match self.cell() {
            Some(c) => self.held_with(Some(&c.dev())),

            None => self.held_with(None),
        }
    }

    /// `held`, for a shared handle's count of the tensor in its zone's
    /// shared tier: marks whether that count holds the tensor now
    /// (`in_shared`), and hands over the moves spills and reloads made in
    /// it since the last call, which the handle adds to what it counted.
    pub(crate) fn held_shared(&self, in_shared: bool) -> (HostDevice, SharedMoved) {
        match self.cell() {
            Some(c) => {
                let mut dev = c.dev();
                dev.in_shared = in_shared;
                let moved = std::mem::take(&mut dev.shared_moved);
                (self.held_with(Some(&dev)), moved)
            }
            None => (self.held_with(None), SharedMoved::default()),
        }
    }

    /// `held`, with a tracked tensor's device state already locked.
    fn held_with(&self, dev: Option<&crate::track::DevState>) -> HostDevice {
        let host = if self.host.is_some() {
            self.byte_len()
        } else {
            0
        };
        match dev {
            Some(d) => HostDevice {
                host: host + d.saved.as_ref().map_or(0, |s| s.len() as u64),
                device: d.range.as_ref().map_or(0, DeviceRange::size),
            },
            None => HostDevice {
                host,
                device: self.device.as_ref().map_or(0, DeviceRange::size),
            },
        }
    }

    /// A new owned tensor with the contents of any tier's tensor `src`, in
    /// `src`'s zone (see [`Tensor::try_clone`]).
    pub(crate) fn copy_of(src: &mut impl Storage<T>) -> Result<Tensor<T>> {
        let zone = src.zone().clone();
        let shape = src.shape().clone();
        let st = *src.state();
        if st.device_current {
            let mut t = Tensor::empty(&zone, shape, Location::Device)?;
            sync::copy_device(&mut t, src)?;
            Ok(t)
        } else if let (true, Some(h)) = (st.host_current, src.host()) {
            let mut v = host_reserve(h.len())?;
            v.extend_from_slice(h);
            let bytes = src.byte_len();
            Tensor::place(&zone, shape, bytes, v, Location::Host)
        } else {
            let loc = if src.has_device() {
                Location::Device
            } else {
                Location::Host
            };
            Tensor::empty(&zone, shape, loc)
        }
    }

    // ----- metadata --------------------------------------------------------

    /// The zone the tensor belongs to.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// The parts; with `overwrite` (a write of every byte follows), a
    /// spilled device copy gets its range back without its saved bytes.
    /// The copy is then no longer current anywhere and unwritten on the
    /// device: a write that fails after this leaves the tensor reading
    /// zeros, never stale or foreign bytes.
    fn parts_with(&mut self, overwrite: bool) -> Result<Parts<'_, T>> {
        self.adopt();
        let (pin, device) = match self.track() {
            0 => (None, self.device.as_ref().map(DeviceRange::place)),
            _ => {
                let c = self.cell().ok_or(Error::NoDeviceCopy { op: "tracked" })?;
                let (pin, place) = if overwrite {
                    let (pin, place, dropped) = self.zone.pin_device_to_overwrite(&c)?;
                    if dropped {
                        self.state.device_current = false;
                        self.state.device_init = false;
                    }
                    (pin, place)
                } else {
                    self.zone.pin_device(&c)?
                };
                // A reload may have moved the copy to another block.
                self.bound = None;
                (Some(pin), place)
            }
        };
        Ok(Parts {
            zone: &self.zone,
            host: self.host.as_deref_mut(),
            device,
            state: &mut self.state,
            bound: &mut self.bound,
            pin,
        })
    }
}

impl<T: Element> Storage<T> for Tensor<T> {
    fn zone(&self) -> &Zone {
        &self.zone
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
        match self.track() {
            0 => self.device.is_some(),
            _ => self.cell().is_some_and(|c| c.dev().exists()),
        }
    }
    fn parts(&mut self) -> Result<Parts<'_, T>> {
        self.parts_with(false)
    }
    fn parts_to_overwrite(&mut self) -> Result<Parts<'_, T>> {
        self.parts_with(true)
    }
    fn host_parts(&mut self) -> Result<Parts<'_, T>> {
        if self.track() == 0 {
            return self.parts();
        }
        // A host-only first use describes the entry too.
        self.adopt();
        Ok(Parts {
            zone: &self.zone,
            host: self.host.as_deref_mut(),
            device: None,
            state: &mut self.state,
            bound: &mut self.bound,
            pin: None,
        })
    }
    fn drop_stale_spill(&mut self) {
        if self.state.device_current {
            return;
        }
        let Some(cell) = self.cell() else {
            return;
        };
        if self.release_from_entry(&cell, false) {
            self.state.device_init = false;
            self.bound = None;
        }
    }
    fn host_from_spill(&mut self) -> bool {
        let Some(cell) = self.cell() else {
            return false;
        };
        let Some(host) = self.host.as_deref_mut() else {
            return false;
        };
        let dev = cell.dev();
        let Some(saved) = &dev.saved else {
            return false;
        };
        bytemuck::cast_slice_mut::<T, u8>(host).copy_from_slice(saved);
        self.state.host_current = true;
        true
    }
    fn ensure_host(&mut self) -> Result<()> {
        if self.host.is_none() {
            let v = host_vec(self.shape.numel(), T::zeroed())?;
            self.set_host(v)?;
        }
        Ok(())
    }
    fn ensure_device(&mut self) -> Result<()> {
        self.adopt();
        if let Some(cell) = self.cell() {
            let mut dev = cell.dev();
            if !dev.exists() {
                let len = self.byte_len();
                self.zone.check_fits(len)?;
                // This cell's lock is held: the allocation cannot spill it.
                let range = self.zone.alloc_device(len, Use::owned(false))?;
                let size = range.size();
                dev.range = Some(range);
                dev.last_use = self.zone.lru_tick();
                drop(dev);
                self.label_count(
                    HostDevice {
                        host: 0,
                        device: size,
                    },
                    true,
                );
            }
            return Ok(());
        }
        if self.device.is_none() {
            let len = self.byte_len();
            self.zone.check_fits(len)?;
            let range = self.zone.alloc_device(len, Use::owned(false))?;
            self.label_count(
                HostDevice {
                    host: 0,
                    device: range.size(),
                },
                true,
            );
            self.device = Some(range);
        }
        Ok(())
    }
}

/// An owned tier event (see [`crate::trace::Event::live`]).
fn owned_event(alloc: bool, location: Location, bytes: u64) -> crate::trace::Event {
    crate::trace::Event::live(alloc, Tier::Owned, location, bytes)
}

impl<T: Element> Drop for Tensor<T> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.label != 0 {
            self.unlabel();
        }
        let c = self.zone.counters();
        if self.host.take().is_some() {
            let bytes = self.byte_len();
            c.sub_host(bytes);
            self.zone
                .trace(|| owned_event(false, Location::Host, bytes));
        }
        // A ticket goes to the pool's locked path, which releases its entry.
        match self.device.take() {
            Some(range) => self.zone.free_device(range, Use::owned(true)),
            None => {
                c.tensors_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<T: Element> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("dtype", &T::DTYPE)
            .field("shape", &self.shape)
            .field("residency", &self.residency())
            .finish()
    }
}
