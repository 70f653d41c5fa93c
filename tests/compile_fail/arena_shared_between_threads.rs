// One thread allocates from an arena at a time: it cannot be shared.
use tensorzone::{Location, Zone};

fn main() {
    let zone = Zone::cpu();
    let arena = zone.arena();
    std::thread::scope(|s| {
        s.spawn(|| arena.zeros::<f32>([4], Location::Host).map(|t| t.len()));
    });
}
