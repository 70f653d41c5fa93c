//! Shared tensors (tier 4) on every backend: reference counts, weak handles,
//! copy-on-write, reads, GPU bindings, and eight threads cloning, dropping
//! and upgrading at once.

mod common;

use std::sync::{Arc, Barrier};

use tensorzone::*;

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn shared_and_weak_handles_are_send_and_sync() {
    assert_send_sync::<SharedTensor<f32>>();
    assert_send_sync::<WeakTensor<f32>>();
}

#[test]
fn clones_share_one_tensor_and_the_last_drop_frees() {
    for zone in common::zones() {
        let live0 = zone.stats().device_live_bytes;
        let t = Tensor::from_slice(&zone, [4], &[1u32, 2, 3, 4], Location::Device).unwrap();
        let a = t.into_shared();
        let live = zone.stats().device_live_bytes;
        assert!(live > live0);
        assert_eq!((a.strong_count(), a.weak_count()), (1, 0));
        let b = a.clone();
        let c = b.clone();
        assert_eq!(a.strong_count(), 3);
        assert!(a.ptr_eq(&c));
        assert_eq!(zone.stats().device_live_bytes, live, "clones copy nothing");
        assert_eq!(c.to_vec().unwrap(), [1, 2, 3, 4]);
        assert_eq!(
            (c.dims(), c.len(), c.dtype(), c.byte_len()),
            (&[4][..], 4, DType::U32, 16)
        );
        drop(a);
        drop(b);
        assert_eq!(c.strong_count(), 1);
        assert_eq!(zone.stats().device_live_bytes, live, "still alive");
        drop(c);
        assert_eq!(zone.stats().device_live_bytes, live0, "last drop frees");
    }
}

#[test]
fn weak_handles_upgrade_only_while_a_strong_one_lives() {
    for zone in common::zones() {
        let live0 = zone.stats().device_live_bytes;
        let a = Tensor::from_slice(&zone, [2], &[5i32, 6], Location::Device)
            .unwrap()
            .into_shared();
        let w = a.downgrade();
        let w2 = w.clone();
        assert_eq!(a.weak_count(), 2);
        assert_eq!(w.strong_count(), 1);
        let up = w.upgrade().expect("alive");
        assert_eq!(up.to_vec().unwrap(), [5, 6]);
        assert_eq!(a.strong_count(), 2);
        drop(up);
        drop(a);
        assert!(w.upgrade().is_none());
        assert!(w2.upgrade().is_none());
        assert_eq!(w.strong_count(), 0);
        assert_eq!(
            zone.stats().device_live_bytes,
            live0,
            "weak handles keep no memory alive"
        );
    }
}

#[test]
fn make_mut_copies_only_when_another_strong_handle_exists() {
    for zone in common::zones() {
        // unique: no copy
        let mut a = Tensor::from_slice(&zone, [3], &[1u8, 2, 3], Location::Device)
            .unwrap()
            .into_shared();
        let s0 = zone.stats();
        a.make_mut().unwrap().write_device(&[4, 5, 6]).unwrap();
        let s1 = zone.stats();
        assert_eq!(s1.device_to_device, s0.device_to_device, "no copy");
        assert_eq!(s1.tensors_created, s0.tensors_created);
        assert_eq!(a.to_vec().unwrap(), [4, 5, 6]);

        // shared: one device copy, the other handle keeps the old contents
        let b = a.clone();
        let s0 = zone.stats();
        a.make_mut().unwrap().write_device(&[7, 8, 9]).unwrap();
        assert_eq!(
            zone.stats().device_to_device.calls,
            s0.device_to_device.calls + 1
        );
        assert!(!a.ptr_eq(&b));
        assert_eq!((a.strong_count(), b.strong_count()), (1, 1));
        assert_eq!(b.to_vec().unwrap(), [4, 5, 6]);
        assert_eq!(a.to_vec().unwrap(), [7, 8, 9]);

        // host-current contents are copied on the host
        let mut h = Tensor::from_slice(&zone, [2], &[1.5f32, 2.5], Location::Host)
            .unwrap()
            .into_shared();
        let h2 = h.clone();
        h.make_mut().unwrap().as_mut_slice().unwrap()[0] = -1.0;
        assert_eq!(h2.to_vec().unwrap(), [1.5, 2.5]);
        assert_eq!(h.to_vec().unwrap(), [-1.0, 2.5]);

        // only weak handles: no copy, and they stop upgrading
        let w = a.downgrade();
        let s0 = zone.stats();
        a.make_mut().unwrap().write_host(&[1, 1, 1]).unwrap();
        assert_eq!(zone.stats().device_to_device, s0.device_to_device);
        assert!(w.upgrade().is_none());
        assert_eq!(a.to_vec().unwrap(), [1, 1, 1]);
    }
}

#[test]
fn shared_reads_move_data_once() {
    for zone in common::zones() {
        let mut t = Tensor::<u16>::zeros(&zone, [3], Location::Device).unwrap();
        t.write_device(&[9, 8, 7]).unwrap();
        let s = t.into_shared();
        let d0 = zone.stats().device_to_host;
        {
            let r = s.read().unwrap();
            assert_eq!(&*r, &[9, 8, 7]);
        }
        assert_eq!(s.to_vec().unwrap(), [9, 8, 7]);
        s.to_host().unwrap();
        assert_eq!(
            zone.stats().device_to_host.calls,
            d0.calls + 1,
            "one download"
        );
        assert!(s.residency().is_synced());
        let mut owned = s.to_owned_tensor().unwrap();
        assert_eq!(owned.to_vec().unwrap(), [9, 8, 7]);

        let h = Tensor::from_slice(&zone, [2], &[1u16, 2], Location::Host)
            .unwrap()
            .into_shared();
        let u0 = zone.stats().host_to_device;
        h.to_device().unwrap();
        h.to_device().unwrap();
        assert_eq!(
            zone.stats().host_to_device.calls,
            u0.calls + 1,
            "one upload"
        );
        if zone.wgpu_device().is_none() {
            assert_eq!(h.binding().err(), Some(Error::NeedsGpu { op: "binding" }));
        }
    }
}

const READ_KERNEL: &str = r#"
@group(0) @binding(0) var<storage, read_write> weights: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i < arrayLength(&out)) {
        out[i] = weights[i] + 1u;
    }
}
"#;

#[test]
fn kernels_read_shared_tensors_through_their_binding() {
    for zone in common::zones() {
        if zone.wgpu_device().is_none() {
            continue;
        }
        let n = 100usize;
        let w: Vec<u32> = (0..n as u32).map(|i| i * i).collect();
        let weights = Tensor::from_slice(&zone, [n], &w, Location::Host)
            .unwrap()
            .into_shared();
        let other = weights.clone();
        for round in 0..2 {
            let mut out = Tensor::<u32>::empty(&zone, [n], Location::Device).unwrap();
            common::dispatch(
                &zone,
                READ_KERNEL,
                vec![
                    wgpu::BindingResource::Buffer(other.binding().unwrap()),
                    wgpu::BindingResource::Buffer(out.binding().unwrap()),
                ],
                2,
            );
            out.mark_device_written().unwrap();
            let want: Vec<u32> = w.iter().map(|x| x + 1).collect();
            assert_eq!(out.to_vec().unwrap(), want, "round {round}");
        }
        assert_eq!(weights.to_vec().unwrap(), w, "weights unchanged");
    }
}

/// Eight threads clone, drop, downgrade and upgrade handles to the same
/// tensors at once. Every read sees the right contents (nothing freed
/// early) and the zone's live bytes are back to zero at the end.
#[test]
fn eight_threads_share_clone_and_upgrade_without_early_frees_or_leaks() {
    for zone in common::zones() {
        let live0 = zone.stats().device_live_bytes;
        let host0 = zone.stats().host_live_bytes;
        let tensors: Vec<SharedTensor<u32>> = (0..4u32)
            .map(|k| {
                Tensor::from_slice(&zone, [64], &[k; 64], Location::Device)
                    .unwrap()
                    .into_shared()
            })
            .collect();
        let weaks: Vec<WeakTensor<u32>> = tensors.iter().map(|t| t.downgrade()).collect();
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8usize)
            .map(|i| {
                let mine: Vec<SharedTensor<u32>> = tensors.to_vec();
                let weaks = weaks.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut upgrades = 0;
                    for round in 0..300usize {
                        let k = (i + round) % 4;
                        let c = mine[k].clone();
                        if round % 7 == 0 {
                            assert_eq!(c.read().unwrap()[63], k as u32, "thread {i} round {round}");
                        }
                        if let Some(u) = weaks[(k + 1) % 4].upgrade() {
                            upgrades += 1;
                            drop(u);
                        }
                        drop(c);
                    }
                    assert_eq!(mine[i % 4].to_vec().unwrap(), vec![(i % 4) as u32; 64]);
                    upgrades
                })
            })
            .collect();
        let upgrades: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(
            upgrades,
            8 * 300,
            "every upgrade succeeded while strong handles lived"
        );
        assert!(tensors.iter().all(|t| t.strong_count() == 1));
        drop(tensors);
        assert!(weaks.iter().all(|w| w.upgrade().is_none()));
        let s = zone.stats();
        assert_eq!(s.device_live_bytes, live0, "nothing leaked on the device");
        assert_eq!(s.host_live_bytes, host0, "nothing leaked on the host");
    }
}
