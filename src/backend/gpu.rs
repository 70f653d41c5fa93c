//! GPU backend: wgpu device, queue and the few commands the zone needs.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::CreateError;
use crate::error::{Error, Result};

/// Usage of device slabs and dedicated blocks: bindable as storage and a
/// source and destination of copies.
pub(crate) const DEVICE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);
/// Usage of upload staging buffers.
pub(crate) const UPLOAD_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::MAP_WRITE.union(wgpu::BufferUsages::COPY_SRC);
/// Usage of readback staging buffers.
pub(crate) const READBACK_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::MAP_READ.union(wgpu::BufferUsages::COPY_DST);

/// States of an upload buffer's re-mapping, shared with its map callback.
pub(crate) const MAP_PENDING: u8 = 0;
pub(crate) const MAP_READY: u8 = 1;
/// How long a map whose device work is done may wait for its callback to
/// run on another thread before it counts as failed.
const MAP_CALLBACK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
pub(crate) const MAP_FAILED: u8 = 2;

/// Set by wgpu's device-lost callback. The flag keeps the check on every
/// device call to one atomic load; the reason is read only once lost.
#[derive(Default)]
struct LostState {
    lost: AtomicBool,
    reason: Mutex<String>,
}

/// The wgpu objects of a GPU zone.
pub(crate) struct GpuBackend {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    /// Host and device share memory (a CPU adapter or an integrated GPU)
    /// and wgpu can map storage buffers: a tensor's own dedicated block is
    /// then written and read in place, one `memcpy` instead of two.
    pub(crate) uma: bool,
    lost: Arc<LostState>,
    /// wgpu refuses copies within one buffer, and tensors share slabs: such
    /// copies go through this buffer, grown on demand.
    scratch: Mutex<Option<wgpu::Buffer>>,
    /// Scratch buffers created, reported with the zone's device blocks.
    pub(crate) scratch_created: std::sync::atomic::AtomicU64,
    /// Compute pipelines of `crate::kernels`, compiled on first use.
    pipelines: Mutex<PipelineCache>,
    /// Pipelines compiled, for tests and reports.
    pub(crate) pipelines_compiled: std::sync::atomic::AtomicU64,
    /// Kernels recorded and not yet submitted (see `dispatch`), and the
    /// parameter buffer they read, made on the first kernel.
    kernels: Mutex<KernelBatch>,
    /// Why a batch of kernels failed at submission, for the next call to
    /// report (`check_alive`); `batch_failed` says whether one is held.
    batch_error: Mutex<Option<String>>,
    batch_failed: std::sync::atomic::AtomicBool,
}

/// One kernel's slot in the parameter buffer, at an offset every adapter
/// takes for a storage binding (256 words; the longest list the crate's
/// kernels pass, a blur's, is 5).
pub(crate) const PARAM_SLOT: u64 = 1024;
/// Kernels one batch holds before it is submitted.
const PARAM_SLOTS: u64 = 64;

/// Kernels recorded into one command encoder, submitted together when
/// anything else needs the queue (`flush_kernels`): a frame's kernels then
/// cost one submission, not one each.
#[derive(Default)]
struct KernelBatch {
    params_buffer: Option<wgpu::Buffer>,
    encoder: Option<wgpu::CommandEncoder>,
    /// The batch's parameters, one `PARAM_SLOT` per kernel, written to
    /// the buffer right before the batch is submitted.
    params: Vec<u8>,
}

/// Most pipelines kept per parameterised kernel (a key `kernel:variant`,
/// such as one blur per sigma): a caller sweeping the parameter recompiles
/// the oldest variants rather than growing the cache without end.
const VARIANTS_KEPT: usize = 16;

/// The compiled pipelines, by key; `kernel:variant` keys also in the order
/// they were last used, oldest first, to evict past [`VARIANTS_KEPT`].
#[derive(Default)]
struct PipelineCache {
    by_key: std::collections::HashMap<String, Arc<Pipeline>>,
    variants: std::collections::VecDeque<String>,
}

impl PipelineCache {
    /// Moves variant `key` to the back of the eviction order: a variant in
    /// use every frame is not the one evicted.
    fn used(&mut self, key: &str) {
        if key.contains(':') && self.variants.back().is_none_or(|k| k != key) {
            if let Some(i) = self.variants.iter().position(|k| k == key) {
                if let Some(k) = self.variants.remove(i) {
                    self.variants.push_back(k);
                }
            }
        }
    }

    fn insert(&mut self, key: &str, p: Arc<Pipeline>) {
        if let Some((kernel, _)) = key.split_once(':') {
            let family = |k: &String| k.split_once(':').is_some_and(|(f, _)| f == kernel);
            if self.variants.iter().filter(|k| family(k)).count() >= VARIANTS_KEPT {
                if let Some(i) = self.variants.iter().position(family) {
                    if let Some(old) = self.variants.remove(i) {
                        self.by_key.remove(&old);
                    }
                }
            }
            self.variants.push_back(key.to_string());
        }
        self.by_key.insert(key.to_string(), p);
    }
}

/// A compiled compute pipeline and its bind group layout.
pub(crate) struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
}

impl GpuBackend {
    /// The pipeline cached under `key`, compiled from `source()` (WGSL,
    /// entry point `main`, group 0 holding `bindings` storage buffers, all
    /// read-write but the last, the parameters) the first time.
    ///
    /// The layout is spelled out rather than derived from the shader: a
    /// kernel that leaves a binding unused keeps its place in the group.
    pub(crate) fn pipeline(
        &self,
        key: &str,
        bindings: u32,
        source: impl FnOnce() -> String,
    ) -> Result<Arc<Pipeline>> {
        let mut cache = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.by_key.get(key).cloned() {
            cache.used(key);
            return Ok(p);
        }
        // A kernel that does not compile must be an error, not a pipeline
        // that wgpu marks invalid and a dispatch that silently does nothing.
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let label = format!("tensorzone kernel {key}");
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&label),
                source: wgpu::ShaderSource::Wgsl(source().into()),
            });
        let entries: Vec<wgpu::BindGroupLayoutEntry> = (0..bindings)
            .map(|binding| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    // The parameters, bound last, are read-only: the
                    // kernels' loop bounds read from them are then uniform.
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: binding + 1 == bindings,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&label),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&label),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        let invalid = pollster::block_on(invalid.pop());
        let internal = pollster::block_on(internal.pop());
        let oom = pollster::block_on(oom.pop());
        if let Some(e) = invalid.or(internal).or(oom) {
            self.check_alive()?;
            return Err(Error::Backend {
                detail: format!("kernel {key} did not compile: {e}"),
            });
        }
        let p = Arc::new(Pipeline { pipeline, layout });
        cache.insert(key, Arc::clone(&p));
        self.pipelines_compiled.fetch_add(1, Ordering::Relaxed);
        Ok(p)
    }

    /// Records `p` once over `bindings` (group 0, bindings 0, 1, … in
    /// order) and a parameter slot holding `params` (bound last), with
    /// `groups` workgroups. The kernel joins the open batch, which goes to
    /// the queue before any other submission, map or wait
    /// ([`GpuBackend::flush_kernels`]), or when its slots run out.
    pub(crate) fn dispatch(
        &self,
        p: &Pipeline,
        bindings: &[wgpu::BufferBinding<'_>],
        params: &[u32],
        groups: [u32; 3],
    ) -> Result<()> {
        self.check_alive()?;
        if params.len() as u64 * 4 > PARAM_SLOT {
            return Err(Error::Backend {
                detail: format!(
                    "{} kernel parameters do not fit a parameter slot",
                    params.len()
                ),
            });
        }
        let mut batch = self.kernels.lock().unwrap_or_else(|p| p.into_inner());
        if batch.params_buffer.is_none() {
            let buffer = self.create_internal(
                PARAM_SLOT * PARAM_SLOTS,
                "tensorzone kernel parameters (device)",
                "kernel parameter buffer",
            )?;
            batch.params_buffer = Some(buffer);
        }
        if batch.params.len() as u64 >= PARAM_SLOT * PARAM_SLOTS {
            self.submit_batch(&mut batch);
        }
        let offset = batch.params.len() as u64;
        batch.params.extend_from_slice(bytemuck::cast_slice(params));
        batch.params.resize((offset + PARAM_SLOT) as usize, 0);
        let KernelBatch {
            params_buffer: Some(pbuf),
            encoder,
            ..
        } = &mut *batch
        else {
            return Err(Error::Backend {
                detail: "kernel parameter buffer missing".into(),
            });
        };
        let mut entries: Vec<wgpu::BindGroupEntry<'_>> = bindings
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(b.clone()),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: bindings.len() as u32,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: pbuf,
                offset,
                size: wgpu::BufferSize::new(PARAM_SLOT),
            }),
        });
        // A binding wgpu refuses must be an error, not a kernel that never
        // runs while its output is taken as written.
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("tensorzone kernel"),
            layout: &p.layout,
            entries: &entries,
        });
        if let Some(e) = pollster::block_on(invalid.pop()) {
            batch.params.truncate(offset as usize);
            return Err(Error::Backend {
                detail: format!("kernel bindings refused: {e}"),
            });
        }
        let enc = encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("tensorzone kernels"),
                })
        });
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("tensorzone kernel"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&p.pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        Ok(())
    }

    /// Submits the kernels recorded so far, if any. Everything else that
    /// reaches the queue or maps memory calls it first, so the queue sees
    /// work in the order the zone was asked for it.
    pub(crate) fn flush_kernels(&self) {
        let mut batch = self.kernels.lock().unwrap_or_else(|p| p.into_inner());
        self.submit_batch(&mut batch);
    }

    fn submit_batch(&self, batch: &mut KernelBatch) {
        let Some(enc) = batch.encoder.take() else {
            return;
        };
        // The kernels already returned: an error wgpu finds now (in
        // encoding or at submission) is kept for the next call to report,
        // rather than lost to the uncaptured-error handler.
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        if let Some(pbuf) = &batch.params_buffer {
            // Applied at the start of this submission: after the batches
            // before it, which read the same slots, have run.
            self.queue.write_buffer(pbuf, 0, &batch.params);
        }
        batch.params.clear();
        self.queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(invalid.pop()) {
            let mut held = self.batch_error.lock().unwrap_or_else(|p| p.into_inner());
            held.get_or_insert_with(|| e.to_string());
            self.batch_failed.store(true, Ordering::Release);
        }
    }

    /// Opens the best adapter wgpu finds, with all of its limits.
    pub(crate) fn open(power: wgpu::PowerPreference, label: &str) -> Result<GpuBackend> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        // GL adapters lack what compute needs (and are slow to probe); the
        // primary backends are Vulkan, Metal, DX12 and WebGPU.
        desc.backends &= wgpu::Backends::PRIMARY;
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: power,
            force_fallback_adapter: false,
            compatible_surface: None,
            ..Default::default()
        }))
        .map_err(|e| Error::NoAdapter {
            reason: e.to_string(),
        })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let uma = adapter
            .features()
            .contains(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS)
            && matches!(
                info.device_type,
                wgpu::DeviceType::Cpu | wgpu::DeviceType::IntegratedGpu
            );
        let mut features = adapter.features() & wgpu::Features::SHADER_F16;
        if uma {
            features |= wgpu::Features::MAPPABLE_PRIMARY_BUFFERS;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some(label),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::default(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::NoAdapter {
            reason: format!("{} ({:?}): {e}", info.name, info.backend),
        })?;
        let lost = Arc::new(LostState::default());
        let flag = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut r) = flag.reason.lock() {
                *r = format!("{reason:?}: {message}");
            }
            flag.lost.store(true, Ordering::Release);
        });
        // wgpu's default handler panics; a library must not, so errors that
        // escape our error scopes (a caller's kernel, say) are reported here.
        device.on_uncaptured_error(Arc::new(|e| eprintln!("tensorzone: wgpu error: {e}")));
        Ok(GpuBackend {
            device,
            queue,
            info,
            limits,
            uma,
            lost,
            scratch: Mutex::new(None),
            scratch_created: std::sync::atomic::AtomicU64::new(0),
            pipelines: Default::default(),
            kernels: Mutex::new(KernelBatch::default()),
            pipelines_compiled: std::sync::atomic::AtomicU64::new(0),
            batch_error: Mutex::new(None),
            batch_failed: Default::default(),
        })
    }

    #[inline]
    pub(crate) fn check_alive(&self) -> Result<()> {
        if self.batch_failed.load(Ordering::Acquire) {
            return Err(self.take_batch_error());
        }
        if !self.lost.lost.load(Ordering::Acquire) {
            return Ok(());
        }
        let reason = match self.lost.reason.lock() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        };
        Err(Error::DeviceLost { reason })
    }

    /// The error of a batch of kernels that failed at submission, reported
    /// once (by whichever call comes next, on any thread).
    #[cold]
    fn take_batch_error(&self) -> Error {
        let mut held = self.batch_error.lock().unwrap_or_else(|p| p.into_inner());
        self.batch_failed.store(false, Ordering::Release);
        Error::Backend {
            detail: format!(
                "kernels submitted earlier failed, their outputs are not written: {}",
                held.take().unwrap_or_default()
            ),
        }
    }

    /// Bytes of the scratch and kernel parameter buffers (0 when none is
    /// held): device memory outside the pools.
    pub(crate) fn scratch_bytes(&self) -> u64 {
        let scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let batch = self.kernels.lock().unwrap_or_else(|p| p.into_inner());
        scratch.as_ref().map_or(0, |b| b.size())
            + batch.params_buffer.as_ref().map_or(0, |b| b.size())
    }

    /// Drops the scratch buffer; returns its bytes. A later copy within one
    /// slab makes a new one.
    pub(crate) fn release_scratch(&self) -> u64 {
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        scratch.take().map_or(0, |b| b.size())
    }

    /// Like `check_alive`, after letting wgpu run its callbacks: wgpu reports
    /// a loss (even `Device::destroy`) only when the device is polled, so
    /// the paths that are not per-allocation hot poll first.
    pub(crate) fn check_alive_polled(&self) -> Result<()> {
        self.poll();
        self.check_alive()
    }

    /// Like `check_alive`, after waiting for the queue to drain: wgpu fires
    /// the device-lost callback of a destroyed device only once its queue
    /// is empty. For error paths, where the wait costs nothing that matters.
    pub(crate) fn check_alive_waited(&self) -> Result<()> {
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        self.check_alive()
    }

    /// Creates a buffer inside error scopes, so an out-of-memory or invalid
    /// request comes back as a value instead of wgpu's uncaptured-error path.
    pub(crate) fn create_buffer(
        &self,
        size: u64,
        usage: wgpu::BufferUsages,
        label: &str,
        mapped: bool,
    ) -> Result<wgpu::Buffer, CreateError> {
        self.check_alive_polled().map_err(CreateError::Other)?;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: mapped,
        });
        let invalid = pollster::block_on(invalid.pop());
        let oom = pollster::block_on(oom.pop());
        if let Some(e) = oom {
            return Err(CreateError::OutOfMemory(e.to_string()));
        }
        if let Some(e) = invalid {
            self.check_alive().map_err(CreateError::Other)?;
            return Err(CreateError::Other(Error::Backend {
                detail: e.to_string(),
            }));
        }
        Ok(buffer)
    }

    /// A device buffer of the backend's own (outside the pools), counted
    /// with the zone's device blocks; `what` names it in an out-of-memory
    /// error.
    fn create_internal(&self, size: u64, label: &str, what: &str) -> Result<wgpu::Buffer> {
        let buffer = self
            .create_buffer(size, DEVICE_USAGE, label, false)
            .map_err(|e| match e {
                CreateError::OutOfMemory(detail) => Error::OutOfMemory {
                    requested: size,
                    reserved: 0,
                    live: 0,
                    cached: 0,
                    largest_free: 0,
                    limit: None,
                    detail: format!("{what}: {detail}"),
                },
                CreateError::Other(e) => e,
            })?;
        self.scratch_created.fetch_add(1, Ordering::Relaxed);
        Ok(buffer)
    }

    /// Submits a copy or clear. One wgpu refuses (a buffer destroyed
    /// through a binding, say) is an error, not bytes counted as moved
    /// and a message on the uncaptured-error handler.
    fn submit(&self, encoder: wgpu::CommandEncoder) -> Result<wgpu::SubmissionIndex> {
        self.check_alive()?;
        self.flush_kernels();
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let index = self.queue.submit([encoder.finish()]);
        match pollster::block_on(invalid.pop()) {
            Some(e) => Err(Error::Backend {
                detail: format!("copy refused: {e}"),
            }),
            None => Ok(index),
        }
    }

    fn encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("tensorzone copy"),
            })
    }

    pub(crate) fn copy(
        &self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        len: u64,
    ) -> Result<()> {
        self.check_alive_polled()?;
        let mut enc = self.encoder();
        if src != dst {
            enc.copy_buffer_to_buffer(src, src_offset, dst, dst_offset, Some(len));
            return self.submit(enc).map(|_| ());
        }
        // Hold the scratch lock until the copy is submitted, so no other
        // copy can be encoded in between; queue order does the rest.
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        if scratch.as_ref().is_none_or(|b| b.size() < len) {
            // Rounded up so that growing copies rarely make another, but
            // never past what one buffer may hold (`len` fits: it is a
            // range of one buffer).
            let size = len
                .next_power_of_two()
                .max(1 << 20)
                .min(self.limits.max_buffer_size)
                .max(len);
            let buffer = self.create_internal(
                size,
                "tensorzone scratch (device)",
                "scratch buffer for a copy within one slab",
            )?;
            *scratch = Some(buffer);
        }
        let Some(tmp) = scratch.as_ref() else {
            return Err(Error::Backend {
                detail: "scratch buffer missing".into(),
            });
        };
        enc.copy_buffer_to_buffer(src, src_offset, tmp, 0, Some(len));
        enc.copy_buffer_to_buffer(tmp, 0, dst, dst_offset, Some(len));
        self.submit(enc).map(|_| ())
    }

    pub(crate) fn clear(&self, buffer: &wgpu::Buffer, offset: u64, len: u64) -> Result<()> {
        self.check_alive_polled()?;
        let mut enc = self.encoder();
        enc.clear_buffer(buffer, offset, Some(len));
        self.submit(enc).map(|_| ())
    }

    /// Copies `data` into a buffer mapped for writing, at byte `offset`.
    pub(crate) fn write_mapped(buffer: &wgpu::Buffer, offset: u64, data: &[u8]) -> Result<()> {
        Self::with_mapped_range(buffer, offset..offset + data.len() as u64, |mut w| {
            w.copy_from_slice(data)
        })
    }

    /// Zeroes `range` of a buffer mapped for writing.
    pub(crate) fn zero_mapped(buffer: &wgpu::Buffer, range: std::ops::Range<u64>) -> Result<()> {
        Self::with_mapped_range(buffer, range, |mut w| w.fill(0))
    }

    /// Hands `f` the bytes `range` of a buffer mapped for writing; the
    /// mapped view itself is widened to wgpu's alignment.
    fn with_mapped_range(
        buffer: &wgpu::Buffer,
        range: std::ops::Range<u64>,
        f: impl FnOnce(wgpu::WriteOnly<'_, [u8]>),
    ) -> Result<()> {
        let start = range.start - range.start % wgpu::MAP_ALIGNMENT;
        let end = super::copy_len(range.end).min(buffer.size());
        let mut view = buffer
            .get_mapped_range_mut(start..end)
            .map_err(|e| Error::MapFailed {
                detail: e.to_string(),
            })?;
        let at = (range.start - start) as usize;
        f(view.slice(at..at + (range.end - range.start) as usize));
        Ok(())
    }

    /// Hands a closure the mapped bytes `0..len` of a buffer mapped for writing.
    pub(crate) fn with_mapped<R>(
        buffer: &wgpu::Buffer,
        len: u64,
        f: impl FnOnce(wgpu::WriteOnly<'_, [u8]>) -> R,
    ) -> Result<R> {
        let end = super::copy_len(len).min(buffer.size());
        let mut view = buffer
            .get_mapped_range_mut(0..end)
            .map_err(|e| Error::MapFailed {
                detail: e.to_string(),
            })?;
        Ok(f(view.slice(..len as usize)))
    }

    /// Unmaps an upload buffer and copies its first `len` bytes to `dst`;
    /// then starts re-mapping it, reporting through the returned flag.
    pub(crate) fn upload_from_staging(
        &self,
        staging: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        len: u64,
    ) -> Result<Arc<AtomicU8>> {
        staging.unmap();
        let result = self.copy(staging, 0, dst, dst_offset, len);
        let flag = Arc::new(AtomicU8::new(MAP_PENDING));
        let cb = Arc::clone(&flag);
        staging.map_async(wgpu::MapMode::Write, .., move |r| {
            cb.store(
                if r.is_ok() { MAP_READY } else { MAP_FAILED },
                Ordering::Release,
            );
        });
        result.map(|_| flag)
    }

    /// Copies `out.len()` bytes from `src` at `src_offset` into `out`
    /// through a readback buffer, and waits for them.
    pub(crate) fn download(
        &self,
        src: &wgpu::Buffer,
        src_offset: u64,
        staging: &wgpu::Buffer,
        out: &mut [u8],
    ) -> Result<()> {
        let len = super::copy_len(out.len() as u64);
        let mut enc = self.encoder();
        enc.copy_buffer_to_buffer(src, src_offset, staging, 0, Some(len));
        enc.map_buffer_on_submit(staging, wgpu::MapMode::Read, 0..len, |_| {});
        let index = self.submit(enc)?;
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| Error::Backend {
                detail: e.to_string(),
            })?;
        self.check_alive()?;
        let result = staging
            .get_mapped_range(0..len)
            .map(|view| out.copy_from_slice(&view[..out.len()]))
            .map_err(|e| Error::MapFailed {
                detail: e.to_string(),
            });
        staging.unmap();
        result
    }

    /// Maps `range` of `buffer` and waits until the mapping is done (after
    /// all submitted work that uses the buffer).
    fn map_blocking(
        &self,
        buffer: &wgpu::Buffer,
        mode: wgpu::MapMode,
        range: std::ops::Range<u64>,
    ) -> Result<()> {
        self.check_alive()?;
        // Kernels recorded on this buffer run before it is mapped.
        self.flush_kernels();
        let flag = Arc::new(AtomicU8::new(MAP_PENDING));
        let cb = Arc::clone(&flag);
        buffer.map_async(mode, range, move |r| {
            cb.store(
                if r.is_ok() { MAP_READY } else { MAP_FAILED },
                Ordering::Release,
            );
        });
        self.wait_idle()?;
        if self.map_outcome(&flag) != MAP_READY {
            // Not mapped, yet a pending map would block the next one.
            buffer.unmap();
            self.check_alive_waited()?;
            return Err(Error::MapFailed {
                detail: format!("mapping {:?} did not complete", buffer),
            });
        }
        // The batch flushed above may have been refused: its outputs, this
        // buffer's bytes among them perhaps, were then never written.
        if let Err(e) = self.check_alive() {
            buffer.unmap();
            return Err(e);
        }
        Ok(())
    }

    /// What became of a map once the device has been waited for. The
    /// thread whose poll completes a map runs its callback, after it lets
    /// go of the device: with another thread polling too, the wait here
    /// can return first, so a pending flag is polled for, not taken for a
    /// failure (up to `MAP_CALLBACK_WAIT`).
    fn map_outcome(&self, flag: &AtomicU8) -> u8 {
        let start = std::time::Instant::now();
        loop {
            let state = flag.load(Ordering::Acquire);
            let lost = self.lost.lost.load(Ordering::Acquire);
            if state != MAP_PENDING || lost || start.elapsed() > MAP_CALLBACK_WAIT {
                return state;
            }
            self.poll();
            std::thread::yield_now();
        }
    }

    /// Writes `data` straight into a mappable device buffer at `offset`
    /// (UMA: one copy, no staging).
    pub(crate) fn write_direct(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        let end = offset + super::copy_len(data.len() as u64);
        self.map_blocking(buffer, wgpu::MapMode::Write, offset..end)?;
        let written = buffer
            .get_mapped_range_mut(offset..end)
            .map(|mut view| {
                // Zero the word padding too: the range may be reused.
                let (mut head, mut tail) = view.slice(..).split_at(data.len());
                head.copy_from_slice(data);
                tail.fill(0);
            })
            .map_err(|e| Error::MapFailed {
                detail: e.to_string(),
            });
        buffer.unmap();
        written
    }

    /// Reads a mappable device buffer at `offset` into `out` (UMA).
    pub(crate) fn read_direct(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<()> {
        let end = offset + super::copy_len(out.len() as u64);
        self.map_blocking(buffer, wgpu::MapMode::Read, offset..end)?;
        let read = buffer
            .get_mapped_range(offset..end)
            .map(|view| out.copy_from_slice(&view[..out.len()]))
            .map_err(|e| Error::MapFailed {
                detail: e.to_string(),
            });
        buffer.unmap();
        read
    }

    /// Lets map callbacks run without blocking.
    pub(crate) fn poll(&self) {
        // A failed poll only means no callback ran; the pending buffers are
        // checked again later.
        let _ = self.device.poll(wgpu::PollType::Poll);
    }

    /// Waits for all work asked for so far (recorded kernels are submitted
    /// first).
    pub(crate) fn wait_idle(&self) -> Result<()> {
        self.flush_kernels();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Backend {
                detail: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GPU backend, or `None` (said why) where the environment or the
    /// machine offers none; `TENSORZONE_REQUIRE_GPU=1` makes that a failure.
    fn backend() -> Option<GpuBackend> {
        let env = |k: &str| std::env::var(k).unwrap_or_default();
        if env("TENSORZONE_BACKEND").eq_ignore_ascii_case("cpu") {
            eprintln!("skipping: TENSORZONE_BACKEND=cpu");
            return None;
        }
        match GpuBackend::open(wgpu::PowerPreference::HighPerformance, "test") {
            Ok(g) => Some(g),
            Err(e) if env("TENSORZONE_REQUIRE_GPU") == "1" => {
                panic!("TENSORZONE_REQUIRE_GPU=1 but no GPU backend: {e}")
            }
            Err(e) => {
                eprintln!("skipping: {e}");
                None
            }
        }
    }

    /// A plain storage buffer of `size` bytes.
    fn storage(g: &GpuBackend, size: u64) -> wgpu::Buffer {
        g.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    }

    const GOOD: &str = "@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@group(0) @binding(1) var<storage, read> p: array<u32>;
@compute @workgroup_size(1) fn main() { a[0] = p[0]; }";

    #[test]
    fn a_kernel_that_does_not_compile_is_an_error_and_is_not_cached() {
        let Some(g) = backend() else { return };
        let bad = GOOD.replace("a[0] = p[0];", "a[0] = undefined_name;");
        let err = g.pipeline("probe", 2, || bad).err();
        assert!(
            matches!(&err, Some(Error::Backend { detail }) if detail.contains("kernel probe did not compile")),
            "{err:?}"
        );
        assert_eq!(g.pipelines_compiled.load(Ordering::Relaxed), 0);
        g.pipeline("probe", 2, || GOOD.to_string()).unwrap();
        g.pipeline("probe", 2, || unreachable!("cached")).unwrap();
        assert_eq!(g.pipelines_compiled.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn variants_of_one_kernel_are_kept_up_to_a_bound_least_recently_used_evicted_first() {
        let Some(g) = backend() else { return };
        let n = VARIANTS_KEPT + 3;
        for i in 0..n {
            g.pipeline(&format!("probe:{i}"), 2, || GOOD.to_string())
                .unwrap();
            // probe:0 is used all along: it is never the oldest.
            g.pipeline("probe:0", 2, || unreachable!("kept")).unwrap();
        }
        // A key without a variant, and another kernel's variants, are
        // not counted against `probe`'s.
        g.pipeline("plain", 2, || GOOD.to_string()).unwrap();
        g.pipeline("other:0", 2, || GOOD.to_string()).unwrap();
        let cache = g.pipelines.lock().unwrap();
        assert_eq!(cache.by_key.len(), VARIANTS_KEPT + 2);
        for i in 0..n {
            let kept = cache.by_key.contains_key(&format!("probe:{i}"));
            assert_eq!(kept, i == 0 || i >= 4, "probe:{i}");
        }
        assert!(cache.by_key.contains_key("plain") && cache.by_key.contains_key("other:0"));
        drop(cache);
        // An evicted variant compiles again.
        g.pipeline("probe:1", 2, || GOOD.to_string()).unwrap();
        assert_eq!(g.pipelines_compiled.load(Ordering::Relaxed), n as u64 + 3);
    }

    #[test]
    fn a_batch_that_fails_at_submission_is_reported_by_the_next_call() {
        let Some(g) = backend() else { return };
        let p = g.pipeline("probe", 2, || GOOD.to_string()).unwrap();
        let buffer = storage(&g, 256);
        let binding = wgpu::BufferBinding {
            buffer: &buffer,
            offset: 0,
            size: wgpu::BufferSize::new(4),
        };
        g.dispatch(&p, &[binding], &[1], [1, 1, 1]).unwrap();
        // Gone before the batch reaches the queue.
        buffer.destroy();
        g.flush_kernels();
        let err = g.check_alive().err();
        assert!(
            matches!(&err, Some(Error::Backend { detail }) if detail.contains("kernels submitted earlier failed")),
            "{err:?}"
        );
        // Reported once; the device works on.
        g.check_alive().unwrap();
        g.wait_idle().unwrap();
    }

    #[test]
    fn a_binding_wgpu_refuses_is_an_error_and_records_nothing() {
        let Some(g) = backend() else { return };
        let p = g.pipeline("probe", 2, || GOOD.to_string()).unwrap();
        let buffer = storage(&g, 1024);
        // An offset off the adapter's storage binding alignment.
        let align = u64::from(g.limits.min_storage_buffer_offset_alignment);
        if align <= 4 {
            eprintln!("skipping: this adapter takes any 4-byte-aligned offset");
            return;
        }
        let misaligned = wgpu::BufferBinding {
            buffer: &buffer,
            offset: align / 2,
            size: wgpu::BufferSize::new(4),
        };
        let err = g.dispatch(&p, &[misaligned], &[1], [1, 1, 1]).err();
        assert!(
            matches!(&err, Some(Error::Backend { detail }) if detail.contains("kernel bindings refused")),
            "{err:?}"
        );
        let batch = g.kernels.lock().unwrap();
        assert!(batch.encoder.is_none() && batch.params.is_empty());
        drop(batch);
        let aligned = wgpu::BufferBinding {
            buffer: &buffer,
            offset: 0,
            size: wgpu::BufferSize::new(4),
        };
        g.dispatch(&p, &[aligned], &[1], [1, 1, 1]).unwrap();
        assert_eq!(g.kernels.lock().unwrap().params.len() as u64, PARAM_SLOT);
    }
}
