// lora_forward and lora_backward (DESIGN.md ops 1 and 2): the two fused kernels.
//
// Launches (src/backend/wgpu/lora.rs). lora_forward: (1) h on matmul.wgsl, once for every
// particle: for a shared x one product `x [A_0; …; A_K-1]ᵀ` ([M, I] × [I, K·r], A read
// through the arena stride, h written as [K, M, r]), for a per-particle x a batch of K; (2)
// `lora_forward` below. lora_backward: g = dy B, d_lora_b, d_lora_a on matmul.wgsl, then
// `lora_dx` below.
//
// Each kernel comes in two tile sizes, chosen by the host like the GEMMs (`prefers_128` in
// src/backend/wgpu/matmul.rs): `lora_forward_128` / `lora_dx_128` (128×128 tiles, 8×8 per
// invocation, like `gemm_tiled_128`, at the end of this file) for big layers, and
// `lora_forward` / `lora_dx`, described here and first in the file. A 16-bit lora_forward
// (x, W, B bf16 or f16) runs `lora_forward_bf16` / `lora_forward_f16` (and `_128`; the last
// section), which read the packed operands as stored.
//
// Both kernels are 64×64-output GEMM tiles laid out like `gemm_tiled` in matmul.wgsl: 256
// invocations in a 16×16 grid, each a 4×4 register block (rows ty·4 + i, columns tx·4 + j),
// operand slices 32 deep in workgroup memory, k-major (sa[k][row], sb[k][col], as vec4 runs)
// so that every k step is one vec4 load of each operand for 16 FMAs. Global → workgroup
// memory moves 4×4 blocks: four 16-byte loads along the contiguous dimension (two
// shifted ones where an odd size or offset breaks alignment), a register transpose when that
// dimension is k, four vec4 stores; a quarter-warp stores 8 consecutive vec4s, so there are
// no bank conflicts without padding. The next slice is loaded while the current one is
// multiplied. See matmul.wgsl's header for the details, which are the same here.
//
// Rows: with a shared x the rows are the M rows of x; with a per-particle x they are the
// K·M stacked rows of x_k (row = k·M + m), so the base product is one GEMM either way and
// reads W once per tile.
//
// lora_forward: the base x Wᵀ is computed once per tile; then, for a shared x, for each
// particle k: d = base, d += (s h_k) B_kᵀ (inner dimension r), y_k = d + bias; for a
// per-particle x, one rank product over the particles the tile's rows belong to. The rank
// products run over a flat inner index j = k·r + q (particle k, rank q) in slices of 32,
// stepping 4 at a time up to the last valid j, so r = 4 costs one 4-deep step. An element
// (row, j) of the rank operand is 0 unless row belongs to particle j / r, so a tile whose
// rows span two particles multiplies the rank terms of both and each row keeps its own.
//
// lora_dx: dx_k = dy_k W + s · g_k A_k; for a shared x, dx = Σ_k dy_k W + s Σ_k g_k A_k:
// dy is summed over the particles while it is staged, and the rank part is one product over
// j ∈ [0, K·r) (the K particles' ranks concatenated).
//
// Parameters come from a read-only storage buffer, not a uniform one: Mesa's lavapipe (22.x)
// recompiles a kernel on every dispatch with the uniform values that control its loops
// folded in, and leaks each compiled variant (about 2 MB per `lora_dx` dispatch). It never
// does that for storage buffers. The host binds these two entry points accordingly
// (`ParamsIn::Storage` in src/backend/wgpu/kernels.rs).

struct LoraParams {
    k: u32,
    m: u32,
    i: u32,
    o: u32,
    r: u32,
    x_shared: u32,
    has_bias: u32,
    rows: u32,
    // The arena view of the factor bound at slot 3: lora_b (forward) or lora_a (dx).
    f_off: u32,
    f_stride: u32,
    tiles_rows: u32,
    tiles_cols: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Bindings, one role per slot in each entry point. The read-only operands are arrays of vec4
// for 16-byte loads (the host rounds their bindings up to 16 bytes); outputs and the bias are
// plain f32 arrays.
//   slot:          1     2       3       4   5     6
//   lora_forward:  x     weight  lora_b  h   bias  y
//   lora_dx:       dy    weight  lora_a  g   dx
//   lora_forward_bf16 / _f16 (and _128; at the end of the file): x16, w16, b16 (packed u32
//   words), then h, bias, y as lora_forward
@group(0) @binding(0) var<storage, read> lp: LoraParams;
@group(0) @binding(1) var<storage, read> lhs: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> factor: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> low: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;

const TILE: u32 = 64u;
const TK: u32 = 32u;

// Slices: 32 k × 16 vec4 (64 rows or columns) per operand, 8 KiB each, 16 KiB in all.
var<workgroup> sa: array<vec4<f32>, 512>;
var<workgroup> sb: array<vec4<f32>, 512>;

// acc[i]: row ty·4 + i, columns tx·4 .. tx·4 + 3. base: the frozen product (shared x).
var<private> acc: array<vec4<f32>, 4>;
var<private> base: array<vec4<f32>, 4>;
// The 128×128 kernels' 8×8 blocks: acc8[(h·4 + i)·2 + h'] is row h·64 + ty·4 + i, columns
// h'·64 + tx·4 .. + 3.
var<private> acc8: array<vec4<f32>, 16>;
var<private> base8: array<vec4<f32>, 16>;

// This invocation's tile and block: tile origin, its block's row/column quad and k quad.
var<private> row0: u32;
var<private> col0: u32;
var<private> bq: u32;
var<private> bkq: u32;
var<private> loads_a: bool;

// The phases: which operands a slice holds.
const FWD_BASE: u32 = 0u; // x · Wᵀ
const FWD_RANK: u32 = 1u; // (s h) · Bᵀ
const DX_BASE: u32 = 2u; // dy · W
const DX_RANK: u32 = 3u; // (s g) · A

// Small loops over register arrays are written out by hand (see the note in matmul.wgsl:
// lavapipe keeps a register array indexed by a loop variable in memory).

// The 4 elements from lo.s.. on of the 8 in (lo, hi): the vec4 at a misaligned index.
fn shift4(lo: vec4<f32>, hi: vec4<f32>, s: u32) -> vec4<f32> {
    var v = lo;
    v = select(v, vec4<f32>(lo.yzw, hi.x), s == 1u);
    v = select(v, vec4<f32>(lo.zw, hi.xy), s == 2u);
    v = select(v, vec4<f32>(lo.w, hi.xyz), s == 3u);
    return v;
}

// The first `count` lanes of v (the rest 0).
fn first4(v: vec4<f32>, count: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), v, vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(count));
}

// Four contiguous elements from index i, the first `count` of them (the rest 0): one 16-byte
// load when aligned and whole, else the two aligned vec4s that cover them, shifted into
// place (two loads and selects, no branch per element: on lavapipe both sides of every
// branch run). One per buffer: WGSL functions cannot take storage pointers.
fn lhs_load4(i: u32, count: u32) -> vec4<f32> {
    if (count == 4u && (i & 3u) == 0u) {
        return lhs[i >> 2u];
    }
    let last = arrayLength(&lhs) - 1u;
    return first4(shift4(lhs[min(i >> 2u, last)], lhs[min((i >> 2u) + 1u, last)], i & 3u), count);
}

fn weight_load4(i: u32, count: u32) -> vec4<f32> {
    if (count == 4u && (i & 3u) == 0u) {
        return weight[i >> 2u];
    }
    let last = arrayLength(&weight) - 1u;
    return first4(shift4(weight[min(i >> 2u, last)], weight[min((i >> 2u) + 1u, last)], i & 3u), count);
}

fn factor_load4(i: u32, count: u32) -> vec4<f32> {
    if (count == 4u && (i & 3u) == 0u) {
        return factor[i >> 2u];
    }
    let last = arrayLength(&factor) - 1u;
    return first4(shift4(factor[min(i >> 2u, last)], factor[min((i >> 2u) + 1u, last)], i & 3u), count);
}

fn low_load4(i: u32, count: u32) -> vec4<f32> {
    if (count == 4u && (i & 3u) == 0u) {
        return low[i >> 2u];
    }
    let last = arrayLength(&low) - 1u;
    return first4(shift4(low[min(i >> 2u, last)], low[min((i >> 2u) + 1u, last)], i & 3u), count);
}

fn in_range(start: u32, end: u32) -> u32 {
    return min(4u, end - min(start, end));
}

// The 4 lines of a block, as k-rows: transposed where the lines ran along k (`flip`).
fn k_rows(w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>, flip: bool) -> array<vec4<f32>, 4> {
    let t = transpose(mat4x4<f32>(w0, w1, w2, w3));
    return array<vec4<f32>, 4>(
        select(w0, t[0], flip),
        select(w1, t[1], flip),
        select(w2, t[2], flip),
        select(w3, t[3], flip),
    );
}

// Row r of a row-major [*, width] operand at k0.. (`count` elements), where `valid`.
fn lhs_line(r: u32, width: u32, k0: u32, count: u32, valid: bool) -> vec4<f32> {
    return lhs_load4(r * width + k0, select(0u, count, valid));
}

fn weight_line(r: u32, width: u32, k0: u32, count: u32, valid: bool) -> vec4<f32> {
    return weight_load4(r * width + k0, select(0u, count, valid));
}

// x rows r0..r0+4 (of the M or K·M rows) at k0..k0+4, as k-rows.
fn x_block(r0: u32, k0: u32) -> array<vec4<f32>, 4> {
    let nr = in_range(r0, lp.rows);
    let nk = in_range(k0, lp.i);
    return k_rows(
        lhs_line(r0, lp.i, k0, nk, 0u < nr),
        lhs_line(r0 + 1u, lp.i, k0, nk, 1u < nr),
        lhs_line(r0 + 2u, lp.i, k0, nk, 2u < nr),
        lhs_line(r0 + 3u, lp.i, k0, nk, 3u < nr),
        true,
    );
}

// Rows c0..c0+4 of W [O, I] at k0..k0+4, as k-rows (op(b) = Wᵀ).
fn w_block(c0: u32, k0: u32) -> array<vec4<f32>, 4> {
    let nc = in_range(c0, lp.o);
    let nk = in_range(k0, lp.i);
    return k_rows(
        weight_line(c0, lp.i, k0, nk, 0u < nc),
        weight_line(c0 + 1u, lp.i, k0, nk, 1u < nc),
        weight_line(c0 + 2u, lp.i, k0, nk, 2u < nc),
        weight_line(c0 + 3u, lp.i, k0, nk, 3u < nc),
        true,
    );
}

// dy row `row` at o = k0.. (`count` elements), summed over the particles for a shared x.
fn dy_line(row: u32, k0: u32, count: u32, valid: bool) -> vec4<f32> {
    let n = select(0u, count, valid);
    if (lp.x_shared == 0u) {
        return lhs_load4(row * lp.o + k0, n);
    }
    var v = vec4<f32>(0.0);
    for (var kp = 0u; kp < lp.k; kp++) {
        v += lhs_load4((kp * lp.m + row) * lp.o + k0, n);
    }
    return v;
}

// dy rows r0..r0+4 at o = k0..k0+4, as k-rows.
fn dy_block(r0: u32, k0: u32) -> array<vec4<f32>, 4> {
    let nr = in_range(r0, lp.rows);
    let nk = in_range(k0, lp.o);
    return k_rows(
        dy_line(r0, k0, nk, 0u < nr),
        dy_line(r0 + 1u, k0, nk, 1u < nr),
        dy_line(r0 + 2u, k0, nk, 2u < nr),
        dy_line(r0 + 3u, k0, nk, 3u < nr),
        true,
    );
}

// W [O, I] rows k0..k0+4 at columns c0..c0+4: already k-rows (op(b) = W).
fn wt_block(k0: u32, c0: u32) -> array<vec4<f32>, 4> {
    let nc = in_range(c0, lp.i);
    let nk = in_range(k0, lp.o);
    return k_rows(
        weight_line(k0, lp.i, c0, nc, 0u < nk),
        weight_line(k0 + 1u, lp.i, c0, nc, 1u < nk),
        weight_line(k0 + 2u, lp.i, c0, nc, 2u < nk),
        weight_line(k0 + 3u, lp.i, c0, nc, 3u < nk),
        false,
    );
}

// Index of h / g [K, M, r] at (row, j = kp·r + q); the row must belong to particle kp (a
// shared x: any row < M; a per-particle x: row / M == kp).
fn low_index(row: u32, kp: u32, q: u32) -> u32 {
    if (lp.x_shared != 0u) {
        return (kp * lp.m + row) * lp.r + q;
    }
    return row * lp.r + q;
}

fn row_in(row: u32, kp: u32) -> bool {
    if (lp.x_shared != 0u) {
        return row < lp.m;
    }
    return row < lp.rows && row / lp.m == kp;
}

// One element of h / g at (row, j), 0 outside [.., j_end) or another particle's row.
fn low_elem(row: u32, j: u32, j_end: u32) -> f32 {
    let kp = j / lp.r;
    let at = low_index(row, kp, j % lp.r);
    let v = low[min(at >> 2u, arrayLength(&low) - 1u)][at & 3u];
    return select(0.0, v, j < j_end && row_in(row, kp));
}

// s · h (or s · g) row `row` at j = j0..j0+4. Four j of one particle (`one`) are contiguous
// in memory: one load; across a particle boundary, element by element.
fn low_line(row: u32, j0: u32, j_end: u32, nj: u32, one: bool) -> vec4<f32> {
    let kp = j0 / lp.r;
    if (one) {
        let n = select(0u, nj, row_in(row, kp));
        return lp.scale * low_load4(low_index(row, kp, j0 % lp.r), n);
    }
    return lp.scale * vec4<f32>(
        low_elem(row, j0, j_end),
        low_elem(row, j0 + 1u, j_end),
        low_elem(row, j0 + 2u, j_end),
        low_elem(row, j0 + 3u, j_end),
    );
}

// s · h (or s · g) at rows r0..r0+4, j = j0..j0+4 (j < j_end), as k-rows.
fn low_block(r0: u32, j0: u32, j_end: u32) -> array<vec4<f32>, 4> {
    let nj = in_range(j0, j_end);
    let one = (j0 % lp.r) + nj <= lp.r;
    return k_rows(
        low_line(r0, j0, j_end, nj, one),
        low_line(r0 + 1u, j0, j_end, nj, one),
        low_line(r0 + 2u, j0, j_end, nj, one),
        low_line(r0 + 3u, j0, j_end, nj, one),
        true,
    );
}

// One element of B_kp [O, r] at (col, j = kp·r + q), 0 outside.
fn fb_elem(col: u32, j: u32, j_end: u32) -> f32 {
    let at = lp.f_off + (j / lp.r) * lp.f_stride + col * lp.r + j % lp.r;
    let v = factor[min(at >> 2u, arrayLength(&factor) - 1u)][at & 3u];
    return select(0.0, v, j < j_end && col < lp.o);
}

// B row `col` (a column of y) at j = j0..j0+4.
fn fb_line(col: u32, j0: u32, j_end: u32, nj: u32, one: bool) -> vec4<f32> {
    if (one) {
        let n = select(0u, nj, col < lp.o);
        return factor_load4(lp.f_off + (j0 / lp.r) * lp.f_stride + col * lp.r + j0 % lp.r, n);
    }
    return vec4<f32>(
        fb_elem(col, j0, j_end),
        fb_elem(col, j0 + 1u, j_end),
        fb_elem(col, j0 + 2u, j_end),
        fb_elem(col, j0 + 3u, j_end),
    );
}

// B_kp [O, r] rows (columns of y) c0..c0+4 at j = j0..j0+4, as k-rows (op(b) = Bᵀ).
fn fb_block(c0: u32, j0: u32, j_end: u32) -> array<vec4<f32>, 4> {
    let nj = in_range(j0, j_end);
    let one = (j0 % lp.r) + nj <= lp.r;
    return k_rows(
        fb_line(c0, j0, j_end, nj, one),
        fb_line(c0 + 1u, j0, j_end, nj, one),
        fb_line(c0 + 2u, j0, j_end, nj, one),
        fb_line(c0 + 3u, j0, j_end, nj, one),
        true,
    );
}

// A row j (particle j / r, rank j % r) at columns c0.. (`count`), where `valid`.
fn fa_line(j: u32, c0: u32, count: u32, valid: bool) -> vec4<f32> {
    let at = lp.f_off + (j / lp.r) * lp.f_stride + (j % lp.r) * lp.i + c0;
    return factor_load4(at, select(0u, count, valid));
}

// A_kp [r, I] rows j = j0..j0+4 at columns c0..c0+4: already k-rows (op(b) = A).
fn fa_block(j0: u32, c0: u32, j_end: u32) -> array<vec4<f32>, 4> {
    let nc = in_range(c0, lp.i);
    let nj = in_range(j0, j_end);
    return k_rows(
        fa_line(j0, c0, nc, 0u < nj),
        fa_line(j0 + 1u, c0, nc, 1u < nj),
        fa_line(j0 + 2u, c0, nc, 2u < nj),
        fa_line(j0 + 3u, c0, nc, 3u < nj),
        false,
    );
}

// This invocation's block of the slice starting at k (invocations 0–127: the left operand,
// 128–255: the right one).
fn load_block(phase: u32, k: u32, k_end: u32) -> array<vec4<f32>, 4> {
    let kb = k + bkq * 4u;
    var v: array<vec4<f32>, 4>;
    if (loads_a) {
        switch phase {
            case FWD_BASE: {
                v = x_block(row0 + bq * 4u, kb);
            }
            case DX_BASE: {
                v = dy_block(row0 + bq * 4u, kb);
            }
            default: {
                v = low_block(row0 + bq * 4u, kb, k_end);
            }
        }
    } else {
        switch phase {
            case FWD_BASE: {
                v = w_block(col0 + bq * 4u, kb);
            }
            case FWD_RANK: {
                v = fb_block(col0 + bq * 4u, kb, k_end);
            }
            case DX_BASE: {
                v = wt_block(kb, col0 + bq * 4u);
            }
            default: {
                v = fa_block(kb, col0 + bq * 4u, k_end);
            }
        }
    }
    return v;
}

// A block's 4 k-rows into a slice, `stride` vec4s apart.
fn stage_a(at: u32, stride: u32, v: array<vec4<f32>, 4>) {
    sa[at] = v[0];
    sa[at + stride] = v[1];
    sa[at + 2u * stride] = v[2];
    sa[at + 3u * stride] = v[3];
}

fn stage_b(at: u32, stride: u32, v: array<vec4<f32>, 4>) {
    sb[at] = v[0];
    sb[at + stride] = v[1];
    sb[at + 2u * stride] = v[2];
    sb[at + 3u * stride] = v[3];
}

// acc += op(a)[tile rows, k_beg..k_end] · op(b)[k_beg..k_end, tile columns] for `phase`:
// slices of 32 (half the per-slice overhead of 16: block loads and two barriers), the next
// one loaded into registers while the current one is multiplied.
fn run_phase(phase: u32, k_beg: u32, k_end: u32, tx: u32, ty: u32) {
    var blk = load_block(phase, k_beg, k_end);
    for (var k0 = k_beg; k0 < k_end; k0 += TK) {
        if (loads_a) {
            stage_a(bkq * 64u + bq, 16u, blk);
        } else {
            stage_b(bkq * 64u + bq, 16u, blk);
        }
        workgroupBarrier();
        if (k0 + TK < k_end) {
            blk = load_block(phase, k0 + TK, k_end);
        }
        let nq = (min(TK, k_end - k0) + 3u) / 4u;
        for (var s = 0u; s < nq; s++) {
            for (var u = 0u; u < 4u; u++) {
                let kk = s * 4u + u;
                let av = sa[kk * 16u + ty];
                let bv = sb[kk * 16u + tx];
                acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
                acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
                acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
                acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
            }
        }
        workgroupBarrier();
    }
}

// Tile origin (tiles of `tile` × `tile`) and this invocation's block role: `quads` row or
// column quads per operand slice (16 for 64-tiles, 32 for 128-tiles).
fn setup(group: u32, li: u32, tile: u32, quads: u32) {
    row0 = (group / lp.tiles_cols) * tile;
    col0 = (group % lp.tiles_cols) * tile;
    bq = li % quads;
    bkq = (li % 128u) / quads;
    loads_a = li < 128u;
    acc = array<vec4<f32>, 4>();
    acc8 = array<vec4<f32>, 16>();
}

// The particles whose rows fall in the tile's [r0, r0 + tile) of a per-particle x (from
// the workgroup id, not the private row0: barriers depend on it, so it must be uniform).
fn particle_range(group: u32, tile: u32) -> vec2<u32> {
    let r0 = (group / lp.tiles_cols) * tile;
    let last = min(lp.rows, r0 + tile) - 1u;
    return vec2<u32>(r0 / lp.m, last / lp.m + 1u);
}

// y[out_row, col .. col + 4] = v (+ bias), for tile row `row` < rows_end.
fn y_row(row: u32, rows_end: u32, out_row: u32, col: u32, v: vec4<f32>) {
    if (row < rows_end) {
        let at = out_row * lp.o + col;
        let has_bias = lp.has_bias != 0u;
        if (col < lp.o) {
            y[at] = v.x + select(0.0, bias[col], has_bias);
        }
        if (col + 1u < lp.o) {
            y[at + 1u] = v.y + select(0.0, bias[col + 1u], has_bias);
        }
        if (col + 2u < lp.o) {
            y[at + 2u] = v.z + select(0.0, bias[col + 2u], has_bias);
        }
        if (col + 3u < lp.o) {
            y[at + 3u] = v.w + select(0.0, bias[col + 3u], has_bias);
        }
    }
}

// The tile's y rows at (out_row0 + tile row), tile rows < rows_end, plus the bias.
fn write_y(tx: u32, ty: u32, out_row0: u32, rows_end: u32) {
    let r = row0 + ty * 4u;
    let col = col0 + tx * 4u;
    y_row(r, rows_end, out_row0 + r, col, acc[0]);
    y_row(r + 1u, rows_end, out_row0 + r + 1u, col, acc[1]);
    y_row(r + 2u, rows_end, out_row0 + r + 2u, col, acc[2]);
    y_row(r + 3u, rows_end, out_row0 + r + 3u, col, acc[3]);
}

// y_k = x_k Wᵀ + bias + s · h_k B_kᵀ for every particle, h already computed.
@compute @workgroup_size(256)
fn lora_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    if (group >= lp.tiles_rows * lp.tiles_cols) {
        return;
    }
    setup(group, li, TILE, 16u);
    let tx = li % 16u;
    let ty = li / 16u;

    // Base product x Wᵀ: once per tile, whatever K.
    run_phase(FWD_BASE, 0u, lp.i, tx, ty);

    if (lp.x_shared != 0u) {
        base = acc;
        for (var kp = 0u; kp < lp.k; kp++) {
            acc = base;
            run_phase(FWD_RANK, kp * lp.r, (kp + 1u) * lp.r, tx, ty);
            write_y(tx, ty, kp * lp.m, lp.m);
        }
    } else {
        let ks = particle_range(group, TILE);
        run_phase(FWD_RANK, ks.x * lp.r, ks.y * lp.r, tx, ty);
        write_y(tx, ty, 0u, lp.rows);
    }
}

// dx[row, col .. col + 4] = v, within the matrix.
fn dx_row(row: u32, col: u32, v: vec4<f32>) {
    if (row < lp.rows) {
        let at = row * lp.i + col;
        if (col < lp.i) {
            dx[at] = v.x;
        }
        if (col + 1u < lp.i) {
            dx[at + 1u] = v.y;
        }
        if (col + 2u < lp.i) {
            dx[at + 2u] = v.z;
        }
        if (col + 3u < lp.i) {
            dx[at + 3u] = v.w;
        }
    }
}

// dx_k = dy_k W + s · g_k A_k; for a shared x, dx = Σ_k dx_k.
@compute @workgroup_size(256)
fn lora_dx(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    if (group >= lp.tiles_rows * lp.tiles_cols) {
        return;
    }
    setup(group, li, TILE, 16u);
    let tx = li % 16u;
    let ty = li / 16u;

    // Base product dy W, inner dimension O (dy summed over the particles for a shared x).
    run_phase(DX_BASE, 0u, lp.o, tx, ty);
    // Rank part s · g A over the tile's particles' ranks (all K·r for a shared x).
    var ks = vec2<u32>(0u, lp.k);
    if (lp.x_shared == 0u) {
        ks = particle_range(group, TILE);
    }
    run_phase(DX_RANK, ks.x * lp.r, ks.y * lp.r, tx, ty);

    let r = row0 + ty * 4u;
    let col = col0 + tx * 4u;
    dx_row(r, col, acc[0]);
    dx_row(r + 1u, col, acc[1]);
    dx_row(r + 2u, col, acc[2]);
    dx_row(r + 3u, col, acc[3]);
}

// ---------------------------------------------------------------------------------------
// lora_forward_128 / lora_dx_128: the same two kernels on 128×128 tiles, 8×8 outputs per
// invocation laid out like `gemm_tiled_128` (two 4-row halves 64 apart × two 4-column halves
// 64 apart: a half-warp reads 16 consecutive vec4s of sb and two of sa, broadcast), slices 16
// deep (16 KiB: the same sa / sb). Blocks: 32 quads × 4 k quads per operand, invocations
// 0–127 the left operand, 128–255 the right one. For big layers: 4 vec4 workgroup loads per
// 64 FMAs instead of 2 per 16. The block loaders, phases and epilogue rows are shared with
// the 64×64 kernels above.

const TILE_BIG: u32 = 128u;
const TK_BIG: u32 = 16u;

fn run_phase_128(phase: u32, k_beg: u32, k_end: u32, tx: u32, ty: u32) {
    var blk = load_block(phase, k_beg, k_end);
    for (var k0 = k_beg; k0 < k_end; k0 += TK_BIG) {
        if (loads_a) {
            stage_a(bkq * 128u + bq, 32u, blk);
        } else {
            stage_b(bkq * 128u + bq, 32u, blk);
        }
        workgroupBarrier();
        if (k0 + TK_BIG < k_end) {
            blk = load_block(phase, k0 + TK_BIG, k_end);
        }
        let nq = (min(TK_BIG, k_end - k0) + 3u) / 4u;
        for (var s = 0u; s < nq; s++) {
            for (var u = 0u; u < 4u; u++) {
                let kk = s * 4u + u;
                let a0 = sa[kk * 32u + ty];
                let a1 = sa[kk * 32u + 16u + ty];
                let b0 = sb[kk * 32u + tx];
                let b1 = sb[kk * 32u + 16u + tx];
                acc8[0] = fma(vec4<f32>(a0.x), b0, acc8[0]);
                acc8[1] = fma(vec4<f32>(a0.x), b1, acc8[1]);
                acc8[2] = fma(vec4<f32>(a0.y), b0, acc8[2]);
                acc8[3] = fma(vec4<f32>(a0.y), b1, acc8[3]);
                acc8[4] = fma(vec4<f32>(a0.z), b0, acc8[4]);
                acc8[5] = fma(vec4<f32>(a0.z), b1, acc8[5]);
                acc8[6] = fma(vec4<f32>(a0.w), b0, acc8[6]);
                acc8[7] = fma(vec4<f32>(a0.w), b1, acc8[7]);
                acc8[8] = fma(vec4<f32>(a1.x), b0, acc8[8]);
                acc8[9] = fma(vec4<f32>(a1.x), b1, acc8[9]);
                acc8[10] = fma(vec4<f32>(a1.y), b0, acc8[10]);
                acc8[11] = fma(vec4<f32>(a1.y), b1, acc8[11]);
                acc8[12] = fma(vec4<f32>(a1.z), b0, acc8[12]);
                acc8[13] = fma(vec4<f32>(a1.z), b1, acc8[13]);
                acc8[14] = fma(vec4<f32>(a1.w), b0, acc8[14]);
                acc8[15] = fma(vec4<f32>(a1.w), b1, acc8[15]);
            }
        }
        workgroupBarrier();
    }
}

// The 8×8 block's y rows at (out_row0 + tile row), tile rows < rows_end, plus the bias.
fn write_y_128(tx: u32, ty: u32, out_row0: u32, rows_end: u32) {
    let r = row0 + ty * 4u;
    let c = col0 + tx * 4u;
    let o = out_row0 + r;
    y_row(r, rows_end, o, c, acc8[0]);
    y_row(r, rows_end, o, c + 64u, acc8[1]);
    y_row(r + 1u, rows_end, o + 1u, c, acc8[2]);
    y_row(r + 1u, rows_end, o + 1u, c + 64u, acc8[3]);
    y_row(r + 2u, rows_end, o + 2u, c, acc8[4]);
    y_row(r + 2u, rows_end, o + 2u, c + 64u, acc8[5]);
    y_row(r + 3u, rows_end, o + 3u, c, acc8[6]);
    y_row(r + 3u, rows_end, o + 3u, c + 64u, acc8[7]);
    y_row(r + 64u, rows_end, o + 64u, c, acc8[8]);
    y_row(r + 64u, rows_end, o + 64u, c + 64u, acc8[9]);
    y_row(r + 65u, rows_end, o + 65u, c, acc8[10]);
    y_row(r + 65u, rows_end, o + 65u, c + 64u, acc8[11]);
    y_row(r + 66u, rows_end, o + 66u, c, acc8[12]);
    y_row(r + 66u, rows_end, o + 66u, c + 64u, acc8[13]);
    y_row(r + 67u, rows_end, o + 67u, c, acc8[14]);
    y_row(r + 67u, rows_end, o + 67u, c + 64u, acc8[15]);
}

@compute @workgroup_size(256)
fn lora_forward_128(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    if (group >= lp.tiles_rows * lp.tiles_cols) {
        return;
    }
    setup(group, li, TILE_BIG, 32u);
    let tx = li % 16u;
    let ty = li / 16u;

    run_phase_128(FWD_BASE, 0u, lp.i, tx, ty);

    if (lp.x_shared != 0u) {
        base8 = acc8;
        for (var kp = 0u; kp < lp.k; kp++) {
            acc8 = base8;
            run_phase_128(FWD_RANK, kp * lp.r, (kp + 1u) * lp.r, tx, ty);
            write_y_128(tx, ty, kp * lp.m, lp.m);
        }
    } else {
        let ks = particle_range(group, TILE_BIG);
        run_phase_128(FWD_RANK, ks.x * lp.r, ks.y * lp.r, tx, ty);
        write_y_128(tx, ty, 0u, lp.rows);
    }
}

@compute @workgroup_size(256)
fn lora_dx_128(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    if (group >= lp.tiles_rows * lp.tiles_cols) {
        return;
    }
    setup(group, li, TILE_BIG, 32u);
    let tx = li % 16u;
    let ty = li / 16u;

    run_phase_128(DX_BASE, 0u, lp.o, tx, ty);
    var ks = vec2<u32>(0u, lp.k);
    if (lp.x_shared == 0u) {
        ks = particle_range(group, TILE_BIG);
    }
    run_phase_128(DX_RANK, ks.x * lp.r, ks.y * lp.r, tx, ty);

    let r = row0 + ty * 4u;
    let c = col0 + tx * 4u;
    dx_row(r, c, acc8[0]);
    dx_row(r, c + 64u, acc8[1]);
    dx_row(r + 1u, c, acc8[2]);
    dx_row(r + 1u, c + 64u, acc8[3]);
    dx_row(r + 2u, c, acc8[4]);
    dx_row(r + 2u, c + 64u, acc8[5]);
    dx_row(r + 3u, c, acc8[6]);
    dx_row(r + 3u, c + 64u, acc8[7]);
    dx_row(r + 64u, c, acc8[8]);
    dx_row(r + 64u, c + 64u, acc8[9]);
    dx_row(r + 65u, c, acc8[10]);
    dx_row(r + 65u, c + 64u, acc8[11]);
    dx_row(r + 66u, c, acc8[12]);
    dx_row(r + 66u, c + 64u, acc8[13]);
    dx_row(r + 67u, c, acc8[14]);
    dx_row(r + 67u, c + 64u, acc8[15]);
}

// ---- 16-bit lora_forward: lora_forward_bf16, lora_forward_f16 ----
//
// The fused pass of `lora_forward` (above) with x, W and B read as the packed 16-bit words
// they are stored as (bf16 or f16, two per u32, element 2i in the low half; the layout of
// `gemm_tiled_bf16` in matmul.wgsl): no f32 copy of an operand is made. Each element is
// widened to f32 exactly as it is staged, the products and sums are f32 (`fma`), h and y
// are f32, the bias f32 (the host widens a 16-bit one: O elements). The same parameters and
// tiles as `lora_forward` and `lora_forward_128` (`_128` entries, chosen by the host the
// same way): base x Wᵀ once per tile, then the rank term over the flat j = k·r + q, 0 for
// the rows of other particles (`low_elem`). Operand slices in workgroup memory as the f32
// kernels hold them (k-major vec4s of 4 rows or columns, 8 KiB per operand: 32 deep for
// 64-tiles, 16 for 128-tiles), so the inner loop is theirs: one vec4 of each operand per k
// for 16 (4×4 block) or two of each for 64 FMAs (8×8). Staging differs: each invocation
// reads 8 consecutive halves of one row (5 words, any alignment), widens them and writes
// them as one component of 8 vec4s; no prefetch of the next slice. PTX has no entry of
// these names: its 16-bit lora_forward is `lora_forward_mma_*`, on the tensor cores.

@group(0) @binding(1) var<storage, read> x16: array<u32>;
@group(0) @binding(2) var<storage, read> w16: array<u32>;
@group(0) @binding(3) var<storage, read> b16: array<u32>;

const H_TK: u32 = 32u;

// One 32-deep slice per operand, k-major: ha[k·16 + q] = rows (columns) 4q .. 4q + 3 at depth
// k, so that each k step reads one vec4 of each operand for 16 FMAs, as in `lora_forward`.
var<workgroup> ha: array<vec4<f32>, 512>;
var<workgroup> hb: array<vec4<f32>, 512>;

// f16 bits (low 16 of h) -> f32 bits, exactly (cast.wgsl's f16_to_f32_bits; WGSL has no
// include, and unpack2x16float may flush subnormals).
fn f16_widen(h: u32) -> u32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0x1fu) {
        // inf, or a NaN (kept quiet, its payload shifted into place).
        if (m == 0u) {
            return sign | 0x7f800000u;
        }
        return sign | 0x7fc00000u | (m << 13u);
    }
    if (e == 0u) {
        if (m == 0u) {
            return sign;
        }
        // A subnormal m · 2^-24 with its top bit at q (0..9) is 1.f · 2^(q - 24).
        let q = 31u - countLeadingZeros(m);
        return sign | ((q + 103u) << 23u) | ((m << (23u - q)) & 0x7fffffu);
    }
    return sign | ((e + 112u) << 23u) | (m << 13u);
}

// Element e of the packed words holding `word` (= words[e >> 1]), widened exactly.
fn half_value(word: u32, e: u32, is_f16: bool) -> f32 {
    let bits = (word >> ((e & 1u) * 16u)) & 0xffffu;
    if (is_f16) {
        return bitcast<f32>(f16_widen(bits));
    }
    return bitcast<f32>(bits << 16u);
}

// Both elements of a packed word, widened: (low half, high half).
fn widen2(w: u32, is_f16: bool) -> vec2<f32> {
    return vec2<f32>(half_value(w, 0u, is_f16), half_value(w, 1u, is_f16));
}

// Elements e0 .. e0 + 7 of `words` (x16 or w16: `x_words`) widened, as two vec4 (t = 0..3,
// 4..7), element t 0 unless t < n. Five words from e0 >> 1 cover an odd e0; loads past the
// array's end are clamped to its last word (their elements are masked). Written out by hand:
// lavapipe keeps a private array indexed by a loop variable in memory.
fn eight(x_words: bool, e0: u32, n: u32, is_f16: bool) -> array<vec4<f32>, 2> {
    let w0 = e0 >> 1u;
    var last = arrayLength(&w16) - 1u;
    if (x_words) {
        last = arrayLength(&x16) - 1u;
    }
    var p: array<vec2<f32>, 5>;
    if (x_words) {
        p[0] = widen2(x16[min(w0, last)], is_f16);
        p[1] = widen2(x16[min(w0 + 1u, last)], is_f16);
        p[2] = widen2(x16[min(w0 + 2u, last)], is_f16);
        p[3] = widen2(x16[min(w0 + 3u, last)], is_f16);
        p[4] = widen2(x16[min(w0 + 4u, last)], is_f16);
    } else {
        p[0] = widen2(w16[min(w0, last)], is_f16);
        p[1] = widen2(w16[min(w0 + 1u, last)], is_f16);
        p[2] = widen2(w16[min(w0 + 2u, last)], is_f16);
        p[3] = widen2(w16[min(w0 + 3u, last)], is_f16);
        p[4] = widen2(w16[min(w0 + 4u, last)], is_f16);
    }
    let even = (e0 & 1u) == 0u;
    let lo = select(vec4<f32>(p[0].y, p[1].x, p[1].y, p[2].x), vec4<f32>(p[0], p[1]), even);
    let hi = select(vec4<f32>(p[2].y, p[3].x, p[3].y, p[4].x), vec4<f32>(p[2], p[3]), even);
    let t = vec4<u32>(0u, 1u, 2u, 3u);
    return array<vec4<f32>, 2>(
        select(vec4<f32>(0.0), lo, t < vec4<u32>(n)),
        select(vec4<f32>(0.0), hi, t + 4u < vec4<u32>(n)),
    );
}

// Row `row` of the stacked x (a shared x: its M rows; else the K·M rows of x_k) at
// k0 .. k0 + 7, widened, 0 outside.
fn x16_eight(row: u32, k0: u32, is_f16: bool) -> array<vec4<f32>, 2> {
    let n = select(0u, min(8u, lp.i - min(k0, lp.i)), row < lp.rows);
    return eight(true, row * lp.i + k0, n, is_f16);
}

// Row `col` of W at k0 .. k0 + 7, widened, 0 outside.
fn w16_eight(col: u32, k0: u32, is_f16: bool) -> array<vec4<f32>, 2> {
    let n = select(0u, min(8u, lp.i - min(k0, lp.i)), col < lp.o);
    return eight(false, col * lp.i + k0, n, is_f16);
}

// B_kp[col, q] at j = kp·r + q (the arena view f_off + kp·f_stride), 0 outside [.., j_end).
fn b16_at(col: u32, j: u32, j_end: u32, is_f16: bool) -> f32 {
    if (col >= lp.o || j >= j_end) {
        return 0.0;
    }
    let e = lp.f_off + (j / lp.r) * lp.f_stride + col * lp.r + j % lp.r;
    return half_value(b16[e >> 1u], e, is_f16);
}

// acc (64×64 tiles) or acc8 (`big`: 128×128 tiles, 8×8 per invocation as in
// `lora_forward_128`) += the tile's product over t in [t_beg, t_end): x Wᵀ over k (`rank`
// false), or (s h) Bᵀ over j (`rank` true). Slices are 32 deep (64-tiles) or 16 (128-tiles),
// both 512 vec4 per operand. Staging: invocation li widens 8 consecutive t (from
// 8·(li / tile)) of tile row (column) c = li % tile into component c % 4 of the slice's vec4s.
fn half_phase(rank: bool, t_beg: u32, t_end: u32, li: u32, is_f16: bool, big: bool) {
    let tile = select(TILE, TILE_BIG, big);
    let quads = tile / 4u;
    let slice = select(H_TK, TK_BIG, big);
    let c = li % tile;
    let t8 = (li / tile) * 8u;
    let tx = li % 16u;
    let ty = li / 16u;
    for (var t0 = t_beg; t0 < t_end; t0 += slice) {
        var a: array<vec4<f32>, 2>;
        var b: array<vec4<f32>, 2>;
        if (rank) {
            let j = t0 + t8;
            let row = row0 + c;
            let col = col0 + c;
            a[0] = lp.scale * vec4<f32>(low_elem(row, j, t_end), low_elem(row, j + 1u, t_end),
                low_elem(row, j + 2u, t_end), low_elem(row, j + 3u, t_end));
            a[1] = lp.scale * vec4<f32>(low_elem(row, j + 4u, t_end), low_elem(row, j + 5u, t_end),
                low_elem(row, j + 6u, t_end), low_elem(row, j + 7u, t_end));
            b[0] = vec4<f32>(b16_at(col, j, t_end, is_f16), b16_at(col, j + 1u, t_end, is_f16),
                b16_at(col, j + 2u, t_end, is_f16), b16_at(col, j + 3u, t_end, is_f16));
            b[1] = vec4<f32>(b16_at(col, j + 4u, t_end, is_f16), b16_at(col, j + 5u, t_end, is_f16),
                b16_at(col, j + 6u, t_end, is_f16), b16_at(col, j + 7u, t_end, is_f16));
        } else {
            a = x16_eight(row0 + c, t0 + t8, is_f16);
            b = w16_eight(col0 + c, t0 + t8, is_f16);
        }
        // component c % 4 of the vec4 holding tile rows (columns) c - c % 4 .. at depth t8 + t
        let at = t8 * quads + c / 4u;
        let q = c % 4u;
        ha[at][q] = a[0].x;
        ha[at + quads][q] = a[0].y;
        ha[at + 2u * quads][q] = a[0].z;
        ha[at + 3u * quads][q] = a[0].w;
        ha[at + 4u * quads][q] = a[1].x;
        ha[at + 5u * quads][q] = a[1].y;
        ha[at + 6u * quads][q] = a[1].z;
        ha[at + 7u * quads][q] = a[1].w;
        hb[at][q] = b[0].x;
        hb[at + quads][q] = b[0].y;
        hb[at + 2u * quads][q] = b[0].z;
        hb[at + 3u * quads][q] = b[0].w;
        hb[at + 4u * quads][q] = b[1].x;
        hb[at + 5u * quads][q] = b[1].y;
        hb[at + 6u * quads][q] = b[1].z;
        hb[at + 7u * quads][q] = b[1].w;
        workgroupBarrier();
        let depth = min(slice, t_end - t0);
        if (big) {
            for (var kk = 0u; kk < depth; kk++) {
                let a0 = ha[kk * 32u + ty];
                let a1 = ha[kk * 32u + 16u + ty];
                let b0 = hb[kk * 32u + tx];
                let b1 = hb[kk * 32u + 16u + tx];
                acc8[0] = fma(vec4<f32>(a0.x), b0, acc8[0]);
                acc8[1] = fma(vec4<f32>(a0.x), b1, acc8[1]);
                acc8[2] = fma(vec4<f32>(a0.y), b0, acc8[2]);
                acc8[3] = fma(vec4<f32>(a0.y), b1, acc8[3]);
                acc8[4] = fma(vec4<f32>(a0.z), b0, acc8[4]);
                acc8[5] = fma(vec4<f32>(a0.z), b1, acc8[5]);
                acc8[6] = fma(vec4<f32>(a0.w), b0, acc8[6]);
                acc8[7] = fma(vec4<f32>(a0.w), b1, acc8[7]);
                acc8[8] = fma(vec4<f32>(a1.x), b0, acc8[8]);
                acc8[9] = fma(vec4<f32>(a1.x), b1, acc8[9]);
                acc8[10] = fma(vec4<f32>(a1.y), b0, acc8[10]);
                acc8[11] = fma(vec4<f32>(a1.y), b1, acc8[11]);
                acc8[12] = fma(vec4<f32>(a1.z), b0, acc8[12]);
                acc8[13] = fma(vec4<f32>(a1.z), b1, acc8[13]);
                acc8[14] = fma(vec4<f32>(a1.w), b0, acc8[14]);
                acc8[15] = fma(vec4<f32>(a1.w), b1, acc8[15]);
            }
        } else {
            for (var kk = 0u; kk < depth; kk++) {
                let av = ha[kk * 16u + ty];
                let bv = hb[kk * 16u + tx];
                acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
                acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
                acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
                acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
            }
        }
        workgroupBarrier();
    }
}

// y_k = x_k Wᵀ + bias + s · h_k B_kᵀ for every particle, h already computed; the flow of
// `lora_forward` (`lora_forward_128` when `big`).
fn lora_forward_half(wid: vec3<u32>, nwg: vec3<u32>, li: u32, is_f16: bool, big: bool) {
    let group = wid.x + wid.y * nwg.x;
    if (group >= lp.tiles_rows * lp.tiles_cols) {
        return;
    }
    let tile = select(TILE, TILE_BIG, big);
    row0 = (group / lp.tiles_cols) * tile;
    col0 = (group % lp.tiles_cols) * tile;
    acc = array<vec4<f32>, 4>();
    acc8 = array<vec4<f32>, 16>();
    let tx = li % 16u;
    let ty = li / 16u;

    half_phase(false, 0u, lp.i, li, is_f16, big);

    if (lp.x_shared != 0u) {
        base = acc;
        base8 = acc8;
        for (var kp = 0u; kp < lp.k; kp++) {
            acc = base;
            acc8 = base8;
            half_phase(true, kp * lp.r, (kp + 1u) * lp.r, li, is_f16, big);
            if (big) {
                write_y_128(tx, ty, kp * lp.m, lp.m);
            } else {
                write_y(tx, ty, kp * lp.m, lp.m);
            }
        }
    } else {
        let ks = particle_range(group, tile);
        half_phase(true, ks.x * lp.r, ks.y * lp.r, li, is_f16, big);
        if (big) {
            write_y_128(tx, ty, 0u, lp.rows);
        } else {
            write_y(tx, ty, 0u, lp.rows);
        }
    }
}

@compute @workgroup_size(256)
fn lora_forward_bf16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    lora_forward_half(wid, nwg, li, false, false);
}

@compute @workgroup_size(256)
fn lora_forward_f16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    lora_forward_half(wid, nwg, li, true, false);
}

@compute @workgroup_size(256)
fn lora_forward_bf16_128(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    lora_forward_half(wid, nwg, li, false, true);
}

@compute @workgroup_size(256)
fn lora_forward_f16_128(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    lora_forward_half(wid, nwg, li, true, true);
}
