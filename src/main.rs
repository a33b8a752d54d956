//! The `bella` command line: see `bella --help` and README.md.

fn main() {
    std::process::exit(bella_cli::main());
}

#[path = "cli/mod.rs"]
mod bella_cli;
