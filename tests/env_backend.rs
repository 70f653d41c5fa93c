//! `TENSORZONE_BACKEND` overrides the builder. This binary holds one test
//! only, because it sets the variable and tests in one process share it.

mod common;

use tensorzone::*;

#[test]
fn env_variable_overrides_the_builder() {
    let original = std::env::var(BACKEND_ENV).ok();
    assert_eq!(BACKEND_ENV, "TENSORZONE_BACKEND");

    // Whether this machine has a usable adapter (asked with the variable unset).
    std::env::remove_var(BACKEND_ENV);
    assert_eq!(BackendChoice::from_env(), Ok(None));
    let gpu = Zone::builder().backend(BackendChoice::Gpu).build();
    if common::gpu_required() {
        assert!(
            gpu.is_ok(),
            "TENSORZONE_REQUIRE_GPU=1 but no GPU zone: {gpu:?}"
        );
    }
    let has_gpu = gpu.is_ok();
    if let Err(e) = &gpu {
        assert!(matches!(e, Error::NoAdapter { .. }), "{e:?}");
    }
    drop(gpu);

    // cpu: every choice ends on the CPU
    for v in ["cpu", "CPU", " Cpu "] {
        std::env::set_var(BACKEND_ENV, v);
        assert_eq!(
            BackendChoice::from_env(),
            Ok(Some(BackendChoice::Cpu)),
            "{v:?}"
        );
        for choice in [BackendChoice::Auto, BackendChoice::Gpu, BackendChoice::Cpu] {
            let z = Zone::builder().backend(choice).build().unwrap();
            assert_eq!(z.backend(), BackendKind::Cpu, "{v:?} over {choice:?}");
        }
        assert_eq!(Zone::new().unwrap().backend(), BackendKind::Cpu, "{v:?}");
    }

    // gpu: every choice ends on the GPU, when there is one
    std::env::set_var(BACKEND_ENV, "gpu");
    assert_eq!(BackendChoice::from_env(), Ok(Some(BackendChoice::Gpu)));
    if has_gpu {
        for choice in [BackendChoice::Auto, BackendChoice::Gpu, BackendChoice::Cpu] {
            let z = Zone::builder().backend(choice).build().unwrap();
            assert_eq!(z.backend(), BackendKind::Gpu, "gpu over {choice:?}");
        }
    } else {
        let r = Zone::builder().backend(BackendChoice::Cpu).build();
        assert!(matches!(r, Err(Error::NoAdapter { .. })), "{r:?}");
    }

    // auto: the builder's choice is overridden by auto
    std::env::set_var(BACKEND_ENV, "auto");
    assert_eq!(BackendChoice::from_env(), Ok(Some(BackendChoice::Auto)));
    let z = Zone::builder().backend(BackendChoice::Cpu).build().unwrap();
    let want = if has_gpu {
        BackendKind::Gpu
    } else {
        BackendKind::Cpu
    };
    assert_eq!(z.backend(), want, "auto");

    // empty: as if unset, the builder decides
    std::env::set_var(BACKEND_ENV, "");
    assert_eq!(BackendChoice::from_env(), Ok(None));
    let z = Zone::builder().backend(BackendChoice::Cpu).build().unwrap();
    assert_eq!(z.backend(), BackendKind::Cpu);

    // a bad value is a typed error for every constructor that reads it
    for bad in ["tpu", "cuda", "gpu0"] {
        std::env::set_var(BACKEND_ENV, bad);
        let e = Error::InvalidBackendEnv { value: bad.into() };
        assert_eq!(BackendChoice::from_env(), Err(e.clone()));
        assert_eq!(Zone::new().err(), Some(e.clone()));
        assert_eq!(
            Zone::builder().backend(BackendChoice::Cpu).build().err(),
            Some(e.clone())
        );
        assert!(e.to_string().contains(bad), "{e}");
    }
    // Zone::cpu() does not read the variable
    let z = Zone::cpu();
    assert_eq!(z.backend(), BackendKind::Cpu);

    match original {
        Some(v) => std::env::set_var(BACKEND_ENV, v),
        None => std::env::remove_var(BACKEND_ENV),
    }
}
