// The invocation's (x, y) in a 2-D kernel's grid of 16 × 16 workgroups,
// which the host prepends to blur.wgsl, sobel.wgsl and matmul.wgsl.
// A dispatch has at most 65,535 workgroups along each dimension: past
// that along y (along x when `fold_x`), the dispatch's z continues it,
// so z = k starts at workgroup 65,535 k of that dimension.
fn grid(gid: vec3<u32>, groups: vec3<u32>, fold_x: bool) -> vec2<u32> {
    let more = gid.z * 16u;
    return vec2<u32>(
        gid.x + select(0u, more * groups.x, fold_x),
        gid.y + select(more * groups.y, 0u, fold_x),
    );
}
