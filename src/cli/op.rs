//! `bella op NAME --in IN.safetensors --out OUT.safetensors [--backend B] [--dtype D]`.

use bella::backend::open_named;
use bella::io::safetensors;
use bella::ops::named::{run_named_as, UTILITY_NAMES};
use bella::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct OpArgs {
    /// Op name (see DESIGN.md): lora_forward, lora_backward, matmul, pairwise_sqdist,
    /// rbf_kernel, svgd_direction, adamw_step, relu_forward, relu_backward, gelu_forward,
    /// gelu_backward, softmax_xent, ensemble_stats, and the utilities axpby and cast.
    name: String,
    /// Input tensors, named as in the op's contract.
    #[arg(long = "in")]
    input: PathBuf,
    /// Where to write the outputs.
    #[arg(long = "out")]
    output: PathBuf,
    /// cpu | wgpu | cuda | ptx-sim | auto
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// f32 | bf16 | f16: for `matmul`, `lora_forward` and `lora_backward`, the dtype of the
    /// operands on the device (`a`, `b`; `x`, `weight`, `lora_a`, `lora_b`; converted by `cast`;
    /// outputs f32); for `cast`, the dtype of `y`. Without it those operands stay 16-bit when
    /// the file holds them all in one 16-bit type. Other ops take f32.
    #[arg(long)]
    dtype: Option<bella::DType>,
}

pub fn run(a: OpArgs) -> Result<i32> {
    let known = || bella::ops::OP_NAMES.iter().chain(&UTILITY_NAMES);
    if !known().any(|n| *n == a.name) {
        let names: Vec<&str> = known().copied().collect();
        return Err(bella::BellaError::invalid(format!(
            "unknown op `{}` (known: {})",
            a.name,
            names.join(", ")
        )));
    }
    let be = open_named(&a.backend)?;
    let inputs = safetensors::read(&a.input)?;
    let outputs = run_named_as(be.as_ref(), &a.name, &inputs, a.dtype)?;
    safetensors::write(&a.output, &outputs)?;
    Ok(0)
}
