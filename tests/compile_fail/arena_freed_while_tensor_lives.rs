// An arena's memory cannot be freed (the arena dropped) under a live tensor.
use tensorzone::{Location, Zone};

fn main() {
    let zone = Zone::cpu();
    let arena = zone.arena();
    let t = arena.zeros::<f32>([4], Location::Host).unwrap();
    drop(arena);
    println!("{}", t.len());
}
