// Arena tensors stay on the thread that allocates from their arena.
use tensorzone::{Location, Zone};

fn main() {
    let zone = Zone::cpu();
    let arena = zone.arena();
    let t = arena.zeros::<f32>([4], Location::Host).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || t.len());
    });
}
