// SVGD (DESIGN.md ops 4–6): the pairwise squared distances (sqdist_partial, then
// sqdist_finalize), the RBF kernel from them (rbf_from_sqdist), svgd_direction. The entry
// names are those of kernels/svgd.ptx; the host side is src/backend/wgpu/svgd.rs.
//
// The median heuristic for the bandwidth runs on the host over the downloaded K×K
// distances (K is small); the exponentials run here.
//
// sqdist_partial, sqdist_finalize and svgd_direction read their parameters from a read-only
// storage buffer, not a uniform one: Mesa's lavapipe (22.x) may recompile a kernel on every
// dispatch with the uniform values that steer its loops folded in, and leak each variant
// (see src/backend/wgpu/kernels.rs). The host binds them as `ParamsIn::Storage`.
//
// Workgroup memory stays within WebGPU's guaranteed 16 KiB per entry point; no extensions.

const THREADS: u32 = 256u;

// ---------------------------------------------------------------------------------------
// sqdist_partial: partial[ch · pairs + p] = Σ over the columns of D-chunk ch of
// (θ_i − θ_j)², for every pair p = (i < j), numbered row-major as sqdist_finalize reads them.
//
// Work unit (one workgroup) = (panel pair, D-chunk). The K rows are cut into panels of
// `panel` rows (a multiple of 4): for K ≤ 64 a single panel holds all rows, so θ is read
// once for all pairs; above, panels of 32 rows and one unit per panel pair P ≤ Q, so θ is
// read `panels` times (any K works). A unit stages, per tile of `width` columns, the rows of
// panel P (and of panel Q when Q ≠ P) in workgroup memory, and every invocation accumulates
// a 4×4 block of pairs (rows 4a..4a+3 against rows 4b..4b+3) over its share of the tile's
// columns: 8 workgroup loads per 16 pairs and column. The pair blocks of a panel pair are
// (a ≤ b) on the diagonal, all a × b off it: at most 136 (K = 64), so 256 / blocks ≥ 1
// column groups split each tile's columns. At the end of the chunk the column groups' sums
// are added in a fixed order in workgroup memory (deterministic, no atomics).
//
// Differences are summed, never ‖θ_i‖² + ‖θ_j‖² − 2θ_i·θ_j (which cancels).

struct PartialParams {
    k: u32,
    d: u32,
    // Rows per panel (a multiple of 4) and the number of panels.
    panel: u32,
    panels: u32,
    // Columns per staged tile, also the row pitch of `stage`: odd, so that the rows read at
    // the same column by different invocations fall in different banks.
    width: u32,
    // Columns per D-chunk (a multiple of `width`) and the number of chunks.
    chunk: u32,
    nchunks: u32,
    // K(K−1)/2.
    pairs: u32,
}

@group(0) @binding(0) var<storage, read> pp: PartialParams;
@group(0) @binding(1) var<storage, read> theta: array<f32>;
@group(0) @binding(2) var<storage, read_write> partial_out: array<f32>;

// The staged tile (rows × width ≤ 4096: the host sizes width), reused at the end of a unit
// for the 16 × 256 per-invocation sums. 16 KiB.
var<workgroup> stage: array<f32, 4096>;

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

// The `n`-th 4×4 block of pairs of a unit with `nb` row blocks per panel: (a ≤ b) on the
// diagonal, (a, b) row-major off it.
fn pair_block(n: u32, nb: u32, diag: bool) -> vec2<u32> {
    if (diag) {
        return upper_pair(n, nb);
    }
    return vec2<u32>(n / nb, n % nb);
}

// Row-major number of the pair (i < j) among the K(K−1)/2.
fn pair_index(i: u32, j: u32, k: u32) -> u32 {
    return i * k - i * (i + 1u) / 2u + (j - i - 1u);
}

@compute @workgroup_size(256)
fn sqdist_partial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    // ---- which unit: the 2-D grid unfolded, the excess of the fold skipped (uniformly)
    let k = pp.k;
    let d = pp.d;
    let t = pp.panel;
    let w = pp.width;
    let unit = wid.x + wid.y * nwg.x;
    if (unit >= pp.panels * (pp.panels + 1u) / 2u * pp.nchunks) {
        return;
    }
    let ch = unit % pp.nchunks;
    let pq = upper_pair(unit / pp.nchunks, pp.panels);
    let diag = pq.x == pq.y;

    // ---- this invocation's 4×4 pair block and column group. Column groups are the fastest
    // index, so neighbouring invocations read neighbouring columns of the same rows.
    let nb = t / 4u;
    let blocks = select(nb * nb, nb * (nb + 1u) / 2u, diag);
    let groups = THREADS / blocks;
    let busy = li < groups * blocks;
    let g = li % groups;
    var blk = vec2<u32>(0u, 0u);
    if (busy) {
        blk = pair_block(li / groups, nb, diag);
    }
    // Rows of `stage`: panel P at 0..t, panel Q (off the diagonal) at t..2t.
    let ra = 4u * blk.x;
    let rb = 4u * blk.y + select(t, 0u, diag);
    let rows = select(2u * t, t, diag);

    // Staging walks the elements e = li, li + 256, ... of the rows × width tile as
    // (row, column) without a division per element.
    let step_r = THREADS / w;
    let step_c = THREADS % w;

    // acc_s[r] = Σ (θ[row ra + r] − θ[row rb + s])² over this invocation's columns.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    let c_begin = ch * pp.chunk;
    let c_end = min(c_begin + pp.chunk, d);
    for (var c0 = c_begin; c0 < c_end; c0 += w) {
        // ---- stage [rows, w] of θ at columns c0.. (zeros past K or D: they add nothing)
        var r = li / w;
        var c = li % w;
        loop {
            if (r >= rows) {
                break;
            }
            var grow = pq.x * t + r;
            if (r >= t) {
                grow = pq.y * t + (r - t);
            }
            let gcol = c0 + c;
            var v = 0.0;
            if (grow < k && gcol < d) {
                v = theta[grow * d + gcol];
            }
            stage[r * w + c] = v;
            r += step_r;
            c += step_c;
            if (c >= w) {
                c -= w;
                r += 1u;
            }
        }
        workgroupBarrier();

        // ---- accumulate the 16 pairs of the block over columns g, g + groups, ...
        if (busy) {
            for (var cc = g; cc < w; cc += groups) {
                let a = vec4<f32>(
                    stage[ra * w + cc],
                    stage[(ra + 1u) * w + cc],
                    stage[(ra + 2u) * w + cc],
                    stage[(ra + 3u) * w + cc],
                );
                let e0 = a - vec4<f32>(stage[rb * w + cc]);
                let e1 = a - vec4<f32>(stage[(rb + 1u) * w + cc]);
                let e2 = a - vec4<f32>(stage[(rb + 2u) * w + cc]);
                let e3 = a - vec4<f32>(stage[(rb + 3u) * w + cc]);
                acc0 = fma(e0, e0, acc0);
                acc1 = fma(e1, e1, acc1);
                acc2 = fma(e2, e2, acc2);
                acc3 = fma(e3, e3, acc3);
            }
        }
        // All reads of this tile are done before the next one is staged (or, after the last
        // tile, before `stage` is reused for the sums).
        workgroupBarrier();
    }

    // ---- sum the column groups: entry (s·4 + r) of invocation li at stage[(s·4 + r)·256 + li]
    // (neighbouring invocations, neighbouring words). Idle invocations store zeros.
    for (var r = 0u; r < 4u; r++) {
        stage[r * THREADS + li] = acc0[r];
        stage[(4u + r) * THREADS + li] = acc1[r];
        stage[(8u + r) * THREADS + li] = acc2[r];
        stage[(12u + r) * THREADS + li] = acc3[r];
    }
    workgroupBarrier();

    // ---- one output per (entry e, block n): the groups' sums in group order, then
    // partial[ch · pairs + p] for the pairs i < j < K (a diagonal block's r ≥ s are mirrors).
    for (var q = li; q < 16u * blocks; q += THREADS) {
        let e = q / blocks;
        let n = q % blocks;
        var total = 0.0;
        for (var gg = 0u; gg < groups; gg++) {
            total += stage[e * THREADS + n * groups + gg];
        }
        let b2 = pair_block(n, nb, diag);
        let i = pq.x * t + 4u * b2.x + (e & 3u);
        let j = pq.y * t + 4u * b2.y + (e >> 2u);
        if (i < j && j < k) {
            partial_out[ch * pp.pairs + pair_index(i, j, k)] = total;
        }
    }
}

// ---------------------------------------------------------------------------------------
// sqdist_finalize: out[i, j] = out[j, i] = Σ over chunks of partial[ch · pairs + p] for
// p = (i < j), out[i, i] = 0.
//
// One workgroup per 32 pairs: invocation li sums pair 32·unit + (li mod 32) over the chunks
// li / 32, li / 32 + 8, ... (32 neighbouring invocations load 32 neighbouring words), then
// the first 32 invocations add the 8 partial sums in order (deterministic). The first K
// invocations of the grid write the zero diagonal.

struct FinalizeParams {
    k: u32,
    pairs: u32,
    nchunks: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> fp: FinalizeParams;
@group(0) @binding(1) var<storage, read> partial_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> sqdist: array<f32>;

var<workgroup> chunk_sums: array<f32, 256>;

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
    let unit = wid.x + wid.y * nwg.x;
    let lane = li & 31u;
    let p = unit * 32u + lane;
    var s = 0.0;
    if (p < fp.pairs) {
        for (var ch = li >> 5u; ch < fp.nchunks; ch += 8u) {
            s += partial_in[ch * fp.pairs + p];
        }
    }
    chunk_sums[li] = s;
    workgroupBarrier();
    if (li < 32u && p < fp.pairs) {
        var total = 0.0;
        for (var w8 = 0u; w8 < 8u; w8++) {
            total += chunk_sums[w8 * 32u + li];
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
// Work unit (one workgroup) = (row block, tile of `w` columns). The 256 invocations form
// 2^glog row groups of 8 output rows × w = 256 >> glog columns, one column each; a row block
// is 8 · 2^glog rows. For K ≤ 64 glog is the smallest with 8 · 2^glog ≥ K, so one row block
// holds all K rows and each column of θ and score is read once; above, glog = 3 and
// ⌈K / 64⌉ row blocks each read θ and score once per block of 64 rows.
//
// Per block of j rows (the unit's own row block first): stage θ and score [8 · 2^glog, w]
// (2 × 8 KiB, each invocation 8 rows of its column), barrier, then each invocation runs
// over the block's j with θ_j, score_j from workgroup memory (neighbouring invocations,
// neighbouring words) and k_ji for its 8 rows from the K×K kernel buffer (the same 8 words
// for a whole row group: a broadcast, cache resident). Its θ_i come from the first (own)
// staged block. Each φ entry is written once.

struct DirectionParams {
    k: u32,
    d: u32,
    inv_k: f32,
    // 2 / h.
    c: f32,
    // log2 of the row groups (0..3), row blocks ⌈K / (8 · 2^glog)⌉, column tiles ⌈D / w⌉.
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

// [8 · 2^glog rows][w columns] = 2048 words each, whatever glog.
var<workgroup> th_tile: array<f32, 2048>;
var<workgroup> sc_tile: array<f32, 2048>;

@compute @workgroup_size(256)
fn svgd_direction(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    // ---- which unit (row block fastest: the units of one tile run together)
    let k = dirp.k;
    let d = dirp.d;
    let unit = wid.x + wid.y * nwg.x;
    if (unit >= dirp.rblocks * dirp.tiles) {
        return;
    }
    let rblk = unit % dirp.rblocks;
    let tile = unit / dirp.rblocks;

    // ---- this invocation's place: row group g (8 rows from i0), column e
    let glog = dirp.glog;
    let w = THREADS >> glog;
    let ngroups = 1u << glog;
    let brows = 8u << glog;
    let g = li >> (8u - glog);
    let col = li & (w - 1u);
    let e = tile * w + col;
    let i0 = rblk * brows + 8u * g;
    let c = vec4<f32>(dirp.c);

    // Kernel columns of the 8 rows, clamped to K − 1: rows past K are computed from a
    // valid word and never written.
    let km = k - 1u;
    let ka = vec4<u32>(min(i0, km), min(i0 + 1u, km), min(i0 + 2u, km), min(i0 + 3u, km));
    let kb = vec4<u32>(min(i0 + 4u, km), min(i0 + 5u, km), min(i0 + 6u, km), min(i0 + 7u, km));

    var xa = vec4<f32>(0.0);
    var xb = vec4<f32>(0.0);
    var aa = vec4<f32>(0.0);
    var ab = vec4<f32>(0.0);
    for (var blk = 0u; blk < dirp.rblocks; blk++) {
        let jb = (rblk + blk) % dirp.rblocks;
        let j0 = jb * brows;
        let jn = min(brows, k - j0);
        if (blk > 0u) {
            // The previous block's reads end before it is overwritten.
            workgroupBarrier();
        }
        // ---- stage θ and score rows j0.. (this invocation: rows g, g + 2^glog, ... of
        // column e; zeros past K or D)
        for (var r = g; r < brows; r += ngroups) {
            var tv = 0.0;
            var sv = 0.0;
            if (r < jn && e < d) {
                let idx = (j0 + r) * d + e;
                tv = theta_d[idx];
                sv = score[idx];
            }
            th_tile[r * w + col] = tv;
            sc_tile[r * w + col] = sv;
        }
        workgroupBarrier();
        if (blk == 0u) {
            // Own rows: block rblk, rows 8g..8g+7 of the tile.
            let base = 8u * g * w + col;
            xa = vec4<f32>(
                th_tile[base],
                th_tile[base + w],
                th_tile[base + 2u * w],
                th_tile[base + 3u * w],
            );
            xb = vec4<f32>(
                th_tile[base + 4u * w],
                th_tile[base + 5u * w],
                th_tile[base + 6u * w],
                th_tile[base + 7u * w],
            );
        }
        // ---- accumulate over the block's j: per row, k_ji · (score_j + c (θ_i − θ_j))
        for (var j = 0u; j < jn; j++) {
            let tj = vec4<f32>(th_tile[j * w + col]);
            let sj = vec4<f32>(sc_tile[j * w + col]);
            let kr = (j0 + j) * k;
            let k0 = vec4<f32>(kern[kr + ka.x], kern[kr + ka.y], kern[kr + ka.z], kern[kr + ka.w]);
            let k1 = vec4<f32>(kern[kr + kb.x], kern[kr + kb.y], kern[kr + kb.z], kern[kr + kb.w]);
            aa = fma(k0, fma(c, xa - tj, sj), aa);
            ab = fma(k1, fma(c, xb - tj, sj), ab);
        }
    }

    // ---- write φ of the 8 rows at column e, once each
    if (e < d) {
        for (var r = 0u; r < 4u; r++) {
            if (i0 + r < k) {
                phi[(i0 + r) * d + e] = dirp.inv_k * aa[r];
            }
            if (i0 + 4u + r < k) {
                phi[(i0 + 4u + r) * d + e] = dirp.inv_k * ab[r];
            }
        }
    }
}
