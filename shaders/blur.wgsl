// One pass of a separable Gaussian blur over an f32 image [height, width]:
// along rows (dir 0) or columns (dir 1), edges clamped. Each invocation
// writes N consecutive outputs along its pass from N + 2R loads that
// neighbouring outputs share, where one output each would load 2R + 1.
// The host writes the loads and sums out as straight-line code, the
// weights as constants: llvmpipe runs every storage access as a loop over
// its SIMD lanes, so the number of accesses is the cost, and a clamped
// index (a few vector instructions) lets the edges take the same path as
// the interior. One pipeline per sigma.
// params: [width, height, radius, dir, fold]; workgroups 16 × 16, over
// (ceil(width / N), height) along rows and (width, ceil(height / N))
// along columns (fold: see grid.wgsl).

@group(0) @binding(0) var<storage, read_write> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;

const N: u32 = {{OUTPUTS}}u;

@compute @workgroup_size(16, 16)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let w = params[0];
    let h = params[1];
    let rows = params[3] == 0u;
    let g = grid(gid, groups, params[4] == 1u);
    let x = select(g.x, g.x * N, rows);
    let y = select(g.y * N, g.y, rows);
    if (x >= w || y >= h) {
        return;
    }
    // Position along the line, its last position, the step between
    // neighbours along it and its first element.
    let along = i32(select(y, x, rows));
    let last = i32(select(h, w, rows)) - 1;
    let step = select(w, 1u, rows);
    let first = select(x, y * w, rows);
    let at = y * w + x;
{{BODY}}
}
