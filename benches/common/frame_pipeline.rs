//! The frame pipeline of `examples/frames.rs`, two ways, for
//! `benches/frames.rs` and `examples/host_vs_device.rs`:
//!
//! - [`tensorzone_frame`]: a pinned-buffer upload, `zone.kernels()`, every
//!   temporary in one arena (the caller resets it), `to_vec` to read back;
//! - [`Plain`]: plain wgpu as code without a pool writes it: the same WGSL
//!   (`tensorzone::kernels::wgsl`), pipelines built once, every buffer
//!   (input, temporaries, parameters, readback) created for the frame,
//!   written with `queue.write_buffer`, one submit, a mapped readback;
//! - [`plain_cpu`]: plain Rust on the CPU as code without a pool writes
//!   it: the kernels tensorzone's CPU backend runs
//!   ([`tensorzone::kernels::reference`]), every buffer a fresh `Vec`.
#![allow(dead_code)]

use tensorzone::kernels::{reference, wgsl, Kernel};
use tensorzone::{Arena, Location, Zone};

pub const SIGMA: f32 = 2.0;

/// An RGBA frame of `w` × `h` pixels.
pub struct Frame {
    pub w: usize,
    pub h: usize,
    pub rgba: Vec<u8>,
}

/// A frame with stripes, a gradient and a disc: edges everywhere.
pub fn frame(w: usize, h: usize) -> Frame {
    let mut rgba = vec![0u8; w * h * 4];
    for (p, px) in rgba.chunks_exact_mut(4).enumerate() {
        let (x, y) = (p % w, p / w);
        let stripe = if x % 64 < 32 { 200 } else { 40 };
        let (dx, dy) = (x.abs_diff(w / 2), y.abs_diff(h / 2));
        let disc = if dx * dx + dy * dy < (h / 4) * (h / 4) {
            255
        } else {
            0
        };
        px.copy_from_slice(&[stripe, (y * 255 / h) as u8, disc, 255]);
    }
    Frame { w, h, rgba }
}

/// The pipeline through tensorzone; returns the edge bytes.
pub fn tensorzone_frame(zone: &Zone, arena: &Arena, f: &Frame) -> Vec<u8> {
    let k = zone.kernels();
    let dev = Location::Device;
    let (w, h) = (f.w, f.h);
    let mut pinned = zone.pinned::<u8>(h * w * 4).unwrap();
    pinned.write(0, &f.rgba).unwrap();
    let mut input = arena.empty::<u8>([h, w, 4], dev).unwrap();
    input.upload_pinned(pinned).unwrap();
    let mut gray = arena.empty::<f32>([h, w], dev).unwrap();
    let mut tmp = arena.empty::<f32>([h, w], dev).unwrap();
    let mut blurred = arena.empty::<f32>([h, w], dev).unwrap();
    let mut edges = arena.empty::<f32>([h, w], dev).unwrap();
    let mut bytes = arena.empty::<u8>([h, w], dev).unwrap();
    k.grayscale(&mut input, &mut gray).unwrap();
    k.gaussian_blur_via(&mut gray, &mut tmp, &mut blurred, SIGMA)
        .unwrap();
    k.sobel(&mut blurred, &mut edges).unwrap();
    k.f32_to_u8(&mut edges, &mut bytes).unwrap();
    bytes.to_vec().unwrap()
}

/// The same pipeline in plain Rust on the CPU: the frame read in place,
/// a fresh `Vec` for every temporary and the result.
pub fn plain_cpu(f: &Frame) -> Vec<u8> {
    let n = f.w * f.h;
    let mut gray = vec![0.0f32; n];
    reference::grayscale_into(&f.rgba, &mut gray);
    let (mut tmp, mut blurred) = (vec![0.0; n], vec![0.0; n]);
    let weights = reference::gaussian_weights(SIGMA);
    reference::gaussian_blur_into(&gray, f.w, weights.view(), &mut tmp, &mut blurred);
    let mut edges = vec![0.0; n];
    reference::sobel_into(&blurred, f.w, &mut edges);
    let mut bytes = vec![0u8; n];
    reference::f32_to_u8(&edges, &mut bytes);
    bytes
}

/// The same pipeline in plain wgpu with per-frame buffers.
pub struct Plain {
    device: wgpu::Device,
    queue: wgpu::Queue,
    gray: (wgpu::ComputePipeline, wgpu::BindGroupLayout),
    blur: (wgpu::ComputePipeline, wgpu::BindGroupLayout),
    sobel: (wgpu::ComputePipeline, wgpu::BindGroupLayout),
    to_u8: (wgpu::ComputePipeline, wgpu::BindGroupLayout),
}

impl Plain {
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Plain {
        let build = |kernel: Kernel, bindings: u32| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("plain"),
                source: wgpu::ShaderSource::Wgsl(wgsl(kernel).unwrap().into()),
            });
            let entries: Vec<wgpu::BindGroupLayoutEntry> = (0..bindings)
                .map(|binding| wgpu::BindGroupLayoutEntry {
                    binding,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: binding + 1 == bindings,
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                })
                .collect();
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("plain"),
                entries: &entries,
            });
            let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("plain"),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("plain"),
                layout: Some(&pl),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            (pipeline, layout)
        };
        Plain {
            device: device.clone(),
            queue: queue.clone(),
            gray: build(Kernel::Grayscale, 3),
            blur: build(Kernel::GaussianBlur { sigma: SIGMA }, 3),
            sobel: build(Kernel::Sobel, 3),
            to_u8: build(Kernel::F32ToU8, 3),
        }
    }

    fn buffer(&self, size: usize, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("plain frame"),
            size: (size as u64).next_multiple_of(4),
            usage,
            mapped_at_creation: false,
        })
    }

    fn params(&self, words: &[u32]) -> wgpu::Buffer {
        let b = self.buffer(
            words.len() * 4,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        );
        self.queue.write_buffer(&b, 0, bytemuck::cast_slice(words));
        b
    }

    fn pass(
        &self,
        enc: &mut wgpu::CommandEncoder,
        (pipeline, layout): &(wgpu::ComputePipeline, wgpu::BindGroupLayout),
        buffers: &[&wgpu::Buffer],
        groups: (u32, u32),
    ) {
        let entries: Vec<wgpu::BindGroupEntry<'_>> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("plain"),
            layout,
            entries: &entries,
        });
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
    }

    pub fn frame(&self, f: &Frame) -> Vec<u8> {
        use wgpu::BufferUsages as U;
        let (w, h) = (f.w, f.h);
        let n = w * h;
        let input = self.buffer(n * 4, U::STORAGE | U::COPY_DST);
        self.queue.write_buffer(&input, 0, &f.rgba);
        let f32s = || self.buffer(n * 4, U::STORAGE);
        let (gray, tmp, blurred, edges) = (f32s(), f32s(), f32s(), f32s());
        let bytes = self.buffer(n, U::STORAGE | U::COPY_SRC);
        let readback = self.buffer(n, U::MAP_READ | U::COPY_DST);
        let flat = ((n as u32).div_ceil(256), 1);
        let radius = (3.0 * SIGMA).ceil() as u32;
        let p_gray = self.params(&[n as u32]);
        let p_rows = self.params(&[w as u32, h as u32, radius, 0, 0]);
        let p_cols = self.params(&[w as u32, h as u32, radius, 1, 0]);
        let p_sobel = self.params(&[w as u32, h as u32, 0]);
        let p_u8 = self.params(&[n.div_ceil(4) as u32, n as u32]);
        let mut enc = self.device.create_command_encoder(&Default::default());
        self.pass(&mut enc, &self.gray, &[&input, &gray, &p_gray], flat);
        // A blur invocation writes 16 outputs along its pass, a Sobel one
        // a block of 8 columns by 4 rows (see `Kernel::GaussianBlur` and
        // `Kernel::Sobel`); workgroups are 16 × 16.
        let groups = |x: usize, y: usize| ((x as u32).div_ceil(16), (y as u32).div_ceil(16));
        self.pass(
            &mut enc,
            &self.blur,
            &[&gray, &tmp, &p_rows],
            groups(w.div_ceil(16), h),
        );
        self.pass(
            &mut enc,
            &self.blur,
            &[&tmp, &blurred, &p_cols],
            groups(w, h.div_ceil(16)),
        );
        self.pass(
            &mut enc,
            &self.sobel,
            &[&blurred, &edges, &p_sobel],
            groups(w.div_ceil(8), h.div_ceil(4)),
        );
        let words = ((n.div_ceil(4)) as u32).div_ceil(256);
        self.pass(&mut enc, &self.to_u8, &[&edges, &bytes, &p_u8], (words, 1));
        enc.copy_buffer_to_buffer(
            &bytes,
            0,
            &readback,
            0,
            Some((n as u64).next_multiple_of(4)),
        );
        self.queue.submit([enc.finish()]);
        let slice = readback.slice(..);
        slice.map_async(wgpu::MapMode::Read, |r| r.expect("map"));
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
        let out = slice.get_mapped_range().expect("mapped")[..n].to_vec();
        readback.unmap();
        out
    }
}
