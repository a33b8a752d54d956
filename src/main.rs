//! The `bella` command line: see `bella --help` and README.md.

fn main() {
    // The Vulkan loader and Mesa complain on stderr when XDG_RUNTIME_DIR is unset (common in
    // containers and CI); give them the temp dir before any thread or adapter starts.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    std::process::exit(bella_cli::main());
}

#[path = "cli/mod.rs"]
mod bella_cli;
