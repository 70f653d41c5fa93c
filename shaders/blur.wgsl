// One pass of a separable Gaussian blur over an f32 image [height, width]:
// along rows (dir 0) or columns (dir 1), edges clamped. Each invocation
// writes N consecutive outputs along its pass, so neighbouring outputs
// share their loads: N + 2R reads instead of N (2R + 1). The host writes
// the taps out as straight-line sums with the weights as constants
// (the interior case: an invocation whose taps all fall inside its line;
// and, near the edges, each output's sum through the clamped `tap`). A software
// rasteriser runs loops over storage reads slowly; this runs as fast as a
// fixed stencil. One pipeline per sigma.
// params: [width, height, radius, dir]; workgroups 16 × 16, over
// (ceil(width / N), height) along rows and (width, ceil(height / N))
// along columns.

@group(0) @binding(0) var<storage, read_write> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;

const R: u32 = {{RADIUS}}u;
const N: u32 = {{OUTPUTS}}u;

// Element `k` of the line through `first` by `step`, clamped to the line.
fn tap(first: u32, step: u32, len: u32, k: i32) -> f32 {
    return src[first + u32(clamp(k, 0, i32(len) - 1)) * step];
}

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = params[0];
    let h = params[1];
    let rows = params[3] == 0u;
    let x = select(gid.x, gid.x * N, rows);
    let y = select(gid.y * N, gid.y, rows);
    if (x >= w || y >= h) {
        return;
    }
    // Position along the line, the line's length and its first element.
    let along = select(y, x, rows);
    let len = select(h, w, rows);
    let step = select(w, 1u, rows);
    let first = select(x, y * w, rows);
    let at = y * w + x;
    if (along >= R && along + N - 1u + R < len) {
        let start = at - R * step;
{{INTERIOR}}
    } else {
        for (var j = 0u; j < N; j++) {
            if (along + j < len) {
                let a = i32(along + j);
                dst[at + j * step] = {{TAP_SUM}};
            }
        }
    }
}
