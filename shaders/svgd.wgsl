// SVGD (DESIGN.md ops 4–6): pairwise_sqdist, the RBF kernel from it, svgd_direction.
//
// The median heuristic for the bandwidth runs on the host over the downloaded K×K
// distances (K is small); the exponentials run here.

struct SqdistParams {
    k: u32,
    d: u32,
    _pad0: u32,
    _pad1: u32,
}

struct RbfParams {
    n: u32,
    bandwidth: f32,
    _pad0: u32,
    _pad1: u32,
}

struct DirectionParams {
    k: u32,
    d: u32,
    inv_k: f32,
    two_over_h: f32,
}

const THREADS: u32 = 256u;

@group(0) @binding(0) var<uniform> sp: SqdistParams;
@group(0) @binding(1) var<storage, read> theta: array<f32>;
@group(0) @binding(2) var<storage, read_write> sqdist: array<f32>;

@group(0) @binding(0) var<uniform> rp: RbfParams;
@group(0) @binding(1) var<storage, read> dist_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> kernel_out: array<f32>;

@group(0) @binding(0) var<uniform> dirp: DirectionParams;
@group(0) @binding(1) var<storage, read> theta_d: array<f32>;
@group(0) @binding(2) var<storage, read> score: array<f32>;
@group(0) @binding(3) var<storage, read> kern: array<f32>;
@group(0) @binding(4) var<storage, read_write> phi: array<f32>;

var<workgroup> partial: array<f32, THREADS>;

fn workgroup_sum(li: u32, v: f32) -> f32 {
    partial[li] = v;
    workgroupBarrier();
    for (var s = THREADS / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            partial[li] += partial[li + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// One workgroup per pair (i, j), i ≤ j: sums (θ_i − θ_j)² over D (differences, not the
// ‖θ‖² expansion, which cancels), then writes both d_ij and d_ji.
@compute @workgroup_size(256)
fn pairwise_sqdist(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let pair = wid.x + wid.y * nwg.x;
    if (pair >= sp.k * sp.k) {
        return;
    }
    let i = pair / sp.k;
    let j = pair % sp.k;
    if (i > j) {
        return;
    }
    var s = 0.0;
    if (i != j) {
        for (var c = li; c < sp.d; c += THREADS) {
            let t = theta[i * sp.d + c] - theta[j * sp.d + c];
            s = fma(t, t, s);
        }
    }
    let total = workgroup_sum(li, s);
    if (li == 0u) {
        sqdist[i * sp.k + j] = total;
        sqdist[j * sp.k + i] = total;
    }
}

// k_ij = exp(−d_ij / h).
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

// φ_i[c] = (1/K) Σ_j k_ji (score_j[c] + (2/h)(θ_i[c] − θ_j[c])), one invocation per (i, c).
@compute @workgroup_size(256)
fn svgd_direction(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let idx = (wid.x + wid.y * nwg.x) * THREADS + li;
    if (idx >= dirp.k * dirp.d) {
        return;
    }
    let i = idx / dirp.d;
    let c = idx % dirp.d;
    let ti = theta_d[idx];
    var attract = 0.0;
    var repulse = 0.0;
    for (var j = 0u; j < dirp.k; j++) {
        let kji = kern[j * dirp.k + i];
        attract = fma(kji, score[j * dirp.d + c], attract);
        repulse = fma(kji, ti - theta_d[j * dirp.d + c], repulse);
    }
    phi[idx] = dirp.inv_k * (attract + dirp.two_over_h * repulse);
}
