// Fills a tensor of any element type (up to 8 bytes) with the value's
// bytes repeated: even words take one pattern, odd words the other. Bytes
// past the tensor's last byte stay zero, as the binding's padding must.
// params: [bytes, even word, odd word]

@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<storage, read> params: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    let bytes = params[0];
    let words = (bytes + 3u) / 4u;
    if (i >= words) {
        return;
    }
    var word = select(params[1], params[2], (i & 1u) == 1u);
    let tail = bytes - i * 4u;
    if (tail < 4u) {
        word = word & ((1u << (tail * 8u)) - 1u);
    }
    out[i] = word;
}
