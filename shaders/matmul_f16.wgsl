enable f16;

// gemm_tiled_f16_native: matmul (DESIGN.md op 3) of two f16 tensors, c f32, on adapters with
// WGSL's `f16` type (wgpu's `SHADER_F16`; the host picks it only on such a device, see
// src/backend/wgpu/matmul.rs). Without it, `gemm_tiled_f16` of matmul.wgsl does the same
// product on packed u32 words with integer widening: this module is apart from matmul.wgsl
// because `enable f16;` makes a whole module unusable on a device without the feature.
//
// The contract is `gemm_tiled_f16`'s: for each batch block b, c_b = alpha · op(a)_b op(b)_b,
// written (never accumulated into), with the stride formulas of matmul.wgsl's header
//
//   op(a)[row, k]   = a[a_off + batch·a_bs + row·a_rs + k·a_ks]
//   op(b)[k, col]   = b[b_off + batch·b_bs + k·b_ks + (col / b_grp)·b_gs + (col % b_grp)·b_cs]
//   c[row, col]     = c[c_off + batch·c_bs + row·c_rs + (col / c_grp)·c_gs + (col % c_grp)·c_cs]
//
// and the same GemmParams. a and b are the f16 tensors as they are stored (src/dtype.rs):
// ceil(len / 2) u32 words, element e in the low (e even) or high (e odd) 16 bits of word
// e >> 1 — which is exactly WGSL's `array<f16>` over the same bytes (little-endian, element
// e at byte 2e), so they are bound here as `array<f16>` and element e is `ah[e]`, at any
// offset or stride, with no alignment. Each element is widened to f32 as it is staged
// (`f32(h)`: exact for every f16, subnormals, inf and NaN included) and the products are
// accumulated in f32.
//
// Tiling as `gemm_tiled_f16`: 64×64 output tiles, 16×16 invocations of 4×4 outputs (rows
// ty·4 + i, columns tx·4 + j), k staged 16 deep. Each slice is 64 rows (columns) × 16 k per
// operand, stored k-major as f32 (sh_a[k·64 + row], sh_b[k·64 + col], 4 KiB each); every
// invocation stages 4 elements of each operand, out-of-range elements as 0. Workgroups are
// numbered linearly (batch, tile row, tile column) and folded into 2-D by the host.
// PTX has no counterpart (its 16-bit GEMM is gemm_mma_* on the tensor cores).

struct GemmParams {
    m: u32,
    n: u32,
    inner: u32,
    batch: u32,
    a_off: u32,
    a_bs: u32,
    a_rs: u32,
    a_ks: u32,
    b_off: u32,
    b_bs: u32,
    b_ks: u32,
    b_cs: u32,
    b_grp: u32,
    b_gs: u32,
    c_grp: u32,
    c_gs: u32,
    c_off: u32,
    c_bs: u32,
    c_rs: u32,
    c_cs: u32,
    alpha: f32,
    tiles_m: u32,
    tiles_n: u32,
    _pad: u32,
}

// Parameters from a read-only storage buffer, as in matmul.wgsl (lavapipe recompiles and
// leaks a variant per dispatch of a kernel whose uniform values steer its loops).
@group(0) @binding(0) var<storage, read> p: GemmParams;
@group(0) @binding(1) var<storage, read> ah: array<f16>;
@group(0) @binding(2) var<storage, read> bh: array<f16>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const H_TK: u32 = 16u;

var<workgroup> sh_a: array<f32, 1024>;
var<workgroup> sh_b: array<f32, 1024>;

fn b_index(base: u32, k: u32, col: u32) -> u32 {
    return base + k * p.b_ks + (col / p.b_grp) * p.b_gs + (col % p.b_grp) * p.b_cs;
}

fn c_index(base: u32, row: u32, col: u32) -> u32 {
    return base + row * p.c_rs + (col / p.c_grp) * p.c_gs + (col % p.c_grp) * p.c_cs;
}

// The tile of `group` (linear: batch, tile row, tile column): (batch, row0, col0).
fn tile_of(group: u32, rows: u32, cols: u32) -> vec3<u32> {
    let tiles = p.tiles_m * p.tiles_n;
    let tile = group % tiles;
    return vec3<u32>(group / tiles, (tile / p.tiles_n) * rows, (tile % p.tiles_n) * cols);
}

// c[row, col .. col + 4] = alpha · v, within the matrix.
fn store4(base: u32, row: u32, col: u32, v: vec4<f32>) {
    if (row < p.m) {
        let w = p.alpha * v;
        if (col < p.n) {
            c[c_index(base, row, col)] = w.x;
        }
        if (col + 1u < p.n) {
            c[c_index(base, row, col + 1u)] = w.y;
        }
        if (col + 2u < p.n) {
            c[c_index(base, row, col + 2u)] = w.z;
        }
        if (col + 3u < p.n) {
            c[c_index(base, row, col + 3u)] = w.w;
        }
    }
}

// op(a)[row, k] of the batch block at a_base, widened to f32 (0 out of range).
fn ah_at(a_base: u32, row: u32, k: u32) -> f32 {
    if (row >= p.m || k >= p.inner) {
        return 0.0;
    }
    return f32(ah[a_base + row * p.a_rs + k * p.a_ks]);
}

// op(b)[k, col] of the batch block at b_base, widened to f32 (0 out of range).
fn bh_at(b_base: u32, k: u32, col: u32) -> f32 {
    if (col >= p.n || k >= p.inner) {
        return 0.0;
    }
    return f32(bh[b_index(b_base, k, col)]);
}

@compute @workgroup_size(256)
fn gemm_tiled_f16_native(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    if (group >= p.tiles_m * p.tiles_n * p.batch) {
        return;
    }
    let t = tile_of(group, 64u, 64u);
    let a_base = p.a_off + t.x * p.a_bs;
    let b_base = p.b_off + t.x * p.b_bs;
    let tx = li % 16u;
    let ty = li / 16u;
    var hacc: array<vec4<f32>, 4>;
    hacc[0] = vec4<f32>(0.0);
    hacc[1] = vec4<f32>(0.0);
    hacc[2] = vec4<f32>(0.0);
    hacc[3] = vec4<f32>(0.0);
    // Staging: element s = li + 256·j (j = 0..3) of a slice is row (column) s % 64, k s / 64.
    let rc = li % 64u;
    let kr = li / 64u;
    for (var k0 = 0u; k0 < p.inner; k0 += H_TK) {
        for (var j = 0u; j < 4u; j++) {
            let kk = kr + 4u * j;
            sh_a[kk * 64u + rc] = ah_at(a_base, t.y + rc, k0 + kk);
            sh_b[kk * 64u + rc] = bh_at(b_base, k0 + kk, t.z + rc);
        }
        workgroupBarrier();
        let depth = min(H_TK, p.inner - k0);
        for (var kk = 0u; kk < depth; kk++) {
            let ar = kk * 64u + ty * 4u;
            let bc = kk * 64u + tx * 4u;
            let bv = vec4<f32>(sh_b[bc], sh_b[bc + 1u], sh_b[bc + 2u], sh_b[bc + 3u]);
            hacc[0] = fma(vec4<f32>(sh_a[ar]), bv, hacc[0]);
            hacc[1] = fma(vec4<f32>(sh_a[ar + 1u]), bv, hacc[1]);
            hacc[2] = fma(vec4<f32>(sh_a[ar + 2u]), bv, hacc[2]);
            hacc[3] = fma(vec4<f32>(sh_a[ar + 3u]), bv, hacc[3]);
        }
        workgroupBarrier();
    }

    let c_base = p.c_off + t.x * p.c_bs;
    let r0 = t.y + ty * 4u;
    let c0 = t.z + tx * 4u;
    store4(c_base, r0, c0, hacc[0]);
    store4(c_base, r0 + 1u, c0, hacc[1]);
    store4(c_base, r0 + 2u, c0, hacc[2]);
    store4(c_base, r0 + 3u, c0, hacc[3]);
}
