mod common;
use tensorzone::*;

#[test]
fn round_trip_smoke() {
    for zone in common::zones() {
        eprintln!("{}", zone.info());
        let mut t = Tensor::from_slice(&zone, [3], &[1u32, 2, 3], Location::Host).unwrap();
        t.to_device().unwrap();
        t.write_device(&[7, 8, 9]).unwrap();
        assert_eq!(t.to_vec().unwrap(), [7, 8, 9]);
        let mut b =
            Tensor::<u8>::from_slice(&zone, [5], &[1, 2, 3, 4, 5], Location::Device).unwrap();
        assert_eq!(b.to_vec().unwrap(), [1, 2, 3, 4, 5]);
        let mut c = b.try_clone().unwrap();
        assert_eq!(c.to_vec().unwrap(), [1, 2, 3, 4, 5]);
        let mut p = zone.pinned::<u8>(5).unwrap();
        p.write(0, &[5, 4, 3, 2, 1]).unwrap();
        b.upload_pinned(p).unwrap();
        assert_eq!(b.to_vec().unwrap(), [5, 4, 3, 2, 1]);
        println!("{}", zone.stats());
    }
}
