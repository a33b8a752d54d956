// relu / gelu forward and backward (DESIGN.md op 8, GELU in PyTorch's tanh form) and the
// axpby utility (out = αx + βy). One invocation per element.

struct ElementwiseParams {
    n: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

const THREADS: u32 = 256u;
const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const GELU_C: f32 = 0.044715;

@group(0) @binding(0) var<uniform> ep: ElementwiseParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// Unary kernels write binding 2; binary ones read it and write binding 3.
@group(0) @binding(2) var<storage, read_write> unary_out: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> binary_out: array<f32>;

fn element(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * THREADS + li;
}

// tanh through exp, saturating cleanly for large |u| (some backends' tanh returns NaN there).
// 1 + tanh(u) = 2 / (1 + e^(-2u)). Formed this way, not as 1 + tanh(u), it keeps its
// relative precision for u << 0 (x below about -3), where the sum would cancel.
fn one_plus_tanh(u: f32) -> f32 {
    return 2.0 / (1.0 + exp(min(-2.0 * u, 80.0)));
}

fn gelu(v: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (v + GELU_C * v * v * v);
    return 0.5 * v * one_plus_tanh(u);
}

// d/dx gelu = 0.5 (1 + t) + 0.5 x (1 − t²) u', with 1 − t² = (2 − (1 + t)) (1 + t).
fn gelu_grad(v: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (v + GELU_C * v * v * v);
    let s = one_plus_tanh(u);
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * v * v);
    return 0.5 * s + 0.5 * v * ((2.0 - s) * s) * du;
}

@compute @workgroup_size(256)
fn relu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let i = element(wid, nwg, li);
    if (i < ep.n) {
        unary_out[i] = max(x[i], 0.0);
    }
}

@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let i = element(wid, nwg, li);
    if (i < ep.n) {
        binary_out[i] = select(0.0, y[i], x[i] > 0.0);
    }
}

@compute @workgroup_size(256)
fn gelu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let i = element(wid, nwg, li);
    if (i < ep.n) {
        unary_out[i] = gelu(x[i]);
    }
}

@compute @workgroup_size(256)
fn gelu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let i = element(wid, nwg, li);
    if (i < ep.n) {
        binary_out[i] = y[i] * gelu_grad(x[i]);
    }
}

@compute @workgroup_size(256)
fn axpby(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let i = element(wid, nwg, li);
    if (i < ep.n) {
        binary_out[i] = ep.alpha * x[i] + ep.beta * y[i];
    }
}
