//! A first look at tensorzone: open a zone, move tensors between host and
//! device, stream through a pinned buffer, reuse pooled memory, and print
//! the zone's memory summary.
//!
//! `cargo run --release --example quickstart`

use tensorzone::{Location, Tensor, Zone};

fn main() -> tensorzone::Result<()> {
    let zone = Zone::new()?;
    println!("backend: {}", zone.info());

    // A 256x256 f32 image made on the host, uploaded once.
    let pixels: Vec<f32> = (0..256 * 256).map(|i| (i % 251) as f32 / 250.0).collect();
    let mut image = Tensor::from_vec(&zone, [256, 256], pixels.clone(), Location::Host)?;
    image.to_device()?;
    image.to_device()?; // current already: nothing moves

    // A device-to-device copy, then a read that downloads exactly once.
    let mut copy = Tensor::<f32>::empty(&zone, [256, 256], Location::Device)?;
    copy.copy_from(&mut image)?;
    assert_eq!(copy.as_slice()?, &pixels[..]);
    assert_eq!(copy.as_slice()?, &pixels[..]); // no second download

    // Stream frames through pinned staging memory: each frame is written in
    // place and uploaded with no further host copy; the pool reuses both the
    // staging buffers and the device ranges.
    // Each frame's temporaries live in an arena that is reset per frame.
    let frames = 32;
    let mut arena = zone.arena();
    let before = zone.stats();
    for f in 0..frames {
        let mut pinned = zone.pinned::<u8>(640 * 480)?;
        pinned.with_bytes(|mut bytes| bytes.fill(f as u8))?;
        let mut frame = Tensor::from_pinned(&zone, [480, 640], pinned)?;
        let mut row = arena.zeros::<u8>([640], Location::Device)?;
        row.write_device(&frame.as_slice()?[..640])?;
        let sum: u64 = frame.as_slice()?.iter().map(|&b| u64::from(b)).sum();
        assert_eq!(sum, 640 * 480 * f as u64);
        assert_eq!(row.as_slice()?[639], f as u8);
        drop(row);
        arena.reset();
    }
    drop(arena);
    zone.synchronize()?;
    let after = zone.stats();
    println!(
        "{frames} frames: {} device blocks and {} staging buffers created, {:.1} MiB uploaded",
        after.device_blocks_created - before.device_blocks_created,
        after.staging_buffers_created - before.staging_buffers_created,
        (after.host_to_device.bytes - before.host_to_device.bytes) as f64 / (1 << 20) as f64,
    );

    drop((image, copy));
    println!("{}", zone.stats());
    println!("released {} cached bytes", zone.trim());
    Ok(())
}
