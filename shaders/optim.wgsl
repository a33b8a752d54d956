// adamw_step (DESIGN.md op 7), as PyTorch's AdamW, one invocation per element. The bias
// corrections 1 − β1ᵗ and 1 − β2ᵗ are computed on the host in f64.

struct AdamwParams {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    decay: f32,
    bias_correction1: f32,
    bias_correction2: f32,
}

const THREADS: u32 = 256u;

@group(0) @binding(0) var<uniform> hp: AdamwParams;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(256)
fn adamw_step(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let idx = (wid.x + wid.y * nwg.x) * THREADS + li;
    if (idx >= hp.n) {
        return;
    }
    let gi = grad[idx];
    let mi = hp.beta1 * m[idx] + (1.0 - hp.beta1) * gi;
    let vi = hp.beta2 * v[idx] + (1.0 - hp.beta2) * gi * gi;
    m[idx] = mi;
    v[idx] = vi;
    let m_hat = mi / hp.bias_correction1;
    let v_hat = vi / hp.bias_correction2;
    param[idx] = param[idx] * hp.decay - hp.lr * m_hat / (sqrt(v_hat) + hp.eps);
}
