// An arena tensor is not freed on its own: it cannot become an owned tensor
// (whose drop frees its storage) without a copy (`to_owned`).
use tensorzone::{Location, Tensor, Zone};

fn main() {
    let zone = Zone::cpu();
    let arena = zone.arena();
    let t = arena.zeros::<f32>([4], Location::Host).unwrap();
    let owned: Tensor<f32> = Tensor::from(t);
    drop(owned);
}
