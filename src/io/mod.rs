//! Files: safetensors in and out (memory-mapped, validated, dtypes converted), and NumPy
//! `.npz` in.
pub mod npz;
pub mod safetensors;

/// Read every tensor of a safetensors or `.npz` file, told apart by content, not name: a
/// zip archive (`PK\x03\x04`, or `PK\x05\x06` for an empty one) is read as `.npz`, anything
/// else as safetensors, except that a file named `.npz` must be a zip archive (a lone `.npy` array is refused: it has no tensor names). Errors
/// name the path.
pub fn read_named(path: &std::path::Path) -> crate::error::Result<crate::host::Named> {
    use std::io::Read;
    let mut magic = Vec::with_capacity(4);
    std::fs::File::open(path)
        .and_then(|f| f.take(4).read_to_end(&mut magic))
        .map_err(|e| crate::BellaError::io(format!("cannot open {}: {e}", path.display())))?;
    match &magic[..] {
        b"PK\x03\x04" | b"PK\x05\x06" => npz::read(path),
        b"\x93NUM" => Err(crate::BellaError::io(format!(
            "{} is a single .npy array, not a file of named tensors: write one with np.savez \
             (.npz) or as safetensors",
            path.display()
        ))),
        _ if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npz")) =>
        {
            Err(crate::BellaError::io(format!(
                "{} is not a .npz file (no zip archive: it does not start with `PK`)",
                path.display()
            )))
        }
        _ => safetensors::read(path),
    }
}
