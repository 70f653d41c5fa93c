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

/// Every backend to test on, with default settings.
pub fn zones() -> Vec<Zone> {
    zones_with(Zone::builder())
}
