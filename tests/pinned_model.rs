//! A reused pinned buffer uploads exactly what was written and zeros
//! everywhere else, for random scattered, overlapping writes (more of them
//! than the buffer keeps as separate ranges) and for `with_bytes`.

mod common;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tensorzone::{Tensor, Zone};

/// One case: an element count and writes of (offset, length, value).
#[derive(Debug, Clone)]
struct Case {
    len: usize,
    writes: Vec<(usize, usize, u16)>,
    with_bytes_at: Option<usize>,
}

fn pinned_cases() -> impl Strategy<Value = Case> {
    // Short buffers with long writes overlap and merge; long buffers with
    // many short writes keep them apart, past the 64 ranges after which
    // the rest is zeroed at once.
    let few = (1usize..400, 24usize, 100usize);
    let many = (1000usize..3000, 6usize, 300usize);
    prop_oneof![Just(few), Just(many)].prop_flat_map(|(lens, longest, writes)| {
        lens.prop_flat_map(move |len| writes_of(len, longest, writes))
    })
}

fn writes_of(len: usize, longest: usize, writes: usize) -> impl Strategy<Value = Case> {
    (
        prop::collection::vec((0..len, 0..=longest, any::<u16>()), 0..writes),
        prop::option::weighted(0.2, 0..writes),
    )
        .prop_map(move |(writes, with_bytes_at)| Case {
            len,
            writes: writes
                .into_iter()
                .map(|(at, n, v)| (at, n.min(len - at), v))
                .collect(),
            with_bytes_at,
        })
}

fn run_case(zone: &Zone, case: &Case) -> Result<(), TestCaseError> {
    let n = case.len;
    // Leave earlier bytes in the pooled staging buffer of this size.
    let mut dirty = zone.pinned::<u16>(n).unwrap();
    dirty.write(0, &vec![0xABCD; n]).unwrap();
    drop(Tensor::from_pinned(zone, [n], dirty).unwrap());
    zone.synchronize().unwrap();
    let created = zone.stats().staging_buffers_created;

    let mut p = zone.pinned::<u16>(n).unwrap();
    prop_assert_eq!(
        zone.stats().staging_buffers_created,
        created,
        "the staging buffer was not reused"
    );
    let mut want = vec![0u16; n];
    for (k, &(at, len, v)) in case.writes.iter().enumerate() {
        if case.with_bytes_at == Some(k) {
            // The closure writes only the first element.
            p.with_bytes(|mut b| b.slice(..2).copy_from_slice(&[1, 2]))
                .unwrap();
            want[0] = u16::from_ne_bytes([1, 2]);
        }
        let data: Vec<u16> = (0..len).map(|i| v.wrapping_add(i as u16)).collect();
        p.write(at, &data).unwrap();
        want[at..at + len].copy_from_slice(&data);
    }
    let mut t = Tensor::from_pinned(zone, [n], p).unwrap();
    prop_assert_eq!(t.to_vec().unwrap(), want);
    Ok(())
}

#[test]
fn reused_pinned_buffer_holds_only_what_was_written() {
    common::run_model(96, 32, pinned_cases(), run_case);
}
