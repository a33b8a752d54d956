//! `bella bench` (being written).

use bella::{BellaError, Result};

#[derive(clap::Args)]
pub struct BenchArgs {}

pub fn run(_a: BenchArgs) -> Result<i32> {
    Err(BellaError::invalid("bella bench is not implemented yet"))
}
