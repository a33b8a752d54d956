//! Files: safetensors in and out (memory-mapped, validated, dtypes converted).
pub mod safetensors;
