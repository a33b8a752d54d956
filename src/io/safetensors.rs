//! safetensors reading and writing. Files come from other tools (PyTorch, NumPy), so every
//! dtype they write is read: f32 and f64 as f32, bf16 and f16 kept as their bits (not
//! widened: the ops that take them keep them 16-bit on the device), every integer dtype (and
//! bool) as integers. The header is validated by the `safetensors` crate
//! (offsets inside the file, contiguous and non-overlapping, sizes matching dtype × shape);
//! anything it rejects becomes a clear error naming the file. Writes are atomic
//! (temporary file, then rename), so an interrupted write never leaves a half file.

use crate::dtype::DType;
use crate::error::{BellaError, Result};
use crate::host::{HostData, HostTensor, Named};
use ::safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::path::Path;

/// Read every tensor of a safetensors file.
pub fn read(path: &Path) -> Result<Named> {
    let file = std::fs::File::open(path)
        .map_err(|e| BellaError::io(format!("cannot open {}: {e}", path.display())))?;
    let len = file.metadata()?.len();
    if len < 8 {
        return Err(BellaError::io(format!(
            "{}: not a safetensors file (only {len} bytes; the header length alone takes 8)",
            path.display()
        )));
    }
    // SAFETY: the map is read-only and dropped before this function returns; a file changed
    // underneath us by another process can only give wrong values, which are then checked.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| BellaError::io(format!("cannot map {}: {e}", path.display())))?;
    parse(&map).map_err(|e| BellaError::io(format!("{}: {e}", path.display())))
}

/// Parse safetensors bytes.
pub fn parse(bytes: &[u8]) -> std::result::Result<Named, String> {
    check_header(bytes).map_err(|e| format!("invalid safetensors: {e}"))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("invalid safetensors: {e}"))?;
    let mut out = Named::new();
    for (name, view) in st.tensors() {
        let t = convert(&view).map_err(|e| format!("tensor `{name}`: {e}"))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// The safetensors crate's own header limit.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// What the `safetensors` crate would reject, said in terms a user can act on (which
/// tensor, how many bytes it needs and has, a duplicate name); whatever this does not
/// recognise is left to the crate and its message.
fn check_header(bytes: &[u8]) -> std::result::Result<(), String> {
    let len = bytes.len() as u64;
    let Some(prefix) = bytes.get(..8) else {
        return Err(format!("only {len} bytes; the header length alone takes 8"));
    };
    let n = u64::from_le_bytes(prefix.try_into().expect("8 bytes"));
    if n > MAX_HEADER_BYTES {
        return Err(format!(
            "header too large ({n} bytes; at most {MAX_HEADER_BYTES})"
        ));
    }
    if 8 + n > len {
        return Err(format!(
            "header length {n} runs past the end of the file ({len} bytes)"
        ));
    }
    let header = &bytes[8..8 + n as usize];
    let Ok(Entries(entries)) = serde_json::from_slice::<Entries>(header) else {
        return Ok(()); // not a JSON object: the crate says so
    };
    let data_len = len - 8 - n;
    let mut seen = std::collections::HashSet::new();
    let mut end = 0u64;
    for (name, info) in &entries {
        if !seen.insert(name.as_str()) {
            return Err(format!("duplicate tensor name `{name}` in the header"));
        }
        if name == "__metadata__" {
            continue;
        }
        let dtype = info.get("dtype").and_then(|d| d.as_str());
        let shape: Option<Vec<u64>> = info
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|v| v.as_u64()).collect());
        let offsets: Option<Vec<u64>> = info
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|v| v.as_u64()).collect());
        let (Some(dtype), Some(shape), Some(offsets)) = (dtype, shape, offsets) else {
            continue;
        };
        let (Some(size), &[begin, stop]) = (dtype_bytes(dtype), &offsets[..]) else {
            continue;
        };
        let need = shape.iter().try_fold(size, |a, &d| a.checked_mul(d));
        match need {
            Some(need) if stop >= begin && stop - begin != need => {
                return Err(format!(
                    "tensor `{name}`: {dtype} {shape:?} needs {need} bytes, its data_offsets \
                     [{begin}, {stop}] span {}",
                    stop - begin
                ))
            }
            _ => end = end.max(stop),
        }
    }
    if end > data_len {
        return Err(format!(
            "the header's tensors need {end} data bytes, the file has {data_len} after the header"
        ));
    }
    Ok(())
}

/// Bytes per element of a safetensors dtype name (`None`: left to the crate).
fn dtype_bytes(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        _ => return None,
    })
}

/// A JSON object's entries in file order, duplicates kept (a map would drop them).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Entries, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    v.push(entry);
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(Visit)
    }
}

fn convert(view: &TensorView) -> std::result::Result<HostTensor, String> {
    let shape = view.shape().to_vec();
    let b = view.data();
    let numel: usize = shape.iter().product();
    let size = view.dtype().bitsize() / 8;
    if b.len() != numel * size {
        return Err(format!(
            "holds {} bytes, its dtype and shape {:?} need {}",
            b.len(),
            shape,
            numel * size
        ));
    }
    // Little-endian fixed-size values; the data may be unaligned, so decode bytes.
    fn each<const N: usize, T>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        b.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks_exact gives N bytes")))
            .collect()
    }
    let data = match view.dtype() {
        Dtype::F32 => HostData::Float(each(b, f32::from_le_bytes)),
        Dtype::F64 => HostData::Float(each(b, |c| f64::from_le_bytes(c) as f32)),
        Dtype::F16 => HostData::Half(DType::F16, each(b, u16::from_le_bytes)),
        Dtype::BF16 => HostData::Half(DType::BF16, each(b, u16::from_le_bytes)),
        Dtype::BOOL => HostData::Int(b.iter().map(|&v| (v != 0) as i64).collect()),
        Dtype::U8 => HostData::Int(b.iter().map(|&v| v as i64).collect()),
        Dtype::I8 => HostData::Int(b.iter().map(|&v| v as i8 as i64).collect()),
        Dtype::I16 => HostData::Int(each(b, |c| i16::from_le_bytes(c) as i64)),
        Dtype::U16 => HostData::Int(each(b, |c| u16::from_le_bytes(c) as i64)),
        Dtype::I32 => HostData::Int(each(b, |c| i32::from_le_bytes(c) as i64)),
        Dtype::U32 => HostData::Int(each(b, |c| u32::from_le_bytes(c) as i64)),
        Dtype::I64 => HostData::Int(each(b, i64::from_le_bytes)),
        Dtype::U64 => HostData::Int(each(b, |c| {
            i64::try_from(u64::from_le_bytes(c)).unwrap_or(i64::MAX)
        })),
        other => {
            return Err(format!(
                "unsupported dtype {other:?} (use f32, f16, bf16, f64 or an integer type)"
            ))
        }
    };
    Ok(HostTensor { shape, data })
}

/// Write tensors (floats as f32, bf16/f16 as they are, integers as i64), atomically.
pub fn write(path: &Path, tensors: &[(String, HostTensor)]) -> Result<()> {
    write_with_metadata(path, tensors, None)
}

/// Like [`write()`], with string metadata in the header (checkpoints record their run there).
pub fn write_with_metadata(
    path: &Path,
    tensors: &[(String, HostTensor)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| match &t.data {
            HostData::Float(v) => (
                n.clone(),
                Dtype::F32,
                t.shape.clone(),
                bytemuck::cast_slice(v).to_vec(),
            ),
            HostData::Half(d, v) => (
                n.clone(),
                if *d == DType::BF16 {
                    Dtype::BF16
                } else {
                    Dtype::F16
                },
                t.shape.clone(),
                v.iter().flat_map(|b| b.to_le_bytes()).collect(),
            ),
            HostData::Int(v) => (
                n.clone(),
                Dtype::I64,
                t.shape.clone(),
                bytemuck::cast_slice(v).to_vec(),
            ),
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| BellaError::io(format!("tensor `{n}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let file_bytes = ::safetensors::serialize(views, metadata)
        .map_err(|e| BellaError::io(format!("cannot write {}: {e}", path.display())))?;
    let tmp = temp_path(path);
    // The error names the file the user asked for, not the temporary one.
    std::fs::write(&tmp, file_bytes)
        .map_err(|e| BellaError::io(format!("cannot write {}: {e}", path.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        BellaError::io(format!(
            "cannot move {} to {}: {e}",
            tmp.display(),
            path.display()
        ))
    })
}

/// A sibling temporary name, so the final rename stays on one file system.
pub fn temp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Read the string metadata of a safetensors file's header.
pub fn read_metadata(path: &Path) -> Result<std::collections::HashMap<String, String>> {
    let bytes = std::fs::read(path)
        .map_err(|e| BellaError::io(format!("cannot read {}: {e}", path.display())))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| BellaError::io(format!("{}: invalid safetensors: {e}", path.display())))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_dtypes() {
        let dir = std::env::temp_dir().join(format!("bella-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.safetensors");
        let ts = vec![
            (
                "a".to_string(),
                HostTensor::float(&[2, 3], vec![1., 2., 3., 4., 5., -6.5]),
            ),
            ("l".to_string(), HostTensor::int(&[3], vec![0, 7, 2])),
            ("s".to_string(), HostTensor::scalar(0.25)),
        ];
        write(&p, &ts).unwrap();
        let back = read(&p).unwrap();
        for (n, t) in &ts {
            assert_eq!(&back[n], t, "{n}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"").is_err());
        assert!(parse(&[255, 255, 255, 255, 0, 0, 0, 0, b'{']).is_err());
        let mut lying = Vec::new();
        let header = br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        lying.extend_from_slice(&(header.len() as u64).to_le_bytes());
        lying.extend_from_slice(header);
        lying.extend_from_slice(&[0u8; 8]); // 8 of the 16 promised bytes
        assert!(parse(&lying).is_err());
    }
}
