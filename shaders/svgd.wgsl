// SVGD (DESIGN.md ops 4–6): the pairwise squared distances (sqdist_partial, then
// sqdist_finalize), the RBF kernel from them (rbf_from_sqdist), svgd_direction. The entry
// names are those of kernels/svgd.ptx; the host side is src/backend/wgpu/svgd.rs.
//
// The median heuristic for the bandwidth runs on the host over the downloaded K×K
// distances (K is small); the exponentials run here.
//
// Both heavy kernels are register-blocked and have no workgroup barrier: an invocation keeps
// a block of rows of θ in registers and reuses every value it loads for several outputs
// (16 pairs per 8 loads in sqdist_partial, 32 outputs per 16–20 loads in svgd_direction),
// and the invocations of a workgroup that need the same column of θ read it at the same time
// (one DRAM read, the rest from cache). Staging tiles in workgroup memory instead costs a
// barrier per tile, and lavapipe (Mesa 22.3, the CPU Vulkan driver the tests and benches run
// on) compiles a shader with a barrier inside a loop into coroutines: a staged
// svgd_direction with the barrier in its tile loop took 1.05 ms where the same arithmetic
// from registers took 0.30 ms (K = 4, D = 4096). wgpu also zero-fills workgroup memory at
// the start of every workgroup.
//
// sqdist_partial, sqdist_finalize and svgd_direction read their parameters from a read-only
// storage buffer, not a uniform one: Mesa's lavapipe (22.x) may recompile a kernel on every
// dispatch with the uniform values that steer its loops folded in, and leak each variant
// (see src/backend/wgpu/kernels.rs). The host binds them as `ParamsIn::Storage`.
//
// Portable WGSL (no extensions); the one workgroup array (sqdist_finalize) is 1 KiB.

const THREADS: u32 = 256u;

// ---------------------------------------------------------------------------------------
// sqdist_partial: the partial sums Σ (θ_i − θ_j)² of every pair i < j over slices of D.
//
// The K rows are cut into nb = ⌈K/4⌉ blocks of 4; a pair block (a ≤ b) is rows 4a..4a+3
// against rows 4b..4b+3 (16 pairs; on the diagonal a = b only the 6 with r < s are real).
// An invocation owns one pair block and one lane of a D-chunk: the columns
// c = ch · chunk + lane + lanes · m. Per column it loads the 8 values of its two row
// quads and adds 16 squared differences (differences, never the ‖θ‖² expansion, which
// cancels). Neighbouring invocations are neighbouring lanes (columns) of the same block, so
// every load of a workgroup is coalesced; the 2^slots_log block slots of a workgroup (and
// the neighbouring workgroups, block tiles of the same chunk) read the same columns at
// the same time, so θ is read from memory about once for all pairs.
//
// Each invocation writes its pairs to its own row of the partial sums,
// partial[(ch · lanes + lane) · pairs + p] (p = the pair's row-major number), and
// sqdist_finalize adds the rows in a fixed order (no atomics, deterministic). The host sizes
// the chunks so that the rows are few (a few words per invocation, small next to θ) and
// every lane has at least a few columns.

struct PartialParams {
    k: u32,
    d: u32,
    // nb(nb + 1)/2 pair blocks.
    blocks: u32,
    // log2 of the block slots of a workgroup (0..3); lanes = 256 >> slots_log.
    slots_log: u32,
    // ⌈blocks / 2^slots_log⌉ workgroups per chunk.
    block_tiles: u32,
    // Columns per chunk (a multiple of lanes) and the number of chunks.
    chunk: u32,
    nchunks: u32,
    // K(K−1)/2.
    pairs: u32,
}

@group(0) @binding(0) var<storage, read> pp: PartialParams;
@group(0) @binding(1) var<storage, read> theta: array<f32>;
@group(0) @binding(2) var<storage, read_write> partial_out: array<f32>;

// The `n`-th pair (a ≤ b) of 0..m, enumerated row-major (a = 0: b = 0..m−1, a = 1: ...).
fn upper_pair(n: u32, m: u32) -> vec2<u32> {
    var a = 0u;
    var rest = n;
    loop {
        if (rest < m - a) {
            break;
        }
        rest -= m - a;
        a += 1u;
    }
    return vec2<u32>(a, a + rest);
}

// Row-major number of the pair (i < j) among the K(K−1)/2.
fn pair_index(i: u32, j: u32, k: u32) -> u32 {
    return i * k - i * (i + 1u) / 2u + (j - i - 1u);
}

// Store the sum of pair (i, j) into the row at `base` if it is a real pair (i < j < K).
fn put_pair(base: u32, i: u32, j: u32, k: u32, v: f32) {
    if (i < j && j < k) {
        partial_out[base + pair_index(i, j, k)] = v;
    }
}

// The four entries (rows ra..ra+3 against row j) of one accumulator.
fn put_quad(base: u32, ra: u32, j: u32, k: u32, v: vec4<f32>) {
    put_pair(base, ra, j, k, v.x);
    put_pair(base, ra + 1u, j, k, v.y);
    put_pair(base, ra + 2u, j, k, v.z);
    put_pair(base, ra + 3u, j, k, v.w);
}

@compute @workgroup_size(256)
fn sqdist_partial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    // ---- which workgroup: the 2-D grid unfolded; block tiles of one chunk are neighbours
    let k = pp.k;
    let d = pp.d;
    let tiles = pp.block_tiles;
    let unit = wid.x + wid.y * nwg.x;
    if (unit >= tiles * pp.nchunks) {
        return;
    }
    let ch = unit / tiles;

    // ---- this invocation's lane (fastest: neighbouring columns) and pair block
    let slots_log = pp.slots_log;
    let lanes = THREADS >> slots_log;
    let lane = li & (lanes - 1u);
    let n = (unit % tiles) * (1u << slots_log) + (li >> (8u - slots_log));
    if (n >= pp.blocks) {
        return;
    }
    let ab = upper_pair(n, (k + 3u) / 4u);
    let ra = 4u * ab.x;
    let rb = 4u * ab.y;
    // Row offsets of the two quads, rows past K clamped to K − 1 (loaded, never stored).
    let km = k - 1u;
    let oa = vec4<u32>(min(ra, km), min(ra + 1u, km), min(ra + 2u, km), min(ra + 3u, km)) * d;
    let ob = vec4<u32>(min(rb, km), min(rb + 1u, km), min(rb + 2u, km), min(rb + 3u, km)) * d;

    // ---- acc_s[r] = Σ over this lane's columns of (θ[ra + r] − θ[rb + s])²
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let c_end = min((ch + 1u) * pp.chunk, d);
    for (var c = ch * pp.chunk + lane; c < c_end; c += lanes) {
        let a = vec4<f32>(theta[oa.x + c], theta[oa.y + c], theta[oa.z + c], theta[oa.w + c]);
        let e0 = a - vec4<f32>(theta[ob.x + c]);
        let e1 = a - vec4<f32>(theta[ob.y + c]);
        let e2 = a - vec4<f32>(theta[ob.z + c]);
        let e3 = a - vec4<f32>(theta[ob.w + c]);
        acc0 = fma(e0, e0, acc0);
        acc1 = fma(e1, e1, acc1);
        acc2 = fma(e2, e2, acc2);
        acc3 = fma(e3, e3, acc3);
    }

    // ---- this lane's row of partial sums: the block's real pairs
    let base = (ch * lanes + lane) * pp.pairs;
    put_quad(base, ra, rb, k, acc0);
    put_quad(base, ra, rb + 1u, k, acc1);
    put_quad(base, ra, rb + 2u, k, acc2);
    put_quad(base, ra, rb + 3u, k, acc3);
}

// ---------------------------------------------------------------------------------------
// sqdist_finalize: out[i, j] = out[j, i] = Σ over the rows of partial[row · pairs + p] for
// p = (i < j), out[i, i] = 0.
//
// One workgroup per 32 pairs: invocation li sums pair 32·unit + (li mod 32) over the rows
// li / 32, li / 32 + 8, ... (32 neighbouring invocations load 32 neighbouring words), then
// the first 32 invocations add the 8 partial sums in order (deterministic). The single
// barrier is outside any loop. The first K invocations of the grid write the zero diagonal.

struct FinalizeParams {
    k: u32,
    pairs: u32,
    rows: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> fp: FinalizeParams;
@group(0) @binding(1) var<storage, read> partial_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> sqdist: array<f32>;

var<workgroup> row_sums: array<f32, 256>;

// start(i) = i(2K − i − 1)/2: the number of the first pair of row i.
fn pair_start(i: u32, k: u32) -> u32 {
    return i * k - i * (i + 1u) / 2u;
}

// (i, j) of the pair numbered p (row-major, i < j): an f32 estimate of i from the
// quadratic, then exact integer corrections (the estimate is off by at most a row or so).
fn pair_rows(p: u32, k: u32) -> vec2<u32> {
    let a = f32(2u * k - 1u);
    let disc = max(a * a - 8.0 * f32(p), 0.0);
    var i = min(u32(max(floor((a - sqrt(disc)) * 0.5), 0.0)), k - 2u);
    loop {
        if (i == 0u || pair_start(i, k) <= p) {
            break;
        }
        i -= 1u;
    }
    loop {
        if (pair_start(i + 1u, k) > p) {
            break;
        }
        i += 1u;
    }
    return vec2<u32>(i, p - pair_start(i, k) + i + 1u);
}

@compute @workgroup_size(256)
fn sqdist_finalize(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let k = fp.k;
    let pairs = fp.pairs;
    let rows = fp.rows;
    let unit = wid.x + wid.y * nwg.x;
    let p = unit * 32u + (li & 31u);
    var s = 0.0;
    if (p < pairs) {
        for (var row = li >> 5u; row < rows; row += 8u) {
            s += partial_in[row * pairs + p];
        }
    }
    row_sums[li] = s;
    workgroupBarrier();
    if (li < 32u && p < pairs) {
        var total = 0.0;
        for (var g = 0u; g < 8u; g++) {
            total += row_sums[g * 32u + li];
        }
        let ij = pair_rows(p, k);
        sqdist[ij.x * k + ij.y] = total;
        sqdist[ij.y * k + ij.x] = total;
    }
    let t = unit * THREADS + li;
    if (t < k) {
        sqdist[t * k + t] = 0.0;
    }
}

// ---------------------------------------------------------------------------------------
// rbf_from_sqdist: k_ij = exp(−d_ij / h), one invocation per entry.

struct RbfParams {
    n: u32,
    bandwidth: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> rp: RbfParams;
@group(0) @binding(1) var<storage, read> dist_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> kernel_out: array<f32>;

@compute @workgroup_size(256)
fn rbf_from_sqdist(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let idx = (wid.x + wid.y * nwg.x) * THREADS + li;
    if (idx < rp.n) {
        kernel_out[idx] = exp(-dist_in[idx] / rp.bandwidth);
    }
}

// ---------------------------------------------------------------------------------------
// svgd_direction: φ_i[e] = (1/K) Σ_j k_ji (score_j[e] + c (θ_i[e] − θ_j[e])), c = 2/h.
//
// An invocation computes 32 entries of φ in registers, two quads of 4 rows × 4 columns
// (x_r, a_r: θ_i and the sums of one row at the quad's 4 columns, as vec4s): rows i0..i0+7
// at the columns e, e + w, e + 2w, e + 3w; for K ≤ 4 ("narrow", where 8 rows would be half
// padding) rows i0..i0+3 at the 8 columns e + m·w, m = 0..7. Per j it loads θ_j and score_j
// at its columns and k_ji of its rows: 16 loads (20 narrow) for 32 outputs (the old
// one-output-per-invocation kernel: 3 loads per output and j). Each φ entry is written once.
//
// A workgroup = 2^glog row groups (8 rows each) × w = 256 >> glog lanes, i.e. 4w (narrow:
// 8w) columns of 8 · 2^glog rows. For K ≤ 64 glog is the smallest with 8 · 2^glog ≥ K, so one workgroup
// holds every row of its columns; above, glog = 3 and ⌈K / 64⌉ row blocks of workgroups per
// column tile (neighbours in the grid). Neighbouring lanes load neighbouring columns
// (coalesced); the row groups of a workgroup load the same θ_j, score_j words at the same
// time (one memory read, the rest from cache), and a row group's 8 kernel words are the same
// for all its lanes (a broadcast).

struct DirectionParams {
    k: u32,
    d: u32,
    inv_k: f32,
    // 2 / h.
    c: f32,
    // log2 of the row groups of a workgroup (0..3), row blocks ⌈K / (8 · 2^glog)⌉, column
    // tiles ⌈D / 4w⌉ (narrow: ⌈D / 8w⌉).
    glog: u32,
    rblocks: u32,
    tiles: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> dirp: DirectionParams;
@group(0) @binding(1) var<storage, read> theta_d: array<f32>;
@group(0) @binding(2) var<storage, read> score: array<f32>;
@group(0) @binding(3) var<storage, read> kern: array<f32>;
@group(0) @binding(4) var<storage, read_write> phi: array<f32>;

// θ (or score) of the row starting at `row` (an offset) at the 4 columns `ec`.
fn theta4(row: u32, ec: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(theta_d[row + ec.x], theta_d[row + ec.y], theta_d[row + ec.z], theta_d[row + ec.w]);
}

fn score4(row: u32, ec: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(score[row + ec.x], score[row + ec.y], score[row + ec.z], score[row + ec.w]);
}

// Write row i of φ at the columns e + m·w (m = 0..3) that exist (rows past K: nothing).
fn put_row(i: u32, e: u32, w: u32, k: u32, d: u32, v: vec4<f32>) {
    if (i < k) {
        let o = i * d + e;
        if (e < d) {
            phi[o] = v.x;
        }
        if (e + w < d) {
            phi[o + w] = v.y;
        }
        if (e + 2u * w < d) {
            phi[o + 2u * w] = v.z;
        }
        if (e + 3u * w < d) {
            phi[o + 3u * w] = v.w;
        }
    }
}

@compute @workgroup_size(256)
fn svgd_direction(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    // ---- which workgroup (row block fastest: the blocks of one tile are neighbours)
    let k = dirp.k;
    let d = dirp.d;
    let rblocks = dirp.rblocks;
    let unit = wid.x + wid.y * nwg.x;
    if (unit >= rblocks * dirp.tiles) {
        return;
    }
    let rblk = unit % rblocks;
    let tile = unit / rblocks;

    // ---- this invocation's two quads: rows i0..i0+3 at columns e + m·w (m = 0..3), and
    // either rows i0+4..i0+7 at the same columns (K > 4) or, for K ≤ 4 ("narrow": one quad
    // holds every row), rows i0..i0+3 again at the next 4 columns e + (4 + m)·w.
    let narrow = k <= 4u;
    let glog = dirp.glog;
    let w = THREADS >> glog;
    let g = li >> (8u - glog);
    let e = tile * select(4u, 8u, narrow) * w + (li & (w - 1u));
    let i0 = rblk * (8u << glog) + 8u * g;
    if (i0 >= k) {
        // A row group wholly past K (8 · 2^glog rows overshoot K by 8 or more, or the last
        // row block when K > 64): nothing to store. No barrier follows, so it may leave.
        return;
    }
    let i1 = select(i0 + 4u, i0, narrow);
    let e1 = select(e, e + 4u * w, narrow);
    // Rows past K and columns past D are clamped to the last one: loaded, never stored.
    let km = k - 1u;
    let ia = vec4<u32>(min(i0, km), min(i0 + 1u, km), min(i0 + 2u, km), min(i0 + 3u, km));
    let ib = vec4<u32>(min(i1, km), min(i1 + 1u, km), min(i1 + 2u, km), min(i1 + 3u, km));
    let dm = vec4<u32>(d - 1u);
    let ea = min(vec4<u32>(e, e + w, e + 2u * w, e + 3u * w), dm);
    let eb = min(vec4<u32>(e1, e1 + w, e1 + 2u * w, e1 + 3u * w), dm);

    // ---- θ_i of the two quads' rows at their columns
    let x0 = theta4(ia.x * d, ea);
    let x1 = theta4(ia.y * d, ea);
    let x2 = theta4(ia.z * d, ea);
    let x3 = theta4(ia.w * d, ea);
    let x4 = theta4(ib.x * d, eb);
    let x5 = theta4(ib.y * d, eb);
    let x6 = theta4(ib.z * d, eb);
    let x7 = theta4(ib.w * d, eb);

    // ---- a_r += k_ji (score_j + c (θ_i − θ_j)), j = 0..K−1 (in order, like the oracle).
    // Per j: θ_j, score_j at the columns (4 + 4, or 8 + 8 when narrow) and k_ji of the rows
    // (4 + 4, or 4 when narrow): 16 or 20 loads for 32 outputs.
    let c = vec4<f32>(dirp.c);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    for (var j = 0u; j < k; j++) {
        let jd = j * d;
        let kr = j * k;
        let ta = theta4(jd, ea);
        let sa = score4(jd, ea);
        let ka = vec4<f32>(kern[kr + ia.x], kern[kr + ia.y], kern[kr + ia.z], kern[kr + ia.w]);
        var tb = ta;
        var sb = sa;
        var kb = ka;
        if (narrow) {
            tb = theta4(jd, eb);
            sb = score4(jd, eb);
        } else {
            kb = vec4<f32>(kern[kr + ib.x], kern[kr + ib.y], kern[kr + ib.z], kern[kr + ib.w]);
        }
        a0 = fma(vec4<f32>(ka.x), fma(c, x0 - ta, sa), a0);
        a1 = fma(vec4<f32>(ka.y), fma(c, x1 - ta, sa), a1);
        a2 = fma(vec4<f32>(ka.z), fma(c, x2 - ta, sa), a2);
        a3 = fma(vec4<f32>(ka.w), fma(c, x3 - ta, sa), a3);
        a4 = fma(vec4<f32>(kb.x), fma(c, x4 - tb, sb), a4);
        a5 = fma(vec4<f32>(kb.y), fma(c, x5 - tb, sb), a5);
        a6 = fma(vec4<f32>(kb.z), fma(c, x6 - tb, sb), a6);
        a7 = fma(vec4<f32>(kb.w), fma(c, x7 - tb, sb), a7);
    }

    // ---- φ = a / K, each entry written once
    let inv_k = vec4<f32>(dirp.inv_k);
    put_row(i0, e, w, k, d, inv_k * a0);
    put_row(i0 + 1u, e, w, k, d, inv_k * a1);
    put_row(i0 + 2u, e, w, k, d, inv_k * a2);
    put_row(i0 + 3u, e, w, k, d, inv_k * a3);
    put_row(i1, e1, w, k, d, inv_k * a4);
    put_row(i1 + 1u, e1, w, k, d, inv_k * a5);
    put_row(i1 + 2u, e1, w, k, d, inv_k * a6);
    put_row(i1 + 3u, e1, w, k, d, inv_k * a7);
}
