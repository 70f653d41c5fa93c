// A function that owns an arena cannot return one of its tensors.
use tensorzone::{ArenaTensor, Location, Zone};

fn make(zone: &Zone) -> ArenaTensor<'_, f32> {
    let arena = zone.arena();
    arena.zeros::<f32>([4], Location::Host).unwrap()
}

fn main() {
    let zone = Zone::cpu();
    println!("{}", make(&zone).len());
}
