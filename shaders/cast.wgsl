// Casts between element types over packed words; the host fills in the
// body, which reads `src` and writes `dst` for invocation `i` (an output word, or
// an output element for f32 outputs).
// params: [output words or elements, input elements]

@group(0) @binding(0) var<storage, read_write> src: array<{{SRC}}>;
@group(0) @binding(1) var<storage, read_write> dst: array<{{DST}}>;
@group(0) @binding(2) var<storage, read> params: array<u32>;

// Whether `v` is a NaN, from its bits: WGSL lets a compiler assume no
// float is NaN, so `v != v` may be folded to false (llvmpipe does).
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// The binary16 bits of `v`, rounded to nearest even: from 65520 on (the
// halfway point past the largest finite half) infinity, NaN a quiet NaN
// with its sign and top payload bits, as the CPU conversion gives.
// pack2x16float leaves values outside the finite range undefined.
fn half_bits(v: f32) -> u32 {
    if (is_nan(v)) {
        let bits = bitcast<u32>(v);
        return ((bits >> 16u) & 0x8000u) | 0x7e00u | ((bits & 0x7fffffu) >> 13u);
    }
    if (abs(v) >= 65520.0) {
        return select(0x7c00u, 0xfc00u, v < 0.0);
    }
    return pack2x16float(vec2<f32>(clamp(v, -65504.0, 65504.0), 0.0)) & 0xffffu;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= params[0]) {
        return;
    }
    let len = params[1];
    {{BODY}}
}
