// Sobel gradient magnitude of an f32 image [height, width], edges clamped:
// sqrt(gx² + gy²) with the 3 × 3 kernels [-1 0 1; -2 0 2; -1 0 1] and its
// transpose.
// params: [width, height]

@group(0) @binding(0) var<storage, read_write> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;

fn px(x: i32, y: i32, w: i32, h: i32) -> f32 {
    let cx = clamp(x, 0, w - 1);
    let cy = clamp(y, 0, h - 1);
    return src[u32(cy * w + cx)];
}

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = i32(params[0]);
    let h = i32(params[1]);
    let x = i32(gid.x);
    let y = i32(gid.y);
    if (x >= w || y >= h) {
        return;
    }
    let tl = px(x - 1, y - 1, w, h);
    let t = px(x, y - 1, w, h);
    let tr = px(x + 1, y - 1, w, h);
    let l = px(x - 1, y, w, h);
    let r = px(x + 1, y, w, h);
    let bl = px(x - 1, y + 1, w, h);
    let b = px(x, y + 1, w, h);
    let br = px(x + 1, y + 1, w, h);
    let gx = (tr + 2.0 * r + br) - (tl + 2.0 * l + bl);
    let gy = (bl + 2.0 * b + br) - (tl + 2.0 * t + tr);
    dst[u32(y * w + x)] = sqrt(gx * gx + gy * gy);
}
