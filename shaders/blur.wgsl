// One pass of a separable Gaussian blur over an f32 image [height, width]:
// along rows (dir 0) or columns (dir 1), edges clamped.
// params: [width, height, radius, dir, weights (2 radius + 1, f32 bits)…]

@group(0) @binding(0) var<storage, read_write> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = params[0];
    let h = params[1];
    let r = i32(params[2]);
    let x = gid.x;
    let y = gid.y;
    if (x >= w || y >= h) {
        return;
    }
    var acc = 0.0;
    for (var d = -r; d <= r; d = d + 1) {
        var sx = i32(x);
        var sy = i32(y);
        if (params[3] == 0u) {
            sx = clamp(sx + d, 0, i32(w) - 1);
        } else {
            sy = clamp(sy + d, 0, i32(h) - 1);
        }
        let wt = bitcast<f32>(params[4u + u32(d + r)]);
        acc = acc + wt * src[u32(sy) * w + u32(sx)];
    }
    dst[y * w + x] = acc;
}
