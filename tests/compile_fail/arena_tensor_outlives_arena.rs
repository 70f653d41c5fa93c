// An arena tensor cannot be kept past its arena.
use tensorzone::{Location, Zone};

fn main() {
    let zone = Zone::cpu();
    let t;
    {
        let arena = zone.arena();
        t = arena.zeros::<f32>([4], Location::Host).unwrap();
    }
    println!("{}", t.len());
}
