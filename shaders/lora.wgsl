// lora_forward and lora_backward (DESIGN.md ops 1 and 2): the two fused kernels.
//
// Both are GEMM tiles like matmul.wgsl (64×64 outputs per workgroup, a 4×4 register block
// per invocation, the inner dimension staged through workgroup memory 16 at a time), with a
// second, low-rank inner loop over r that adds `s · h_k B_kᵀ` (forward) or `s · g_k A_k`
// (dx) into the same registers before the single write of the output tile.
//
// Rows: with a shared x the rows are the M rows of x; with a per-particle x they are the
// K·M stacked rows of x_k (row = k·M + m), so the base product is one GEMM either way and
// reads W once per tile. The low-rank loop runs over the particles a tile's rows belong to
// (all K when x is shared), masking rows of other particles to 0.
//
// The small products `h = x Aᵀ`, `g = dy B`, `d_lora_a`, `d_lora_b` run on matmul.wgsl.
//
// Parameters come from a read-only storage buffer, not a uniform one: Mesa's lavapipe (22.x)
// recompiles a kernel on every dispatch with the uniform values that control its loops
// folded in, and leaks each compiled variant (about 2 MB per `lora_dx` dispatch). It never
// does that for storage buffers. The host binds these two entry points accordingly
// (`ParamsIn::Storage` in src/backend/wgpu/kernels.rs).

struct ForwardParams {
    k: u32,
    m: u32,
    i: u32,
    o: u32,
    r: u32,
    x_shared: u32,
    has_bias: u32,
    rows: u32,
    b_off: u32,
    b_stride: u32,
    tiles_rows: u32,
    tiles_cols: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct DxParams {
    k: u32,
    m: u32,
    i: u32,
    o: u32,
    r: u32,
    x_shared: u32,
    rows: u32,
    a_off: u32,
    a_stride: u32,
    tiles_rows: u32,
    tiles_cols: u32,
    scale: f32,
}

const TILE: u32 = 64u;
const TK: u32 = 16u;
const THREADS: u32 = 256u;

// lora_forward bindings.
@group(0) @binding(0) var<storage, read> fp: ForwardParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> lora_b: array<f32>;
@group(0) @binding(5) var<storage, read> h: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

// lora_dx bindings (same slots, other roles; never used by the same entry point).
@group(0) @binding(0) var<storage, read> dp: DxParams;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> weight_t: array<f32>;
@group(0) @binding(3) var<storage, read> lora_a: array<f32>;
@group(0) @binding(4) var<storage, read> g: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;

// lhs_tile[row * TK + kk], rhs_tile[kk * TILE + col].
var<workgroup> lhs_tile: array<f32, 1024>;
var<workgroup> rhs_tile: array<f32, 1024>;
var<private> acc: array<f32, 16>;

fn multiply_tiles(tx: u32, ty: u32) {
    for (var kk = 0u; kk < TK; kk++) {
        var av: array<f32, 4>;
        var bv: array<f32, 4>;
        for (var i = 0u; i < 4u; i++) {
            av[i] = lhs_tile[(ty + 16u * i) * TK + kk];
            bv[i] = rhs_tile[kk * TILE + tx + 16u * i];
        }
        for (var i = 0u; i < 4u; i++) {
            for (var j = 0u; j < 4u; j++) {
                acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
            }
        }
    }
}

// The particles whose rows fall in [row0, row0 + TILE): all of them for a shared x.
fn particle_range(x_shared: u32, k: u32, m: u32, rows: u32, row0: u32) -> vec2<u32> {
    if (x_shared != 0u) {
        return vec2<u32>(0u, k);
    }
    let last = min(rows, row0 + TILE) - 1u;
    return vec2<u32>(row0 / m, last / m + 1u);
}

// y_k = x_k Wᵀ + bias + s · h_k B_kᵀ for every particle, h already computed.
@compute @workgroup_size(16, 16)
fn lora_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    if (group >= fp.tiles_rows * fp.tiles_cols) {
        return;
    }
    let row0 = (group / fp.tiles_cols) * TILE;
    let col0 = (group % fp.tiles_cols) * TILE;
    for (var t = 0u; t < 16u; t++) {
        acc[t] = 0.0;
    }

    // Base product x Wᵀ: once per tile, whatever K.
    for (var k0 = 0u; k0 < fp.i; k0 += TK) {
        for (var l = 0u; l < 4u; l++) {
            let e = li + THREADS * l;
            let row = e / TK;
            let kk = e % TK;
            let gk = k0 + kk;
            var xv = 0.0;
            var wv = 0.0;
            if (row0 + row < fp.rows && gk < fp.i) {
                xv = x[(row0 + row) * fp.i + gk];
            }
            if (col0 + row < fp.o && gk < fp.i) {
                wv = weight[(col0 + row) * fp.i + gk];
            }
            lhs_tile[row * TK + kk] = xv;
            rhs_tile[kk * TILE + row] = wv;
        }
        workgroupBarrier();
        multiply_tiles(lid.x, lid.y);
        workgroupBarrier();
    }

    var base: array<f32, 16>;
    for (var t = 0u; t < 16u; t++) {
        base[t] = acc[t];
    }
    let shared_x = fp.x_shared != 0u;
    let ks = particle_range(fp.x_shared, fp.k, fp.m, fp.rows, row0);
    for (var kp = ks.x; kp < ks.y; kp++) {
        if (shared_x) {
            for (var t = 0u; t < 16u; t++) {
                acc[t] = base[t];
            }
        }
        // Low-rank term s · h_k B_kᵀ, inner dimension r.
        let b_base = fp.b_off + kp * fp.b_stride;
        for (var q0 = 0u; q0 < fp.r; q0 += TK) {
            for (var l = 0u; l < 4u; l++) {
                let e = li + THREADS * l;
                let row = e / TK;
                let qq = e % TK;
                let gq = q0 + qq;
                let gr = row0 + row;
                var hv = 0.0;
                var bv = 0.0;
                if (gq < fp.r) {
                    if (shared_x) {
                        if (gr < fp.m) {
                            hv = fp.scale * h[(kp * fp.m + gr) * fp.r + gq];
                        }
                    } else if (gr < fp.rows && gr / fp.m == kp) {
                        hv = fp.scale * h[gr * fp.r + gq];
                    }
                    if (col0 + row < fp.o) {
                        bv = lora_b[b_base + (col0 + row) * fp.r + gq];
                    }
                }
                lhs_tile[row * TK + qq] = hv;
                rhs_tile[qq * TILE + row] = bv;
            }
            workgroupBarrier();
            multiply_tiles(lid.x, lid.y);
            workgroupBarrier();
        }
        if (shared_x) {
            write_forward_tile(lid, row0, col0, kp * fp.m);
        }
    }
    if (!shared_x) {
        write_forward_tile(lid, row0, col0, 0u);
    }
}

fn write_forward_tile(lid: vec3<u32>, row0: u32, col0: u32, out_row0: u32) {
    for (var i = 0u; i < 4u; i++) {
        let gr = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let gc = col0 + lid.x + 16u * j;
            if (gr < fp.rows && gc < fp.o) {
                var v = acc[i * 4u + j];
                if (fp.has_bias != 0u) {
                    v += bias[gc];
                }
                y[(out_row0 + gr) * fp.o + gc] = v;
            }
        }
    }
}

// dx_k = dy_k W + s · g_k A_k; for a shared x, dx = Σ_k dx_k.
@compute @workgroup_size(16, 16)
fn lora_dx(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    if (group >= dp.tiles_rows * dp.tiles_cols) {
        return;
    }
    let row0 = (group / dp.tiles_cols) * TILE;
    let col0 = (group % dp.tiles_cols) * TILE;
    let shared_x = dp.x_shared != 0u;
    for (var t = 0u; t < 16u; t++) {
        acc[t] = 0.0;
    }

    // Base product dy W, inner dimension O. A shared x sums dy over particles while staging.
    for (var k0 = 0u; k0 < dp.o; k0 += TK) {
        for (var l = 0u; l < 4u; l++) {
            let e = li + THREADS * l;
            let row = e / TK;
            let kk = e % TK;
            let gk = k0 + kk;
            let gr = row0 + row;
            var dv = 0.0;
            if (gr < dp.rows && gk < dp.o) {
                if (shared_x) {
                    for (var kp = 0u; kp < dp.k; kp++) {
                        dv += dy[(kp * dp.m + gr) * dp.o + gk];
                    }
                } else {
                    dv = dy[gr * dp.o + gk];
                }
            }
            lhs_tile[row * TK + kk] = dv;
            let wk = e / TILE;
            let col = e % TILE;
            var wv = 0.0;
            if (k0 + wk < dp.o && col0 + col < dp.i) {
                wv = weight_t[(k0 + wk) * dp.i + col0 + col];
            }
            rhs_tile[wk * TILE + col] = wv;
        }
        workgroupBarrier();
        multiply_tiles(lid.x, lid.y);
        workgroupBarrier();
    }

    // Low-rank term s · g_k A_k, inner dimension r, summed over the tile's particles.
    let ks = particle_range(dp.x_shared, dp.k, dp.m, dp.rows, row0);
    for (var kp = ks.x; kp < ks.y; kp++) {
        let a_base = dp.a_off + kp * dp.a_stride;
        for (var q0 = 0u; q0 < dp.r; q0 += TK) {
            for (var l = 0u; l < 4u; l++) {
                let e = li + THREADS * l;
                let row = e / TK;
                let qq = e % TK;
                let gq = q0 + qq;
                let gr = row0 + row;
                var gv = 0.0;
                if (gq < dp.r) {
                    if (shared_x) {
                        if (gr < dp.m) {
                            gv = dp.scale * g[(kp * dp.m + gr) * dp.r + gq];
                        }
                    } else if (gr < dp.rows && gr / dp.m == kp) {
                        gv = dp.scale * g[gr * dp.r + gq];
                    }
                }
                lhs_tile[row * TK + qq] = gv;
                let aq = e / TILE;
                let col = e % TILE;
                var av = 0.0;
                if (q0 + aq < dp.r && col0 + col < dp.i) {
                    av = lora_a[a_base + (q0 + aq) * dp.i + col0 + col];
                }
                rhs_tile[aq * TILE + col] = av;
            }
            workgroupBarrier();
            multiply_tiles(lid.x, lid.y);
            workgroupBarrier();
        }
    }

    for (var i = 0u; i < 4u; i++) {
        let gr = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let gc = col0 + lid.x + 16u * j;
            if (gr < dp.rows && gc < dp.i) {
                dx[gr * dp.i + gc] = acc[i * 4u + j];
            }
        }
    }
}
