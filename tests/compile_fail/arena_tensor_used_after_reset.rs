// `reset` frees every arena tensor at once: none can be used after it.
use tensorzone::{Location, Zone};

fn main() {
    let zone = Zone::cpu();
    let mut arena = zone.arena();
    let mut t = arena.zeros::<f32>([4], Location::Host).unwrap();
    arena.reset();
    let _ = t.to_vec();
}
