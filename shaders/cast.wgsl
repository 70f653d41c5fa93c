// Casts between element types over packed words; the host fills in the
// body, which reads `src` and writes `dst` for invocation `i` (an output word, or
// an output element for f32 outputs).
// params: [output words or elements, input elements]

@group(0) @binding(0) var<storage, read_write> src: array<{{SRC}}>;
@group(0) @binding(1) var<storage, read_write> dst: array<{{DST}}>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= params[0]) {
        return;
    }
    let len = params[1];
    {{BODY}}
}
