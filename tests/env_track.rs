//! `TENSORZONE_TRACK` sets whether zones track their tensors when the
//! builder does not say. This binary holds one test only, because it sets
//! the variable and tests in one process share it.

use tensorzone::*;

fn cpu() -> ZoneBuilder {
    Zone::builder().backend(BackendChoice::Cpu)
}

#[test]
fn env_variable_sets_the_tracking_default() {
    let original = std::env::var(TRACK_ENV).ok();
    assert_eq!(TRACK_ENV, "TENSORZONE_TRACK");

    // Unset or empty: debug builds track, release builds do not.
    for unset in [None, Some(""), Some("  ")] {
        match unset {
            None => std::env::remove_var(TRACK_ENV),
            Some(v) => std::env::set_var(TRACK_ENV, v),
        }
        let z = cpu().build().unwrap();
        assert_eq!(z.tracks_tensors(), cfg!(debug_assertions), "{unset:?}");
        assert_eq!(Zone::cpu().tracks_tensors(), cfg!(debug_assertions));
        // The default zone lists a live tensor exactly when it tracks.
        let t = Tensor::<f32>::zeros(&z, [2, 3], Location::Device).unwrap();
        assert_eq!(z.leaks().len(), usize::from(cfg!(debug_assertions)));
        drop(t);
    }

    for (v, on) in [
        ("1", true),
        ("on", true),
        (" TRUE ", true),
        ("0", false),
        ("off", false),
        ("False", false),
    ] {
        std::env::set_var(TRACK_ENV, v);
        assert_eq!(cpu().build().unwrap().tracks_tensors(), on, "{v:?}");
        assert_eq!(Zone::cpu().tracks_tensors(), on, "{v:?}");
        // The builder's own word wins over the variable ...
        let z = cpu().track_tensors(!on).build().unwrap();
        assert_eq!(
            z.tracks_tensors(),
            !on,
            "{v:?} under track_tensors({})",
            !on
        );
        // ... and a budget tracks whatever either says.
        let z = cpu()
            .track_tensors(false)
            .device_budget(1 << 20)
            .build()
            .unwrap();
        assert!(z.tracks_tensors(), "{v:?} with a budget");
    }

    // A value it cannot read is a typed error, not a guess.
    std::env::set_var(TRACK_ENV, "sometimes");
    let err = cpu().build().unwrap_err();
    assert_eq!(
        err,
        Error::InvalidTrackEnv {
            value: "sometimes".into()
        }
    );
    assert!(
        err.to_string().contains("TENSORZONE_TRACK=\"sometimes\""),
        "{err}"
    );
    // ... unless the builder says, so the variable is never read.
    assert!(cpu().track_tensors(true).build().unwrap().tracks_tensors());
    // `Zone::cpu` cannot fail: it keeps the build's default.
    assert_eq!(Zone::cpu().tracks_tensors(), cfg!(debug_assertions));

    match original {
        Some(v) => std::env::set_var(TRACK_ENV, v),
        None => std::env::remove_var(TRACK_ENV),
    }
}
