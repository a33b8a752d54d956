// matmul (DESIGN.md op 3) and the small products of lora_forward / lora_backward: for each
// batch block b, c_b = alpha · op(a)_b op(b)_b, written (never accumulated).
//
// Three entry points, one contract, one parameter struct; the host picks one per dispatch
// (src/backend/wgpu/matmul.rs):
//
// - `gemm_tiled_128`: 128×128 output tiles, 8×8 outputs per invocation (two 4-row halves
//   64 apart × two 4-column halves 64 apart), k staged 16 deep. For big products.
// - `gemm_tiled`: 64×64 tiles, 4×4 outputs per invocation, k staged 32 deep. The default.
// - `gemm_narrow_splitk`: 64×16 tiles for products at most 16 columns wide (the r-wide LoRA
//   products; the host turns a product at most 16 rows tall into one by computing cᵀ), with
//   the k loop split four ways inside the workgroup: each quarter of the invocations (4×4
//   outputs each) takes 8 of every 32 k, and the four partial tiles are summed through
//   workgroup memory at the end. A 16-wide tile has few outputs per workgroup; the split
//   keeps 256 invocations busy on it without a second launch.
//
// Names follow kernels/matmul.ptx (`gemm_tiled_128`, `gemm_tiled`, `gemm_narrow_splitk`; the
// PTX narrow kernel splits k 16 ways over 8×8 register blocks, not 4 ways over 4×4).
//
// Operands are described by strides, so transposes, batch strides (0: shared by every
// block) and the grouped columns of the stacked LoRA products are one code path:
//
//   op(a)[row, k]   = a[a_off + batch·a_bs + row·a_rs + k·a_ks]
//   op(b)[k, col]   = b[b_off + batch·b_bs + k·b_ks + (col / b_grp)·b_gs + (col % b_grp)·b_cs]
//   c[row, col]     = c[c_off + batch·c_bs + row·c_rs + (col / c_grp)·c_gs + (col % c_grp)·c_cs]
//
// (b_grp = c_grp = n and b_gs = c_gs = 0 for an ordinary product; the host's stacked
// `h = x [A_0; …; A_K-1]ᵀ` groups the K·r columns r at a time, one group per particle.)
//
// Workgroup memory holds both operand slices k-major: sa[k][row], sb[k][col], each row of
// the slice a run of vec4s. Every invocation reads its 4 rows of a and its 4 columns of b at
// one k as one vec4 each, so one workgroup-memory load feeds 4 (vec4) FMAs: per k step
// `gemm_tiled` does 2 vec4 loads for 16 FMAs, `gemm_tiled_128` 4 for 64 (the previous kernel
// did 8 scalar loads for 16).
//
// Global → workgroup memory, the load pattern: a slice is cut into 4×4 blocks (4 rows or
// columns × 4 k) and one invocation moves one block per slice: four 16-byte loads along
// whichever dimension is contiguous in memory, a 4×4 transpose in registers when that
// dimension is k, and four 16-byte stores of whole k-rows of the block. So every store into
// workgroup memory is a vec4 and the invocations of a quarter-warp store 8 consecutive
// vec4s: no bank conflicts, and no padding needed (the transposing stores of the previous
// kernel were scalar and hit one bank 16 ways). The next slice's block is loaded into
// registers while the current one is multiplied.
//
// A 16-byte global load is used when its four elements are contiguous, in range and
// 16-byte aligned (tested per load at run time; where odd sizes or offsets break that, the
// two aligned vec4s around the four elements are loaded and shifted into place, indices
// clamped to the binding). That is why a and b are bound as arrays of vec4 (the host rounds
// the binding up to 16 bytes; pooled buffers are ≥ 256 bytes and a power of two). c is a
// plain f32 array and stored element by element: tiles of different workgroups may share a
// vec4 of c, and a component store into a vec4 array could be a read-modify-write on some
// backends.
//
// Out-of-range elements load as 0, so every size works; the k loop runs over the slice in
// steps of 4 up to the last valid k, so a short inner dimension costs little. Workgroups are
// numbered linearly (batch, tile row, tile column) and the host folds their count into 2-D
// past the 65535-per-dimension limit.

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

// Parameters from a read-only storage buffer, not a uniform one: lavapipe (Mesa 22.x)
// recompiles and leaks a variant of a kernel on every dispatch with uniform values folded
// in (see `ParamsIn` in src/backend/wgpu/kernels.rs).
@group(0) @binding(0) var<storage, read> p: GemmParams;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// `gemm_tiled` (32 k × 16 vec4) and `gemm_tiled_128` (16 k × 32 vec4) share these: 8 KiB
// each, 16 KiB in all (WebGPU's default limit).
var<workgroup> sa: array<vec4<f32>, 512>;
var<workgroup> sb: array<vec4<f32>, 512>;
// `gemm_narrow_splitk`: sa at [0, 512) (32 k × 16 vec4), sb at [512, 640) (32 k × 4 vec4);
// at the end [0, 768) holds the three partial tiles summed into the first. 12 KiB.
var<workgroup> sn: array<vec4<f32>, 768>;

// The output registers: acc[i] holds one row's 4 consecutive columns (gemm_tiled and the
// narrow kernel use acc[0..4], gemm_tiled_128 all 16: rows-half × 4 rows × columns-half).
var<private> acc: array<vec4<f32>, 16>;

// Note on loops: every small loop over a register array below is written out by hand.
// Drivers unroll such loops as a rule, but lavapipe (Mesa 22) did not unroll the store loop
// of `gemm_tiled_128`, and a register array indexed by a loop variable then lives in
// memory: the written-out version ran that kernel 2.3× faster there.

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

// Four contiguous elements of a from index `base`, the first `count` of them (the rest 0).
// Aligned and whole: one 16-byte load. Otherwise the two aligned vec4s that cover them,
// shifted into place: two loads and selects rather than four scalar loads, and no branch
// per element (on lavapipe both sides of every branch run).
fn a_load4(base: u32, count: u32) -> vec4<f32> {
    let q = base >> 2u;
    if (count == 4u && (base & 3u) == 0u) {
        return a[q];
    }
    let last = arrayLength(&a) - 1u;
    return first4(shift4(a[min(q, last)], a[min(q + 1u, last)], base & 3u), count);
}

fn b_load4(base: u32, count: u32) -> vec4<f32> {
    let q = base >> 2u;
    if (count == 4u && (base & 3u) == 0u) {
        return b[q];
    }
    let last = arrayLength(&b) - 1u;
    return first4(shift4(b[min(q, last)], b[min(q + 1u, last)], base & 3u), count);
}

// How many of the 4 indices from `start` are below `end`.
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

// Line t of a block: `count` contiguous elements at first + t·step if t < lines.
fn a_line(first: u32, step: u32, count: u32, lines: u32, t: u32) -> vec4<f32> {
    return a_load4(first + t * step, select(0u, count, t < lines));
}

// The block op(a)[r0..r0+4, k0..k0+4] as 4 k-rows: v[j] = op(a)[r0..r0+4, k0 + j].
// One of a's strides is 1 (the host's layouts always have one): the block is read as 4
// lines of 4 contiguous elements — rows along k when a_ks = 1 (a stored [m, inner]), then
// transposed; k-rows along the rows otherwise (a stored [inner, m]). One code path for
// both, so that lavapipe does not run both.
fn a_block(base: u32, r0: u32, k0: u32) -> array<vec4<f32>, 4> {
    let nr = in_range(r0, p.m);
    let nk = in_range(k0, p.inner);
    let along_k = p.a_ks == 1u;
    let step = select(p.a_ks, p.a_rs, along_k);
    let count = select(nr, nk, along_k);
    let lines = select(nk, nr, along_k);
    let first = base + r0 * p.a_rs + k0 * p.a_ks;
    return k_rows(
        a_line(first, step, count, lines, 0u),
        a_line(first, step, count, lines, 1u),
        a_line(first, step, count, lines, 2u),
        a_line(first, step, count, lines, 3u),
        along_k,
    );
}

fn b_index(base: u32, k: u32, col: u32) -> u32 {
    return base + k * p.b_ks + (col / p.b_grp) * p.b_gs + (col % p.b_grp) * p.b_cs;
}

// Line t of a b block: column c0 + t along k, or k-row k0 + t along the columns.
fn b_line(base: u32, k0: u32, c0: u32, along_k: bool, count: u32, lines: u32, t: u32) -> vec4<f32> {
    let at = b_index(base, k0 + select(t, 0u, along_k), c0 + select(0u, t, along_k));
    return b_load4(at, select(0u, count, t < lines));
}

// The block op(b)[k0..k0+4, c0..c0+4] as 4 k-rows: v[j] = op(b)[k0 + j, c0..c0+4]. As for
// a: columns along k when b_ks = 1 (b stored [n, inner], or the stacked A rows), then
// transposed; k-rows along the columns otherwise (b stored [inner, n]; the host groups
// columns only in the first layout, so four columns are contiguous here).
fn b_block(base: u32, k0: u32, c0: u32) -> array<vec4<f32>, 4> {
    let nc = in_range(c0, p.n);
    let nk = in_range(k0, p.inner);
    let along_k = p.b_ks == 1u;
    let count = select(nc, nk, along_k);
    let lines = select(nk, nc, along_k);
    return k_rows(
        b_line(base, k0, c0, along_k, count, lines, 0u),
        b_line(base, k0, c0, along_k, count, lines, 1u),
        b_line(base, k0, c0, along_k, count, lines, 2u),
        b_line(base, k0, c0, along_k, count, lines, 3u),
        along_k,
    );
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

// Number of 4-deep k steps with data in the slice starting at k0 (of depth `depth`).
fn k_quads(k0: u32, depth: u32) -> u32 {
    return (min(depth, p.inner - k0) + 3u) / 4u;
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

fn stage_n(at: u32, stride: u32, v: array<vec4<f32>, 4>) {
    sn[at] = v[0];
    sn[at + stride] = v[1];
    sn[at + 2u * stride] = v[2];
    sn[at + 3u * stride] = v[3];
}

fn clear_acc4() {
    acc[0] = vec4<f32>(0.0);
    acc[1] = vec4<f32>(0.0);
    acc[2] = vec4<f32>(0.0);
    acc[3] = vec4<f32>(0.0);
}

// ---------------------------------------------------------------------------------------
// gemm_tiled: 64×64 tile, 16×16 invocations of 4×4 outputs (rows ty·4 + i, columns tx·4 + j).
// Slice: 32 k × 64 rows of a and 32 k × 64 columns of b, 8 KiB each (32 deep: per slice
// overhead — the block loads, two barriers — is paid half as often as at 16, which was a
// third of the time on lavapipe). Blocks: 16 row (column) quads × 8 k quads per operand;
// invocations 0–127 move a's, 128–255 b's. Within a warp the block's row quad runs
// fastest, so the k-quad pairs of a warp read whole 32-byte sectors of a row-major operand,
// and each quarter-warp stores 8 consecutive vec4s.

const T_TK: u32 = 32u;

@compute @workgroup_size(256)
fn gemm_tiled(
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
    clear_acc4();

    let loads_a = li < 128u;
    let q = li % 16u;
    let kq = (li % 128u) / 16u;
    var blk: array<vec4<f32>, 4>;
    if (loads_a) {
        blk = a_block(a_base, t.y + q * 4u, kq * 4u);
    } else {
        blk = b_block(b_base, kq * 4u, t.z + q * 4u);
    }
    for (var k0 = 0u; k0 < p.inner; k0 += T_TK) {
        if (loads_a) {
            stage_a(kq * 64u + q, 16u, blk);
        } else {
            stage_b(kq * 64u + q, 16u, blk);
        }
        workgroupBarrier();
        // Next slice into registers while this one is multiplied.
        let k1 = k0 + T_TK;
        if (k1 < p.inner) {
            if (loads_a) {
                blk = a_block(a_base, t.y + q * 4u, k1 + kq * 4u);
            } else {
                blk = b_block(b_base, k1 + kq * 4u, t.z + q * 4u);
            }
        }
        let nq = k_quads(k0, T_TK);
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

    let c_base = p.c_off + t.x * p.c_bs;
    let r0 = t.y + ty * 4u;
    let c0 = t.z + tx * 4u;
    store4(c_base, r0, c0, acc[0]);
    store4(c_base, r0 + 1u, c0, acc[1]);
    store4(c_base, r0 + 2u, c0, acc[2]);
    store4(c_base, r0 + 3u, c0, acc[3]);
}

// ---------------------------------------------------------------------------------------
// gemm_tiled_128: 128×128 tile, 16×16 invocations of 8×8 outputs: rows h·64 + ty·4 + i and
// columns h'·64 + tx·4 + j (h, h' ∈ {0, 1}), so that the 16 invocations of a half-warp read
// 16 consecutive vec4s of sb (conflict-free) and two vec4s of sa (broadcast). Slice: 16 k ×
// 128 rows / columns, 8 KiB per operand. Blocks: 32 quads × 4 k quads per operand;
// invocations 0–127 move a's, 128–255 b's.

const T128_TK: u32 = 16u;

@compute @workgroup_size(256)
fn gemm_tiled_128(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    if (group >= p.tiles_m * p.tiles_n * p.batch) {
        return;
    }
    let t = tile_of(group, 128u, 128u);
    let a_base = p.a_off + t.x * p.a_bs;
    let b_base = p.b_off + t.x * p.b_bs;
    let tx = li % 16u;
    let ty = li / 16u;
    acc = array<vec4<f32>, 16>();

    let loads_a = li < 128u;
    let q = li % 32u;
    let kq = (li % 128u) / 32u;
    var blk: array<vec4<f32>, 4>;
    if (loads_a) {
        blk = a_block(a_base, t.y + q * 4u, kq * 4u);
    } else {
        blk = b_block(b_base, kq * 4u, t.z + q * 4u);
    }
    for (var k0 = 0u; k0 < p.inner; k0 += T128_TK) {
        if (loads_a) {
            stage_a(kq * 128u + q, 32u, blk);
        } else {
            stage_b(kq * 128u + q, 32u, blk);
        }
        workgroupBarrier();
        let k1 = k0 + T128_TK;
        if (k1 < p.inner) {
            if (loads_a) {
                blk = a_block(a_base, t.y + q * 4u, k1 + kq * 4u);
            } else {
                blk = b_block(b_base, k1 + kq * 4u, t.z + q * 4u);
            }
        }
        let nq = k_quads(k0, T128_TK);
        for (var s = 0u; s < nq; s++) {
            for (var u = 0u; u < 4u; u++) {
                let kk = s * 4u + u;
                let a0 = sa[kk * 32u + ty];
                let a1 = sa[kk * 32u + 16u + ty];
                let b0 = sb[kk * 32u + tx];
                let b1 = sb[kk * 32u + 16u + tx];
                // acc[(h·4 + i)·2 + h']: row half h, row i, column half h'.
                acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
                acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
                acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]);
                acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
                acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]);
                acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
                acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]);
                acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
                acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]);
                acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
                acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]);
                acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
                acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]);
                acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
                acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]);
                acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
            }
        }
        workgroupBarrier();
    }

    let c_base = p.c_off + t.x * p.c_bs;
    let r0 = t.y + ty * 4u;
    let c0 = t.z + tx * 4u;
    store4(c_base, r0, c0, acc[0]);
    store4(c_base, r0, c0 + 64u, acc[1]);
    store4(c_base, r0 + 1u, c0, acc[2]);
    store4(c_base, r0 + 1u, c0 + 64u, acc[3]);
    store4(c_base, r0 + 2u, c0, acc[4]);
    store4(c_base, r0 + 2u, c0 + 64u, acc[5]);
    store4(c_base, r0 + 3u, c0, acc[6]);
    store4(c_base, r0 + 3u, c0 + 64u, acc[7]);
    store4(c_base, r0 + 64u, c0, acc[8]);
    store4(c_base, r0 + 64u, c0 + 64u, acc[9]);
    store4(c_base, r0 + 65u, c0, acc[10]);
    store4(c_base, r0 + 65u, c0 + 64u, acc[11]);
    store4(c_base, r0 + 66u, c0, acc[12]);
    store4(c_base, r0 + 66u, c0 + 64u, acc[13]);
    store4(c_base, r0 + 67u, c0, acc[14]);
    store4(c_base, r0 + 67u, c0 + 64u, acc[15]);
}

// ---------------------------------------------------------------------------------------
// gemm_narrow_splitk: 64×16 tile (n ≤ 16). Invocation li = g·64 + w: k group g ∈ 0..4,
// within it 16 row quads (w / 4) × 4 column quads (w % 4) of 4×4 outputs. Slice: 32 k, of
// which group g multiplies k 8g..8g+8. Blocks: a 16 row quads × 8 k quads (invocations
// 0–127), b 4 column quads × 8 k quads (128–159). Groups 1–3 then leave their partial tiles
// in workgroup memory (row i of invocation w at (group·4 + i)·64 + w: a quarter-warp stores
// 8 consecutive vec4s, conflict-free) and group 0 adds them and stores.

const N_TK: u32 = 32u;
const N_B: u32 = 512u;

// The narrow kernels' multiply of one staged slice from k0: group g's 8 k of it (those
// with data) into the invocation's 4×4 block (row quad tr, column quad tc).
fn narrow_slice(k0: u32, g: u32, tr: u32, tc: u32) {
    let depth = min(N_TK, p.inner - k0);
    let mine = min(8u, depth - min(depth, g * 8u));
    let nq = (mine + 3u) / 4u;
    for (var s = 0u; s < nq; s++) {
        for (var u = 0u; u < 4u; u++) {
            let kk = g * 8u + s * 4u + u;
            let av = sn[kk * 16u + tr];
            let bv = sn[N_B + kk * 4u + tc];
            acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
            acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
            acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
            acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
        }
    }
}

// The narrow kernels' end: the four k groups' partial tiles summed by group 0, stored.
fn narrow_finish(t: vec3<u32>, g: u32, w: u32) {
    let tr = w / 4u;
    let tc = w % 4u;
    // Sum the four k groups' partial tiles.
    if (g > 0u) {
        let at = (g - 1u) * 256u + w;
        sn[at] = acc[0];
        sn[at + 64u] = acc[1];
        sn[at + 128u] = acc[2];
        sn[at + 192u] = acc[3];
    }
    workgroupBarrier();
    if (g == 0u) {
        for (var o = 0u; o < 3u; o++) {
            let at = o * 256u + w;
            acc[0] += sn[at];
            acc[1] += sn[at + 64u];
            acc[2] += sn[at + 128u];
            acc[3] += sn[at + 192u];
        }
        let c_base = p.c_off + t.x * p.c_bs;
        let r0 = t.y + tr * 4u;
        let c0 = t.z + tc * 4u;
        store4(c_base, r0, c0, acc[0]);
        store4(c_base, r0 + 1u, c0, acc[1]);
        store4(c_base, r0 + 2u, c0, acc[2]);
        store4(c_base, r0 + 3u, c0, acc[3]);
    }
}

@compute @workgroup_size(256)
fn gemm_narrow_splitk(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    if (group >= p.tiles_m * p.tiles_n * p.batch) {
        return;
    }
    let t = tile_of(group, 64u, 16u);
    let a_base = p.a_off + t.x * p.a_bs;
    let b_base = p.b_off + t.x * p.b_bs;
    let g = li / 64u;
    let w = li % 64u;
    let tr = w / 4u;
    let tc = w % 4u;
    clear_acc4();

    let loads_a = li < 128u;
    let loads = li < 160u;
    var q = li % 16u;
    var kq = li / 16u;
    if (!loads_a) {
        q = (li - 128u) % 4u;
        kq = (li - 128u) / 4u;
    }
    var blk: array<vec4<f32>, 4>;
    if (loads_a) {
        blk = a_block(a_base, t.y + q * 4u, kq * 4u);
    } else if (loads) {
        blk = b_block(b_base, kq * 4u, t.z + q * 4u);
    }
    for (var k0 = 0u; k0 < p.inner; k0 += N_TK) {
        if (loads_a) {
            stage_n(kq * 64u + q, 16u, blk);
        } else if (loads) {
            stage_n(N_B + kq * 16u + q, 4u, blk);
        }
        workgroupBarrier();
        let k1 = k0 + N_TK;
        if (k1 < p.inner) {
            if (loads_a) {
                blk = a_block(a_base, t.y + q * 4u, k1 + kq * 4u);
            } else if (loads) {
                blk = b_block(b_base, k1 + kq * 4u, t.z + q * 4u);
            }
        }
        narrow_slice(k0, g, tr, tc);
        workgroupBarrier();
    }

    narrow_finish(t, g, w);
}

// ---------------------------------------------------------------------------------------
// gemm_tiled_bf16 / gemm_tiled_f16: the same product (GemmParams, the stride formulas of
// the header, c f32 and written, never accumulated) with a and b 16-bit tensors read as
// they are stored (src/dtype.rs): ceil(len / 2) u32 words, element e in the low (e even) or
// high (e odd) 16 bits of word e >> 1. All offsets and strides are element indices of the
// 16-bit tensors. Each element is widened to f32 exactly as it is staged (bf16: the bits
// moved to the top half; f16: integer widening, subnormals, inf and NaN kept, as in
// cast.wgsl), and the products are accumulated in f32: no f32 copy of an operand is made.
//
// A plain workgroup-memory tiled GEMM, correctness first: 64×64 output tiles, 16×16
// invocations of 4×4 outputs (rows ty·4 + i, columns tx·4 + j), k staged 16 deep. Each
// slice is 64 rows (columns) × 16 k per operand, stored k-major as scalars (sh_a[k·64 +
// row], sh_b[k·64 + col], 4 KiB each); every invocation stages 4 elements of each operand,
// one 16-bit load and widening each, out-of-range elements as 0. Workgroups are numbered
// linearly (batch, tile row, tile column), folded into 2-D by the host as for gemm_tiled.
// PTX has no counterpart: its 16-bit GEMM is gemm_mma_* on the tensor cores.
//
// a and b are bound again here as u32 arrays (ah, bh) at the bindings of a and b; each
// entry point uses only one pair, so no entry sees two variables at one binding.

@group(0) @binding(1) var<storage, read> ah: array<u32>;
@group(0) @binding(2) var<storage, read> bh: array<u32>;

const H_TK: u32 = 16u;

var<workgroup> sh_a: array<f32, 1024>;
var<workgroup> sh_b: array<f32, 1024>;

// f16 bits (low 16 of h) -> f32 bits, exactly (cast.wgsl's f16_to_f32_bits).
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

// The 16 bits of element e of packed words w.
fn half_bits(w: u32, e: u32) -> u32 {
    return (w >> ((e & 1u) * 16u)) & 0xffffu;
}

// A 16-bit element's bits widened to its f32 value, exactly.
fn widen(bits: u32, is_f16: bool) -> f32 {
    if (is_f16) {
        return bitcast<f32>(f16_widen(bits));
    }
    return bitcast<f32>(bits << 16u);
}

// op(a)[row, k] of the batch block at a_base, widened (0 out of range).
fn ah_at(a_base: u32, row: u32, k: u32, is_f16: bool) -> f32 {
    if (row >= p.m || k >= p.inner) {
        return 0.0;
    }
    let e = a_base + row * p.a_rs + k * p.a_ks;
    return widen(half_bits(ah[e >> 1u], e), is_f16);
}

// op(b)[k, col] of the batch block at b_base, widened (0 out of range).
fn bh_at(b_base: u32, k: u32, col: u32, is_f16: bool) -> f32 {
    if (col >= p.n || k >= p.inner) {
        return 0.0;
    }
    let e = b_index(b_base, k, col);
    return widen(half_bits(bh[e >> 1u], e), is_f16);
}

fn gemm_half(wid: vec3<u32>, nwg: vec3<u32>, li: u32, is_f16: bool) {
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
            sh_a[kk * 64u + rc] = ah_at(a_base, t.y + rc, k0 + kk, is_f16);
            sh_b[kk * 64u + rc] = bh_at(b_base, k0 + kk, t.z + rc, is_f16);
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

@compute @workgroup_size(256)
fn gemm_tiled_bf16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    gemm_half(wid, nwg, li, false);
}

@compute @workgroup_size(256)
fn gemm_tiled_f16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    gemm_half(wid, nwg, li, true);
}

// ---------------------------------------------------------------------------------------
// gemm_narrow_splitk_bf16 / gemm_narrow_splitk_f16: gemm_narrow_splitk (64×16 tiles, k split
// four ways inside the workgroup, the same slices, multiply and sum: `narrow_slice`,
// `narrow_finish`) with a and b packed 16-bit as in gemm_tiled_bf16 (ah, bh), each 4×4
// block read as 4 lines of 4 contiguous halves (3 words, any alignment) and widened exactly
// as it is loaded. For the r-wide products of the 16-bit LoRA ops (h per particle, dy·B,
// the factor gradients), where gemm_tiled_bf16's 64-wide tiles would be mostly padding.

// Four contiguous halves of `words` (ah or bh: `of_a`) from element `first`, the first
// `count` of them (the rest 0), widened: the word pair holding them funnelled from the 3
// words that cover an odd `first`; loads past the end clamped (their elements are masked).
fn half_load4(of_a: bool, first: u32, count: u32, is_f16: bool) -> vec4<f32> {
    let w0 = first >> 1u;
    var last = arrayLength(&bh) - 1u;
    var p0 = 0u;
    var p1 = 0u;
    var p2 = 0u;
    if (of_a) {
        last = arrayLength(&ah) - 1u;
        p0 = ah[min(w0, last)];
        p1 = ah[min(w0 + 1u, last)];
        p2 = ah[min(w0 + 2u, last)];
    } else {
        p0 = bh[min(w0, last)];
        p1 = bh[min(w0 + 1u, last)];
        p2 = bh[min(w0 + 2u, last)];
    }
    let odd = (first & 1u) == 1u;
    let lo = select(p0, (p0 >> 16u) | (p1 << 16u), odd);
    let hi = select(p1, (p1 >> 16u) | (p2 << 16u), odd);
    let v = vec4<f32>(
        widen(lo & 0xffffu, is_f16),
        widen(lo >> 16u, is_f16),
        widen(hi & 0xffffu, is_f16),
        widen(hi >> 16u, is_f16),
    );
    return first4(v, count);
}

// a_block of the packed a: op(a)[r0..r0+4, k0..k0+4] as 4 k-rows, the same geometry.
fn ah_block(base: u32, r0: u32, k0: u32, is_f16: bool) -> array<vec4<f32>, 4> {
    let nr = in_range(r0, p.m);
    let nk = in_range(k0, p.inner);
    let along_k = p.a_ks == 1u;
    let step = select(p.a_ks, p.a_rs, along_k);
    let count = select(nr, nk, along_k);
    let lines = select(nk, nr, along_k);
    let first = base + r0 * p.a_rs + k0 * p.a_ks;
    return k_rows(
        half_load4(true, first, select(0u, count, 0u < lines), is_f16),
        half_load4(true, first + step, select(0u, count, 1u < lines), is_f16),
        half_load4(true, first + 2u * step, select(0u, count, 2u < lines), is_f16),
        half_load4(true, first + 3u * step, select(0u, count, 3u < lines), is_f16),
        along_k,
    );
}

// b_block of the packed b: op(b)[k0..k0+4, c0..c0+4] as 4 k-rows, the same geometry.
fn bh_block(base: u32, k0: u32, c0: u32, is_f16: bool) -> array<vec4<f32>, 4> {
    let nc = in_range(c0, p.n);
    let nk = in_range(k0, p.inner);
    let along_k = p.b_ks == 1u;
    let count = select(nc, nk, along_k);
    let lines = select(nk, nc, along_k);
    let l0 = b_index(base, k0, c0);
    let l1 = b_index(base, k0 + select(1u, 0u, along_k), c0 + select(0u, 1u, along_k));
    let l2 = b_index(base, k0 + select(2u, 0u, along_k), c0 + select(0u, 2u, along_k));
    let l3 = b_index(base, k0 + select(3u, 0u, along_k), c0 + select(0u, 3u, along_k));
    return k_rows(
        half_load4(false, l0, select(0u, count, 0u < lines), is_f16),
        half_load4(false, l1, select(0u, count, 1u < lines), is_f16),
        half_load4(false, l2, select(0u, count, 2u < lines), is_f16),
        half_load4(false, l3, select(0u, count, 3u < lines), is_f16),
        along_k,
    );
}

fn gemm_narrow_half(wid: vec3<u32>, nwg: vec3<u32>, li: u32, is_f16: bool) {
    let group = wid.x + wid.y * nwg.x;
    if (group >= p.tiles_m * p.tiles_n * p.batch) {
        return;
    }
    let t = tile_of(group, 64u, 16u);
    let a_base = p.a_off + t.x * p.a_bs;
    let b_base = p.b_off + t.x * p.b_bs;
    let g = li / 64u;
    let w = li % 64u;
    clear_acc4();

    // gemm_narrow_splitk's loop with the 16-bit loads. It cannot be one function with the
    // f32 entry's: a function that reads `ah` cannot be called by an entry that binds `a`
    // at the same binding. The loads: a by invocations 0-127, b by 128-159.
    let loads_a = li < 128u;
    let loads = li < 160u;
    var q = li % 16u;
    var kq = li / 16u;
    if (!loads_a) {
        q = (li - 128u) % 4u;
        kq = (li - 128u) / 4u;
    }
    var blk: array<vec4<f32>, 4>;
    if (loads_a) {
        blk = ah_block(a_base, t.y + q * 4u, kq * 4u, is_f16);
    } else if (loads) {
        blk = bh_block(b_base, kq * 4u, t.z + q * 4u, is_f16);
    }
    for (var k0 = 0u; k0 < p.inner; k0 += N_TK) {
        if (loads_a) {
            stage_n(kq * 64u + q, 16u, blk);
        } else if (loads) {
            stage_n(N_B + kq * 16u + q, 4u, blk);
        }
        workgroupBarrier();
        let k1 = k0 + N_TK;
        if (k1 < p.inner) {
            if (loads_a) {
                blk = ah_block(a_base, t.y + q * 4u, k1 + kq * 4u, is_f16);
            } else if (loads) {
                blk = bh_block(b_base, k1 + kq * 4u, t.z + q * 4u, is_f16);
            }
        }
        narrow_slice(k0, g, w / 4u, w % 4u);
        workgroupBarrier();
    }
    narrow_finish(t, g, w);
}

@compute @workgroup_size(256)
fn gemm_narrow_splitk_bf16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    gemm_narrow_half(wid, nwg, li, false);
}

@compute @workgroup_size(256)
fn gemm_narrow_splitk_f16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    gemm_narrow_half(wid, nwg, li, true);
}
