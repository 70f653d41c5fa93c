// C[m, n] = A[m, k] · B[k, n] in f32, one 16 × 16 tile of C per workgroup,
// stepping through k in 16-wide tiles of A and B held in workgroup memory.
// params: [m, k, n, fold]; workgroups over (ceil(n / 16), ceil(m / 16))
// (fold: see grid.wgsl).

const TILE: u32 = 16u;

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<storage, read> params: array<u32>;

var<workgroup> ta: array<array<f32, 16>, 16>;
var<workgroup> tb: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let m = params[0];
    let k = params[1];
    let n = params[2];
    let g = grid(gid, groups, params[3] == 1u);
    let row = g.y;
    let col = g.x;
    var acc = 0.0;
    let steps = (k + TILE - 1u) / TILE;
    for (var t = 0u; t < steps; t = t + 1u) {
        let ka = t * TILE + lid.x;
        let kb = t * TILE + lid.y;
        var va = 0.0;
        if (row < m && ka < k) {
            va = a[row * k + ka];
        }
        var vb = 0.0;
        if (kb < k && col < n) {
            vb = b[kb * n + col];
        }
        ta[lid.y][lid.x] = va;
        tb[lid.y][lid.x] = vb;
        workgroupBarrier();
        for (var j = 0u; j < TILE; j = j + 1u) {
            acc = acc + ta[lid.y][j] * tb[j][lid.x];
        }
        workgroupBarrier();
    }
    if (row < m && col < n) {
        c[row * n + col] = acc;
    }
}
