//! With no usable adapter, `gpu` is a typed error and `auto` falls back to
//! the CPU and says why. wgpu's own `WGPU_BACKEND` variable hides every
//! adapter here: tensorzone asks only for the primary backends (Vulkan,
//! Metal, DX12, WebGPU), and `gl` is none of them. One test in its own
//! binary, because it changes the process environment.

use tensorzone::{BackendChoice, BackendKind, Error, Location, Tensor, Zone, BACKEND_ENV};

#[test]
fn gpu_required_without_adapter_is_no_adapter() {
    // SAFETY of set_var/remove_var: this binary runs this single test, so
    // no other thread reads the environment meanwhile.
    std::env::remove_var(BACKEND_ENV);
    std::env::set_var("WGPU_BACKEND", "gl");

    let err = Zone::builder()
        .backend(BackendChoice::Gpu)
        .build()
        .unwrap_err();
    match &err {
        Error::NoAdapter { reason } => assert!(!reason.is_empty()),
        other => panic!("expected NoAdapter, got {other:?}"),
    }
    assert!(err.to_string().starts_with("no GPU adapter: "), "{err}");

    let zone = Zone::builder()
        .backend(BackendChoice::Auto)
        .build()
        .unwrap();
    assert_eq!(zone.backend(), BackendKind::Cpu);
    let reason = zone
        .info()
        .fallback_reason
        .clone()
        .expect("fallback reason");
    assert!(zone.info().to_string().contains(&reason), "{}", zone.info());
    let mut t = Tensor::from_slice(&zone, [2], &[1u16, 2], Location::Device).unwrap();
    assert_eq!(t.to_vec().unwrap(), [1, 2]);

    std::env::remove_var("WGPU_BACKEND");
}
