// Fills a tensor of any element type with one 32-bit pattern (the value
// repeated to fill a word). Words past the tensor's last byte stay zero, as
// the binding's padding must.
// params: [bytes, pattern]

@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<storage, read_write> params: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    let bytes = params[0];
    let words = (bytes + 3u) / 4u;
    if (i >= words) {
        return;
    }
    var word = params[1];
    let tail = bytes - i * 4u;
    if (tail < 4u) {
        word = word & ((1u << (tail * 8u)) - 1u);
    }
    out[i] = word;
}
