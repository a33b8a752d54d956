// softmax_xent and ensemble_stats (DESIGN.md ops 9 and 10). One workgroup per row of C
// logits; maxima and sums are workgroup tree reductions. Softmax is taken as
// exp(z − max) / Σ exp(z − max), so large logits do not overflow.

struct XentParams {
    k: u32,
    m: u32,
    c: u32,
    inv_m: f32,
}

struct StatsParams {
    k: u32,
    m: u32,
    c: u32,
    inv_k: f32,
}

const THREADS: u32 = 256u;

// softmax_xent_rows: per-row loss and dlogits.
@group(0) @binding(0) var<uniform> xp: XentParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_loss: array<f32>;

// row_mean: loss[k] = mean over M of the row losses.
@group(0) @binding(1) var<storage, read> row_loss_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;

// ensemble_stats.
@group(0) @binding(0) var<uniform> stp: StatsParams;
@group(0) @binding(1) var<storage, read> stat_logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;
@group(0) @binding(3) var<storage, read_write> entropy: array<f32>;
@group(0) @binding(4) var<storage, read_write> expected_entropy: array<f32>;
@group(0) @binding(5) var<storage, read_write> mutual_info: array<f32>;

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

fn workgroup_max(li: u32, v: f32) -> f32 {
    partial[li] = v;
    workgroupBarrier();
    for (var s = THREADS / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            partial[li] = max(partial[li], partial[li + s]);
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

fn row_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Row (k, m): loss = log Σ exp(z − max) + max − z[label]; dlogits = (softmax − onehot) / M.
@compute @workgroup_size(256)
fn softmax_xent_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = row_index(wid, nwg);
    if (row >= xp.k * xp.m) {
        return;
    }
    let base = row * xp.c;
    var mx = -0x1.fffffep+127f;
    for (var j = li; j < xp.c; j += THREADS) {
        mx = max(mx, logits[base + j]);
    }
    mx = workgroup_max(li, mx);
    var s = 0.0;
    for (var j = li; j < xp.c; j += THREADS) {
        s += exp(logits[base + j] - mx);
    }
    s = workgroup_sum(li, s);
    let label = labels[row % xp.m];
    for (var j = li; j < xp.c; j += THREADS) {
        let prob = exp(logits[base + j] - mx) / s;
        dlogits[base + j] = (prob - select(0.0, 1.0, j == label)) * xp.inv_m;
    }
    if (li == 0u) {
        row_loss[row] = log(s) + mx - logits[base + label];
    }
}

// One workgroup per particle: loss[k] = (1/M) Σ_m row_loss[k, m].
@compute @workgroup_size(256)
fn row_mean(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let k = row_index(wid, nwg);
    if (k >= xp.k) {
        return;
    }
    var s = 0.0;
    for (var i = li; i < xp.m; i += THREADS) {
        s += row_loss_in[k * xp.m + i];
    }
    s = workgroup_sum(li, s);
    if (li == 0u) {
        loss[k] = s * xp.inv_m;
    }
}

// One workgroup per example m: the particles' softmaxes are averaged into probs[m, :]
// (each invocation owns the same classes for every particle, so it accumulates its own
// entries without races); entropies use H = log S − Σ e·(z − max) / S with e = exp(z − max).
@compute @workgroup_size(256)
fn ensemble_stats(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = row_index(wid, nwg);
    if (row >= stp.m) {
        return;
    }
    let out_base = row * stp.c;
    for (var j = li; j < stp.c; j += THREADS) {
        probs[out_base + j] = 0.0;
    }
    var expected = 0.0;
    for (var kp = 0u; kp < stp.k; kp++) {
        let base = (kp * stp.m + row) * stp.c;
        var mx = -0x1.fffffep+127f;
        for (var j = li; j < stp.c; j += THREADS) {
            mx = max(mx, stat_logits[base + j]);
        }
        mx = workgroup_max(li, mx);
        var s = 0.0;
        var weighted = 0.0;
        for (var j = li; j < stp.c; j += THREADS) {
            let z = stat_logits[base + j] - mx;
            let e = exp(z);
            s += e;
            weighted += e * z;
        }
        s = workgroup_sum(li, s);
        weighted = workgroup_sum(li, weighted);
        expected += log(s) - weighted / s;
        for (var j = li; j < stp.c; j += THREADS) {
            probs[out_base + j] += stp.inv_k * exp(stat_logits[base + j] - mx) / s;
        }
    }
    expected *= stp.inv_k;
    var h = 0.0;
    for (var j = li; j < stp.c; j += THREADS) {
        let q = probs[out_base + j];
        if (q > 0.0) {
            h -= q * log(q);
        }
    }
    h = workgroup_sum(li, h);
    if (li == 0u) {
        entropy[row] = h;
        expected_entropy[row] = expected;
        mutual_info[row] = h - expected;
    }
}
