//! `bella op NAME --in IN.safetensors --out OUT.safetensors [--backend B]`.

use bella::backend::open_named;
use bella::io::safetensors;
use bella::ops::named::run_named;
use bella::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct OpArgs {
    /// Op name (see DESIGN.md): lora_forward, lora_backward, matmul, pairwise_sqdist,
    /// rbf_kernel, svgd_direction, adamw_step, relu_forward, relu_backward, gelu_forward,
    /// gelu_backward, softmax_xent, ensemble_stats, and the utility axpby.
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
}

pub fn run(a: OpArgs) -> Result<i32> {
    if !bella::ops::OP_NAMES.contains(&a.name.as_str()) {
        return Err(bella::BellaError::invalid(format!(
            "unknown op `{}` (known: {})",
            a.name,
            bella::ops::OP_NAMES.join(", ")
        )));
    }
    let be = open_named(&a.backend)?;
    let inputs = safetensors::read(&a.input)?;
    let outputs = run_named(be.as_ref(), &a.name, &inputs)?;
    safetensors::write(&a.output, &outputs)?;
    Ok(0)
}
