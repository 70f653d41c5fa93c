// RGBA u8 pixels (one word each, red in the low byte) to f32 luma in
// [0, 1]: 0.299 R + 0.587 G + 0.114 B.
// params: [pixels]

@group(0) @binding(0) var<storage, read_write> rgba: array<u32>;
@group(0) @binding(1) var<storage, read_write> gray: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= params[0]) {
        return;
    }
    let p = unpack4x8unorm(rgba[i]);
    gray[i] = 0.299 * p.x + 0.587 * p.y + 0.114 * p.z;
}
