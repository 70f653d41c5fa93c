//! Zones for integration tests: every test runs on each backend this
//! machine offers. `TENSORZONE_REQUIRE_GPU=1` turns a missing adapter into a
//! failure; `TENSORZONE_BACKEND=cpu` limits the run to the CPU backend.
#![allow(dead_code)]

use tensorzone::{BackendChoice, BackendKind, Zone, ZoneBuilder};

/// Whether the environment demands a GPU.
pub fn gpu_required() -> bool {
    std::env::var("TENSORZONE_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

fn env_backend() -> Option<String> {
    std::env::var("TENSORZONE_BACKEND")
        .ok()
        .map(|v| v.to_ascii_lowercase())
        .filter(|v| !v.is_empty())
}

/// The GPU zone built from `builder`, or `None` (with the reason printed)
/// when this machine or the environment offers none.
pub fn gpu_zone_with(builder: ZoneBuilder) -> Option<Zone> {
    if env_backend().as_deref() == Some("cpu") {
        assert!(
            !gpu_required(),
            "TENSORZONE_REQUIRE_GPU=1 contradicts TENSORZONE_BACKEND=cpu"
        );
        eprintln!("skipping the GPU backend: TENSORZONE_BACKEND=cpu");
        return None;
    }
    match builder.backend(BackendChoice::Gpu).build() {
        Ok(z) => {
            assert_eq!(z.backend(), BackendKind::Gpu);
            Some(z)
        }
        Err(e) if gpu_required() => panic!("TENSORZONE_REQUIRE_GPU=1 but no GPU zone: {e}"),
        Err(e) => {
            eprintln!("skipping the GPU backend: {e}");
            None
        }
    }
}

/// A zone on the CPU backend built from `builder`, unless the environment
/// forces the GPU (then `None`).
pub fn cpu_zone_with(builder: ZoneBuilder) -> Option<Zone> {
    if env_backend().as_deref() == Some("gpu") {
        eprintln!("skipping the CPU backend: TENSORZONE_BACKEND=gpu");
        return None;
    }
    let z = builder
        .backend(BackendChoice::Cpu)
        .build()
        .expect("CPU zone always opens");
    assert_eq!(z.backend(), BackendKind::Cpu);
    Some(z)
}

/// Every backend to test on, each with `builder`'s settings.
pub fn zones_with(builder: ZoneBuilder) -> Vec<Zone> {
    let mut v = Vec::new();
    v.extend(cpu_zone_with(builder.clone()));
    v.extend(gpu_zone_with(builder));
    assert!(!v.is_empty(), "no backend to test");
    v
}

/// Every backend to test on, with default settings but for tracking,
/// which is off: these zones take the per-thread fast path that release
/// builds take by default (tracking zones have tests of their own, and
/// `tests/model.rs` runs on both).
pub fn zones() -> Vec<Zone> {
    zones_with(Zone::builder().track_tensors(false))
}

use tensorzone::{CopyState, Residency};

/// Only a host copy, and it is current.
pub const HOST_ONLY: Residency = Residency {
    host: CopyState::Current,
    device: CopyState::Absent,
};
/// Only a device copy, and it is current.
pub const DEVICE_ONLY: Residency = Residency {
    host: CopyState::Absent,
    device: CopyState::Current,
};
/// Both copies, both current.
pub const SYNCED: Residency = Residency {
    host: CopyState::Current,
    device: CopyState::Current,
};
/// Both copies; the host one is newer.
pub const HOST_NEWER: Residency = Residency {
    host: CopyState::Current,
    device: CopyState::Stale,
};
/// Both copies; the device one is newer.
pub const DEVICE_NEWER: Residency = Residency {
    host: CopyState::Stale,
    device: CopyState::Current,
};

/// Compiles `wgsl` (entry point `main`) on the zone's device and runs it
/// once: `bindings` are group 0's bindings 0, 1, … in order, `groups` the
/// workgroup count in x. The caller records device writes on its tensors.
pub fn dispatch(zone: &Zone, wgsl: &str, bindings: Vec<wgpu::BindingResource<'_>>, groups: u32) {
    let device = zone.wgpu_device().expect("a GPU zone");
    let queue = zone.wgpu_queue().expect("a GPU zone");
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("test kernel"),
        source: wgpu::ShaderSource::Wgsl(wgsl.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("test kernel"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let entries: Vec<wgpu::BindGroupEntry<'_>> = bindings
        .into_iter()
        .enumerate()
        .map(|(i, resource)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource,
        })
        .collect();
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("test kernel"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    });
    let mut enc = device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(groups, 1, 1);
    }
    queue.submit([enc.finish()]);
}

/// A proptest config for `zone`: [`proptest_cases`] cases, and no
/// persisted failures (a failing case is printed whole instead).
pub fn proptest_config(zone: &Zone, cpu: u32, gpu: u32) -> proptest::test_runner::Config {
    let mut config = proptest::test_runner::Config::with_cases(proptest_cases(zone, cpu, gpu));
    config.failure_persistence = None;
    config
}

/// Runs a model test on every zone this machine offers: `cpu` or `gpu`
/// random cases of `strategy` each, checked by `case`; a failure names
/// the backend.
pub fn run_model<S: proptest::strategy::Strategy>(
    cpu: u32,
    gpu: u32,
    strategy: S,
    case: impl Fn(&Zone, &S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
) {
    for zone in zones() {
        let mut runner = proptest::test_runner::TestRunner::new(proptest_config(&zone, cpu, gpu));
        if let Err(e) = runner.run(&strategy, |v| case(&zone, &v)) {
            panic!("{:?} backend ({}): {e}", zone.backend(), zone.info());
        }
    }
}

/// Proptest cases for `zone`: `PROPTEST_CASES` when set, else `cpu` or
/// `gpu` by backend.
pub fn proptest_cases(zone: &Zone, cpu: u32, gpu: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(match zone.backend() {
            BackendKind::Cpu => cpu,
            BackendKind::Gpu => gpu,
        })
}

/// An empty folder of its own under the system's temp folder, for tests
/// of files: `tag` and this process's id name it, and what an earlier run
/// left there is removed first.
pub fn temp_folder(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tensorzone-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
