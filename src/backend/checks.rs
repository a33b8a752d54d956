//! What every backend relies on, checked once in front of every backend: the checked
//! methods of [`Backend`](super::Backend) call these before the `*_unchecked` kernels, so a
//! caller of the public trait gets an error, never a read or write past a buffer.
//!
//! These are the *length* invariants (sizes agree with the dims given, strided blocks fit,
//! labels index inside a row, tensors live on this backend, outputs do not alias inputs)
//! and the memory budget. The op layer (`crate::ops`) checks the full contract on top, with
//! messages in the op's own terms.

use super::{BackendKind, GradTargets, LoraBackwardArgs, LoraForwardArgs, MatmulArgs};
use crate::dtype::DType;
use crate::error::{BellaError, Result};
use crate::tensor::{OutSlot, Strided, Tensor};

/// How much memory a backend may still allocate: what `bella` checks an op's outputs
/// against before it allocates them, so that no input can abort the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Bytes available for new allocations in all (`u64::MAX`: unknown, not limited here).
    pub total_bytes: u64,
    /// Largest single buffer the device accepts.
    pub max_buffer_bytes: u64,
    /// Where `total_bytes` comes from, for the error message ("available host memory").
    pub source: &'static str,
}

/// Requests smaller than this skip the budget check: they cannot exhaust a machine, and
/// the check would read `/proc/meminfo` on every small op of a training step.
const SMALL_REQUEST_BYTES: u64 = 64 << 20;

impl MemoryBudget {
    /// Host memory: what the kernel reports as available (`MemAvailable`), or no limit
    /// where that cannot be read. `max_buffer` caps one allocation.
    pub fn host(max_buffer_bytes: u64) -> MemoryBudget {
        MemoryBudget {
            total_bytes: host_available_bytes().unwrap_or(u64::MAX),
            max_buffer_bytes,
            source: "available host memory",
        }
    }

    /// Check that buffers of these shapes (f32) fit; the error names the op, each buffer
    /// with its size, and the budget.
    pub fn check(&self, backend: BackendKind, op: &str, parts: &[(&str, &[usize])]) -> Result<()> {
        let sizes: Vec<u64> = parts.iter().map(|(_, s)| bytes_of_shape(s)).collect();
        let total = sizes.iter().fold(0u64, |a, &b| a.saturating_add(b));
        let largest = sizes.iter().copied().max().unwrap_or(0);
        if total <= SMALL_REQUEST_BYTES.min(self.max_buffer_bytes) {
            return Ok(());
        }
        let over_buffer = largest > self.max_buffer_bytes;
        let over_total = total > self.total_bytes;
        if !over_buffer && !over_total {
            return Ok(());
        }
        let listed: Vec<String> = parts
            .iter()
            .zip(&sizes)
            .map(|((name, shape), &b)| format!("{name} {shape:?} {}", human_bytes(b)))
            .collect();
        let limit = if over_buffer {
            format!(
                "the largest buffer the device accepts is {}",
                human_bytes(self.max_buffer_bytes)
            )
        } else {
            format!(
                "the memory budget is {} ({})",
                human_bytes(self.total_bytes),
                self.source
            )
        };
        Err(BellaError::device(
            backend.name(),
            format!(
                "{op}: outputs need {} ({}), over budget: {limit}",
                human_bytes(total),
                listed.join(", ")
            ),
        ))
    }
}

/// f32 bytes of a shape, saturating (a shape chosen by an input file may overflow).
fn bytes_of_shape(shape: &[usize]) -> u64 {
    shape.iter().fold(4u64, |a, &d| a.saturating_mul(d as u64))
}

/// `MemAvailable` from `/proc/meminfo`, re-read at most every 200 ms.
fn host_available_bytes() -> Option<u64> {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    static CACHE: Mutex<Option<(Instant, Option<u64>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, v)) = *cache {
        if at.elapsed() < Duration::from_millis(200) {
            return v;
        }
    }
    let v = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib.saturating_mul(1024))
    });
    *cache = Some((Instant::now(), v));
    v
}

/// `1536` → "1.5 KiB".
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn mismatch(kind: BackendKind, op: &str, msg: String) -> BellaError {
    BellaError::invalid(format!("{op} on {kind}: {msg}"))
}

/// `a · b · …` without overflow, or an error naming what overflowed.
fn product(kind: BackendKind, op: &str, what: &str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            mismatch(
                kind,
                op,
                format!("{what} {dims:?} overflows the address space"),
            )
        })
}

/// Each tensor lives on `kind` and is f32 (the ops that take bf16/f16 operands check those
/// with [`on_device_any_dtype`]).
fn on_device(kind: BackendKind, op: &str, ts: &[(&str, &Tensor)]) -> Result<()> {
    on_device_any_dtype(kind, op, ts)?;
    for (name, t) in ts {
        if t.dtype() != DType::F32 {
            return Err(mismatch(
                kind,
                op,
                format!(
                    "tensor `{name}` is {}; {op} takes f32 here (cast it with ops::cast)",
                    t.dtype()
                ),
            ));
        }
    }
    Ok(())
}

/// The tensors share one dtype (the first one's).
fn one_dtype(kind: BackendKind, op: &str, ts: &[(&str, &Tensor)]) -> Result<()> {
    let (first, t0) = ts[0];
    for (name, t) in &ts[1..] {
        if t.dtype() != t0.dtype() {
            return Err(mismatch(
                kind,
                op,
                format!(
                    "`{name}` is {} and `{first}` is {}: these operands must have one dtype",
                    t.dtype(),
                    t0.dtype()
                ),
            ));
        }
    }
    Ok(())
}

/// Each tensor lives on `kind`, whatever its dtype.
fn on_device_any_dtype(kind: BackendKind, op: &str, ts: &[(&str, &Tensor)]) -> Result<()> {
    for (name, t) in ts {
        if t.device() != kind {
            return Err(mismatch(
                kind,
                op,
                format!("tensor `{name}` is on {}", t.device()),
            ));
        }
    }
    Ok(())
}

/// `t` holds exactly `dims` elements.
fn holds(kind: BackendKind, op: &str, name: &str, t: &Tensor, dims: &[usize]) -> Result<()> {
    let want = product(kind, op, name, dims)?;
    if t.numel() != want {
        return Err(mismatch(
            kind,
            op,
            format!(
                "tensor `{name}` has {} elements (shape {:?}), the sizes given need {want} ({dims:?})",
                t.numel(),
                t.shape()
            ),
        ));
    }
    Ok(())
}

/// `count` blocks of `block` elements from `offset` by `stride` fit in `len` elements.
fn blocks_fit(
    kind: BackendKind,
    op: &str,
    name: &str,
    (offset, stride, len): (usize, usize, usize),
    count: usize,
    block: usize,
) -> Result<()> {
    let end = count
        .checked_sub(1)
        .and_then(|c| c.checked_mul(stride))
        .and_then(|v| v.checked_add(offset))
        .and_then(|v| v.checked_add(block));
    match end {
        Some(e) if e <= len || count == 0 => Ok(()),
        _ => Err(mismatch(
            kind,
            op,
            format!(
                "{count} blocks of {block} elements of `{name}` (offset {offset}, stride {stride}) \
                 do not fit in its {len} elements"
            ),
        )),
    }
}

fn view_fits(
    kind: BackendKind,
    op: &str,
    name: &str,
    v: &Strided,
    count: usize,
    block: usize,
) -> Result<()> {
    blocks_fit(
        kind,
        op,
        name,
        (v.offset, v.stride, v.tensor.numel()),
        count,
        block,
    )
}

fn slot_fits(
    kind: BackendKind,
    op: &str,
    name: &str,
    s: OutSlot,
    out: &Tensor,
    count: usize,
    block: usize,
) -> Result<()> {
    blocks_fit(
        kind,
        op,
        name,
        (s.offset, s.stride, out.numel()),
        count,
        block,
    )
}

fn nonzero(kind: BackendKind, op: &str, dims: &[(&str, usize)]) -> Result<()> {
    match dims.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(mismatch(kind, op, format!("size {name} is 0"))),
        None => Ok(()),
    }
}

fn distinct(
    kind: BackendKind,
    op: &str,
    out: (&str, &Tensor),
    inputs: &[(&str, &Tensor)],
) -> Result<()> {
    for (name, t) in inputs {
        if out.1.same_storage(t) {
            return Err(mismatch(
                kind,
                op,
                format!("output `{}` shares storage with input `{name}`", out.0),
            ));
        }
    }
    Ok(())
}

pub(super) fn lora_forward(
    kind: BackendKind,
    budget: &MemoryBudget,
    a: &LoraForwardArgs,
) -> Result<()> {
    const OP: &str = "lora_forward";
    let d = a.dims;
    nonzero(
        kind,
        OP,
        &[("K", d.k), ("M", d.m), ("I", d.i), ("O", d.o), ("r", d.r)],
    )?;
    let mut ts = vec![
        ("x", a.x),
        ("weight", a.weight),
        ("lora_a", a.a.tensor),
        ("lora_b", a.b.tensor),
    ];
    // x, weight, lora_a, lora_b: all f32 or all one 16-bit type; bias f32 or that type.
    one_dtype(kind, OP, &ts)?;
    if let Some(b) = a.bias {
        ts.push(("bias", b));
        holds(kind, OP, "bias", b, &[d.o])?;
        if b.dtype() != DType::F32 && b.dtype() != a.x.dtype() {
            return Err(mismatch(
                kind,
                OP,
                format!(
                    "`bias` is {}, `x` {}: bias is f32 or x's dtype",
                    b.dtype(),
                    a.x.dtype()
                ),
            ));
        }
    }
    on_device_any_dtype(kind, OP, &ts)?;
    let xk = if d.x_shared { 1 } else { d.k };
    holds(kind, OP, "x", a.x, &[xk, d.m, d.i])?;
    holds(kind, OP, "weight", a.weight, &[d.o, d.i])?;
    view_fits(
        kind,
        OP,
        "lora_a",
        &a.a,
        d.k,
        product(kind, OP, "lora_a block", &[d.r, d.i])?,
    )?;
    view_fits(
        kind,
        OP,
        "lora_b",
        &a.b,
        d.k,
        product(kind, OP, "lora_b block", &[d.o, d.r])?,
    )?;
    budget.check(
        kind,
        OP,
        &[("y", &[d.k, d.m, d.o]), ("h", &[d.k, d.m, d.r])],
    )
}

pub(super) fn lora_backward(
    kind: BackendKind,
    budget: &MemoryBudget,
    a: &LoraBackwardArgs,
    grads: &GradTargets,
) -> Result<()> {
    const OP: &str = "lora_backward";
    let d = a.dims;
    nonzero(
        kind,
        OP,
        &[("K", d.k), ("M", d.m), ("I", d.i), ("O", d.o), ("r", d.r)],
    )?;
    let inputs = [
        ("dy", a.dy),
        ("x", a.x),
        ("weight", a.weight),
        ("lora_a", a.a.tensor),
        ("lora_b", a.b.tensor),
        ("h", a.h),
    ];
    // x, weight, lora_a, lora_b: all f32 or all one 16-bit type (the forward's operands);
    // dy and h: both f32, or (16-bit operands) both the operands' type.
    one_dtype(kind, OP, &inputs[1..5])?;
    on_device_any_dtype(kind, OP, &inputs)?;
    let dyh = [inputs[0], inputs[5]];
    if a.x.dtype().is_half() && a.dy.dtype().is_half() {
        one_dtype(kind, OP, &[inputs[1], inputs[0], inputs[5]])?;
    } else if a.dy.dtype().is_half() || a.h.dtype().is_half() {
        return Err(mismatch(
            kind,
            OP,
            format!(
                "`dy` is {} and `h` {} with {} operands: dy and h are both f32, or both the \
                 operands' 16-bit type",
                a.dy.dtype(),
                a.h.dtype(),
                a.x.dtype()
            ),
        ));
    } else {
        on_device(kind, OP, &dyh)?;
    }
    let (ga, gb) = grads.tensors();
    on_device(kind, OP, &[("d_lora_a", ga), ("d_lora_b", gb)])?;
    let xk = if d.x_shared { 1 } else { d.k };
    holds(kind, OP, "dy", a.dy, &[d.k, d.m, d.o])?;
    holds(kind, OP, "x", a.x, &[xk, d.m, d.i])?;
    holds(kind, OP, "weight", a.weight, &[d.o, d.i])?;
    holds(kind, OP, "h", a.h, &[d.k, d.m, d.r])?;
    let a_block = product(kind, OP, "lora_a block", &[d.r, d.i])?;
    let b_block = product(kind, OP, "lora_b block", &[d.o, d.r])?;
    view_fits(kind, OP, "lora_a", &a.a, d.k, a_block)?;
    view_fits(kind, OP, "lora_b", &a.b, d.k, b_block)?;
    slot_fits(kind, OP, "d_lora_a", a.da, ga, d.k, a_block)?;
    slot_fits(kind, OP, "d_lora_b", a.db, gb, d.k, b_block)?;
    distinct(kind, OP, ("d_lora_a", ga), &inputs)?;
    distinct(kind, OP, ("d_lora_b", gb), &inputs)?;
    if matches!(grads, GradTargets::Split(..)) && ga.same_storage(gb) {
        return Err(mismatch(
            kind,
            OP,
            "outputs `d_lora_a` and `d_lora_b` share storage (pass one arena instead)".into(),
        ));
    }
    let dx: &[usize] = if !a.need_dx {
        &[0]
    } else if d.x_shared {
        &[d.m, d.i]
    } else {
        &[d.k, d.m, d.i]
    };
    budget.check(kind, OP, &[("dx", dx), ("g", &[d.k, d.m, d.r])])
}

pub(super) fn matmul(kind: BackendKind, a: &MatmulArgs, out: &Tensor) -> Result<()> {
    const OP: &str = "matmul";
    nonzero(
        kind,
        OP,
        &[
            ("batch", a.batch),
            ("m", a.m),
            ("n", a.n),
            ("inner", a.inner),
        ],
    )?;
    // a and b: both f32, or both the same 16-bit type (f32 accumulation); c is f32.
    on_device_any_dtype(kind, OP, &[("a", a.a.tensor), ("b", a.b.tensor)])?;
    on_device(kind, OP, &[("c", out)])?;
    one_dtype(kind, OP, &[("a", a.a.tensor), ("b", a.b.tensor)])?;
    view_fits(
        kind,
        OP,
        "a",
        &a.a,
        a.batch,
        product(kind, OP, "a block", &[a.m, a.inner])?,
    )?;
    view_fits(
        kind,
        OP,
        "b",
        &a.b,
        a.batch,
        product(kind, OP, "b block", &[a.inner, a.n])?,
    )?;
    slot_fits(
        kind,
        OP,
        "c",
        a.out,
        out,
        a.batch,
        product(kind, OP, "c block", &[a.m, a.n])?,
    )?;
    distinct(
        kind,
        OP,
        ("c", out),
        &[("a", a.a.tensor), ("b", a.b.tensor)],
    )
}

/// `cast`: `x` on this backend (any dtype), the output budgeted.
pub(super) fn cast(kind: BackendKind, budget: &MemoryBudget, x: &Tensor, to: DType) -> Result<()> {
    const OP: &str = "cast";
    on_device_any_dtype(kind, OP, &[("x", x)])?;
    // The budget counts f32 elements: a 16-bit output takes half of that (rounded up).
    let words = [to.words(x.numel())];
    budget.check(
        kind,
        OP,
        &[("out", if to.is_half() { &words } else { x.shape() })],
    )
}

/// `[k, d]` particle matrices for the SVGD ops, and their outputs in the budget.
pub(super) fn particles(
    kind: BackendKind,
    budget: &MemoryBudget,
    op: &str,
    ts: &[(&str, &Tensor)],
    (k, d): (usize, usize),
    outputs: &[(&str, &[usize])],
) -> Result<()> {
    nonzero(kind, op, &[("K", k), ("D", d)])?;
    on_device(kind, op, ts)?;
    for (name, t) in ts {
        holds(kind, op, name, t, &[k, d])?;
    }
    budget.check(kind, op, outputs)
}

pub(super) fn svgd_kernel_matrix(
    kind: BackendKind,
    kernel: &Tensor,
    k: usize,
    bandwidth: f32,
) -> Result<()> {
    const OP: &str = "svgd_direction";
    on_device(kind, OP, &[("kernel", kernel)])?;
    holds(kind, OP, "kernel", kernel, &[k, k])?;
    if !(bandwidth > 0.0 && bandwidth.is_finite()) {
        return Err(mismatch(
            kind,
            OP,
            format!("bandwidth must be positive and finite, got {bandwidth}"),
        ));
    }
    Ok(())
}

/// Elementwise ops: every tensor has `len` elements.
pub(super) fn same_len(
    kind: BackendKind,
    budget: &MemoryBudget,
    op: &str,
    ts: &[(&str, &Tensor)],
) -> Result<()> {
    on_device(kind, op, ts)?;
    let (first, t0) = ts[0];
    for (name, t) in &ts[1..] {
        if t.numel() != t0.numel() {
            return Err(mismatch(
                kind,
                op,
                format!(
                    "tensor `{name}` has {} elements (shape {:?}), `{first}` has {} (shape {:?})",
                    t.numel(),
                    t.shape(),
                    t0.numel(),
                    t0.shape()
                ),
            ));
        }
    }
    budget.check(kind, op, &[("out", t0.shape())])
}

pub(super) fn adamw(
    kind: BackendKind,
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: u32,
) -> Result<()> {
    const OP: &str = "adamw_step";
    let unlimited = MemoryBudget {
        total_bytes: u64::MAX,
        max_buffer_bytes: u64::MAX,
        source: "",
    };
    same_len(
        kind,
        &unlimited,
        OP,
        &[("param", param), ("grad", grad), ("m", m), ("v", v)],
    )?;
    if step < 1 {
        return Err(mismatch(kind, OP, format!("step must be ≥ 1, got {step}")));
    }
    Ok(())
}

/// `logits [k, m, c]` and, for the loss, `m` labels each `< c`.
pub(super) fn logits(
    kind: BackendKind,
    budget: &MemoryBudget,
    op: &str,
    logits: &Tensor,
    labels: Option<&[u32]>,
    (k, m, c): (usize, usize, usize),
) -> Result<()> {
    nonzero(kind, op, &[("K", k), ("M", m), ("C", c)])?;
    on_device(kind, op, &[("logits", logits)])?;
    holds(kind, op, "logits", logits, &[k, m, c])?;
    if let Some(labels) = labels {
        if labels.len() != m {
            return Err(mismatch(
                kind,
                op,
                format!("{} labels for M = {m} rows", labels.len()),
            ));
        }
        if let Some((row, l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= c) {
            return Err(mismatch(
                kind,
                op,
                format!("label {l} at row {row} is not below C = {c}"),
            ));
        }
    }
    budget.check(kind, op, &[("out", &[k, m, c])])
}

/// An upload or a fresh buffer of `shape`: the values match it, and it fits the budget.
pub(super) fn alloc(
    kind: BackendKind,
    budget: &MemoryBudget,
    op: &str,
    shape: &[usize],
    values: Option<usize>,
) -> Result<()> {
    let n = product(kind, op, "shape", shape)?;
    if let Some(v) = values {
        if v != n {
            return Err(mismatch(
                kind,
                op,
                format!("{v} values for shape {shape:?}"),
            ));
        }
    }
    budget.check(kind, op, &[("tensor", shape)])
}
