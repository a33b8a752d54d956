// matmul (DESIGN.md op 3): for each batch block b, c_b = alpha · op(a_b) op(b_b).
//
// One workgroup computes a 64×64 tile of c; each of its 16×16 invocations keeps a 4×4
// block of outputs in registers (rows ty + 16i, columns tx + 16j, so that neighbouring
// invocations touch neighbouring columns). The inner dimension streams through workgroup
// memory 16 at a time. Loads follow the stored layout (transposed or not) so that
// neighbouring invocations read neighbouring addresses. Out-of-range elements load as 0,
// so every size works. Workgroups are numbered linearly (batch, tile row, tile column) and
// the host folds their count into 2-D past the 65535-per-dimension limit.

struct MatmulParams {
    m: u32,
    n: u32,
    inner: u32,
    batch: u32,
    a_off: u32,
    a_stride: u32,
    b_off: u32,
    b_stride: u32,
    c_off: u32,
    c_stride: u32,
    trans_a: u32,
    trans_b: u32,
    alpha: f32,
    tiles_m: u32,
    tiles_n: u32,
    _pad: u32,
}

const TILE: u32 = 64u;
const TK: u32 = 16u;
const THREADS: u32 = 256u;

// Parameters from a read-only storage buffer, not a uniform one: lavapipe (Mesa 22.x)
// recompiles and leaks a variant of `matmul_skinny` on every dispatch with uniform values
// folded in (see shaders/lora.wgsl and `ParamsIn` in src/backend/wgpu/kernels.rs).
@group(0) @binding(0) var<storage, read> p: MatmulParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// Skinny variant (n ≤ 16, e.g. the r-wide LoRA products): 128×16 output tiles, each
// invocation keeps 8 rows of one column.
const SKINNY_M: u32 = 128u;
const SKINNY_N: u32 = 16u;

// a_tile[row * TK + kk] = op(a)[row0 + row, k0 + kk]; b_tile[kk * TILE + col] = op(b)[k0 + kk, col0 + col].
var<workgroup> a_tile: array<f32, 2048>;
var<workgroup> b_tile: array<f32, 1024>;
var<private> acc: array<f32, 16>;

fn multiply_tiles(tx: u32, ty: u32) {
    for (var kk = 0u; kk < TK; kk++) {
        var av: array<f32, 4>;
        var bv: array<f32, 4>;
        for (var i = 0u; i < 4u; i++) {
            av[i] = a_tile[(ty + 16u * i) * TK + kk];
            bv[i] = b_tile[kk * TILE + tx + 16u * i];
        }
        for (var i = 0u; i < 4u; i++) {
            for (var j = 0u; j < 4u; j++) {
                acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
            }
        }
    }
}

@compute @workgroup_size(16, 16)
fn matmul(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    let tiles = p.tiles_m * p.tiles_n;
    if (group >= tiles * p.batch) {
        return;
    }
    let batch = group / tiles;
    let tile = group % tiles;
    let row0 = (tile / p.tiles_n) * TILE;
    let col0 = (tile % p.tiles_n) * TILE;
    let a_base = p.a_off + batch * p.a_stride;
    let b_base = p.b_off + batch * p.b_stride;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }

    for (var k0 = 0u; k0 < p.inner; k0 += TK) {
        for (var l = 0u; l < 4u; l++) {
            let e = li + THREADS * l;
            // op(a) element (row, kk): stored [m, inner] or, transposed, [inner, m].
            var row: u32;
            var kk: u32;
            if (p.trans_a == 0u) {
                row = e / TK;
                kk = e % TK;
            } else {
                kk = e / TILE;
                row = e % TILE;
            }
            let gr = row0 + row;
            let gk = k0 + kk;
            var av = 0.0;
            if (gr < p.m && gk < p.inner) {
                if (p.trans_a == 0u) {
                    av = a[a_base + gr * p.inner + gk];
                } else {
                    av = a[a_base + gk * p.m + gr];
                }
            }
            a_tile[row * TK + kk] = av;

            // op(b) element (kk, col): stored [inner, n] or, transposed, [n, inner].
            var col: u32;
            if (p.trans_b == 0u) {
                kk = e / TILE;
                col = e % TILE;
            } else {
                col = e / TK;
                kk = e % TK;
            }
            let gc = col0 + col;
            let gk2 = k0 + kk;
            var bv = 0.0;
            if (gc < p.n && gk2 < p.inner) {
                if (p.trans_b == 0u) {
                    bv = b[b_base + gk2 * p.n + gc];
                } else {
                    bv = b[b_base + gc * p.inner + gk2];
                }
            }
            b_tile[kk * TILE + col] = bv;
        }
        workgroupBarrier();
        multiply_tiles(lid.x, lid.y);
        workgroupBarrier();
    }

    let c_base = p.c_off + batch * p.c_stride;
    for (var i = 0u; i < 4u; i++) {
        let gr = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let gc = col0 + lid.x + 16u * j;
            if (gr < p.m && gc < p.n) {
                c[c_base + gr * p.n + gc] = p.alpha * acc[i * 4u + j];
            }
        }
    }
}

// Same contract and parameters as `matmul` (tiles_m counts 128-row tiles, tiles_n 16-column
// tiles). Loads follow the stored layouts as in `matmul`.
@compute @workgroup_size(16, 16)
fn matmul_skinny(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    let tiles = p.tiles_m * p.tiles_n;
    if (group >= tiles * p.batch) {
        return;
    }
    let batch = group / tiles;
    let tile = group % tiles;
    let row0 = (tile / p.tiles_n) * SKINNY_M;
    let col0 = (tile % p.tiles_n) * SKINNY_N;
    let a_base = p.a_off + batch * p.a_stride;
    let b_base = p.b_off + batch * p.b_stride;
    var part: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        part[i] = 0.0;
    }

    for (var k0 = 0u; k0 < p.inner; k0 += TK) {
        for (var l = 0u; l < 8u; l++) {
            let e = li + THREADS * l;
            var row: u32;
            var kk: u32;
            if (p.trans_a == 0u) {
                row = e / TK;
                kk = e % TK;
            } else {
                kk = e / SKINNY_M;
                row = e % SKINNY_M;
            }
            let gr = row0 + row;
            let gk = k0 + kk;
            var av = 0.0;
            if (gr < p.m && gk < p.inner) {
                if (p.trans_a == 0u) {
                    av = a[a_base + gr * p.inner + gk];
                } else {
                    av = a[a_base + gk * p.m + gr];
                }
            }
            a_tile[row * TK + kk] = av;
        }
        // op(b) tile: 16 × 16, one element per invocation.
        var kk: u32;
        var col: u32;
        if (p.trans_b == 0u) {
            kk = li / SKINNY_N;
            col = li % SKINNY_N;
        } else {
            col = li / TK;
            kk = li % TK;
        }
        let gc = col0 + col;
        let gk = k0 + kk;
        var bv = 0.0;
        if (gc < p.n && gk < p.inner) {
            if (p.trans_b == 0u) {
                bv = b[b_base + gk * p.n + gc];
            } else {
                bv = b[b_base + gc * p.inner + gk];
            }
        }
        b_tile[kk * SKINNY_N + col] = bv;
        workgroupBarrier();
        for (var q = 0u; q < TK; q++) {
            let bq = b_tile[q * SKINNY_N + lid.x];
            for (var i = 0u; i < 8u; i++) {
                part[i] = fma(a_tile[(lid.y + 16u * i) * TK + q], bq, part[i]);
            }
        }
        workgroupBarrier();
    }

    let c_base = p.c_off + batch * p.c_stride;
    let gc = col0 + lid.x;
    for (var i = 0u; i < 8u; i++) {
        let gr = row0 + lid.y + 16u * i;
        if (gr < p.m && gc < p.n) {
            c[c_base + gr * p.n + gc] = p.alpha * part[i];
        }
    }
}
