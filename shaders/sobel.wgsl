// Sobel gradient magnitude of an f32 image [height, width], edges clamped:
// sqrt(gx² + gy²) with the 3 × 3 kernels [-1 0 1; -2 0 2; -1 0 1] and its
// transpose. Each invocation writes N outputs along a row, so neighbours
// share loads: 3 (N + 2) reads instead of 9 N. The host writes the
// interior case out as straight-line code.
// params: [width, height]; workgroups 16 × 16 over (ceil(width / N),
// height).

@group(0) @binding(0) var<storage, read_write> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;

const N: u32 = {{OUTPUTS}}u;

fn px(x: i32, y: i32, w: i32, h: i32) -> f32 {
    let cx = clamp(x, 0, w - 1);
    let cy = clamp(y, 0, h - 1);
    return src[u32(cy * w + cx)];
}

fn magnitude(tl: f32, t: f32, tr: f32, l: f32, r: f32, bl: f32, b: f32, br: f32) -> f32 {
    let gx = (tr + 2.0 * r + br) - (tl + 2.0 * l + bl);
    let gy = (bl + 2.0 * b + br) - (tl + 2.0 * t + tr);
    return sqrt(gx * gx + gy * gy);
}

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = params[0];
    let h = params[1];
    let x = gid.x * N;
    let y = gid.y;
    if (x >= w || y >= h) {
        return;
    }
    let at = y * w + x;
    if (x >= 1u && x + N < w && y >= 1u && y + 1u < h) {
        let above = at - w - 1u;
        let here = at - 1u;
        let below = at + w - 1u;
{{INTERIOR}}
    } else {
        let wi = i32(w);
        let hi = i32(h);
        let yi = i32(y);
        for (var j = 0u; j < N; j++) {
            let xi = i32(x + j);
            if (xi < wi) {
                dst[at + j] = magnitude(
                    px(xi - 1, yi - 1, wi, hi), px(xi, yi - 1, wi, hi), px(xi + 1, yi - 1, wi, hi),
                    px(xi - 1, yi, wi, hi), px(xi + 1, yi, wi, hi),
                    px(xi - 1, yi + 1, wi, hi), px(xi, yi + 1, wi, hi), px(xi + 1, yi + 1, wi, hi),
                );
            }
        }
    }
}
