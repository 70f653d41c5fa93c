// Sobel gradient magnitude of an f32 image [height, width], edges clamped:
// sqrt(gx² + gy²) with the 3 × 3 kernels [-1 0 1; -2 0 2; -1 0 1] and its
// transpose. Each invocation writes a block of ROWS × COLS outputs from
// (ROWS + 2) (COLS + 2) loads that neighbouring outputs share, where one
// output each would load 8. The host writes the block out as
// straight-line code with clamped indices, edges included (see
// blur.wgsl for why).
// params: [width, height, fold]; workgroups 16 × 16 over
// (ceil(width / COLS), ceil(height / ROWS)) (fold: see grid.wgsl).

@group(0) @binding(0) var<storage, read_write> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;

const COLS: u32 = {{COLS}}u;
const ROWS: u32 = {{ROWS}}u;

fn magnitude(tl: f32, t: f32, tr: f32, l: f32, r: f32, bl: f32, b: f32, br: f32) -> f32 {
    let gx = (tr + 2.0 * r + br) - (tl + 2.0 * l + bl);
    let gy = (bl + 2.0 * b + br) - (tl + 2.0 * t + tr);
    return sqrt(gx * gx + gy * gy);
}

@compute @workgroup_size(16, 16)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let w = params[0];
    let h = params[1];
    let g = grid(gid, groups, params[2] == 1u);
    let x = g.x * COLS;
    let y = g.y * ROWS;
    if (x >= w || y >= h) {
        return;
    }
    let x0 = i32(x);
    let y0 = i32(y);
    let wl = i32(w) - 1;
    let hl = i32(h) - 1;
{{BODY}}
}
