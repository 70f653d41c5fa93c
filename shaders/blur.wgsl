// One pass of a separable Gaussian blur over an f32 image [height, width]:
// along rows (dir 0) or columns (dir 1), edges clamped. The host writes
// the taps out as straight-line sums with the weights as constants
// ({{TAPS_INTERIOR}}: pixels whose taps all fall inside the image, read
// from `start` by `step`; {{TAPS_CLAMPED}}: the rest, through `px`). A
// software rasteriser runs loops over storage reads slowly; this runs as
// fast as a fixed stencil. One pipeline per radius.
// params: [width, height, radius, dir]

@group(0) @binding(0) var<storage, read_write> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;

const R: u32 = {{RADIUS}}u;

fn px(x: i32, y: i32, w: i32, h: i32) -> f32 {
    return src[u32(clamp(y, 0, h - 1) * w + clamp(x, 0, w - 1))];
}

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = params[0];
    let h = params[1];
    let x = gid.x;
    let y = gid.y;
    if (x >= w || y >= h) {
        return;
    }
    let rows = params[3] == 0u;
    var acc = 0.0;
    let inside_rows = (x >= R) && ((x + R) < w);
    let inside_cols = (y >= R) && ((y + R) < h);
    let inside = select(inside_cols, inside_rows, rows);
    if (inside) {
        let start = select((y - R) * w + x, y * w + x - R, rows);
        let step = select(w, 1u, rows);
        acc = {{TAPS_INTERIOR}};
    } else {
        let dx = select(0, 1, rows);
        let dy = 1 - dx;
        let wi = i32(w);
        let hi = i32(h);
        let xi = i32(x);
        let yi = i32(y);
        acc = {{TAPS_CLAMPED}};
    }
    dst[y * w + x] = acc;
}
