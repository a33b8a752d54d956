//! `bella train` / `bella eval` (being written).

use bella::{BellaError, Result};

#[derive(clap::Args)]
pub struct TrainArgs {}

#[derive(clap::Args)]
pub struct EvalArgs {}

pub fn run(_a: TrainArgs) -> Result<i32> {
    Err(BellaError::invalid("bella train is not implemented yet"))
}

pub fn eval(_a: EvalArgs) -> Result<i32> {
    Err(BellaError::invalid("bella eval is not implemented yet"))
}
