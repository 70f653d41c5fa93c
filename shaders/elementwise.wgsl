// Elementwise kernels over 32-bit elements; the host fills in the element
// type (f32, i32 or u32) and the expression, of `a[i]`, `b[i]`, `s` (the
// scalar in params[1], bit-cast to the element type) and `n` (the bias
// length).
// params: [len, scalar bits, bias length]

@group(0) @binding(0) var<storage, read_write> a: array<{{ELEM}}>;
@group(0) @binding(1) var<storage, read_write> b: array<{{ELEM}}>;
@group(0) @binding(2) var<storage, read_write> out: array<{{ELEM}}>;
@group(0) @binding(3) var<storage, read> params: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= params[0]) {
        return;
    }
    let s = bitcast<{{ELEM}}>(params[1]);
    let n = max(params[2], 1u);
    out[i] = {{EXPR}};
}
