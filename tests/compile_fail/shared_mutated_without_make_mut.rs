// A shared tensor is immutable: writes go through `make_mut`.
use tensorzone::{Location, Tensor, Zone};

fn main() {
    let zone = Zone::cpu();
    let shared = Tensor::from_slice(&zone, [2], &[1.0f32, 2.0], Location::Host)
        .unwrap()
        .into_shared();
    let other = shared.clone();
    shared.write_host(&[3.0, 4.0]).unwrap();
    drop(other);
}
