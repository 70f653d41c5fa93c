// An arena is freed once: after its drop nothing can reset or drop it again.
use tensorzone::Zone;

fn main() {
    let zone = Zone::cpu();
    let mut arena = zone.arena();
    drop(arena);
    arena.reset();
}
