//! NumPy `.npz` reading: a zip archive (stored or deflated, as `np.savez` and
//! `np.savez_compressed` write it) of `.npy` files, one tensor per entry, named by the entry
//! without its `.npy`. The `.npy` format is parsed here: magic `\x93NUMPY`, version 1.0, 2.0
//! or 3.0, a header length, and a Python-dict header with `descr`, `fortran_order` and
//! `shape`. Float dtypes (`<f2 <f4 <f8`) become [`HostData::Float`], bool and integer dtypes
//! (`|b1 |i1 |u1 <i2 <u2 <i4 <u4 <i8 <u8`) [`HostData::Int`]; big-endian (`>`) data is
//! byte-swapped and Fortran-ordered data reordered to row-major. Everything else (object,
//! complex, strings, structured records, datetimes) is refused with an error that says which,
//! as is a header that does not parse or data that does not match its shape.

use crate::error::{BellaError, Result};
use crate::host::{HostData, HostTensor, Named};
use std::io::Read;
use std::path::Path;

/// Read every tensor of a `.npz` file.
pub fn read(path: &Path) -> Result<Named> {
    let file = std::fs::File::open(path)
        .map_err(|e| BellaError::io(format!("cannot open {}: {e}", path.display())))?;
    if file.metadata()?.len() == 0 {
        return Err(BellaError::io(format!(
            "{} is not a .npz file (no zip archive): the file is empty",
            path.display()
        )));
    }
    // SAFETY: the map is read-only and dropped before this function returns; a file changed
    // underneath us by another process can only give wrong values, which are then checked.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| BellaError::io(format!("cannot map {}: {e}", path.display())))?;
    parse_archive(&map).map_err(|e| {
        BellaError::io(match e {
            NpzError::NotZip(e) => {
                format!(
                    "{} is not a .npz file (no zip archive): {e}",
                    path.display()
                )
            }
            NpzError::Other(e) => format!("{}: {e}", path.display()),
        })
    })
}

/// Parse the bytes of a `.npz` file.
pub fn parse(bytes: &[u8]) -> std::result::Result<Named, String> {
    parse_archive(bytes).map_err(|e| match e {
        NpzError::NotZip(e) => format!("not a .npz file (no zip archive): {e}"),
        NpzError::Other(e) => e,
    })
}

/// Parse the bytes of one `.npy` file (what a `.npz` entry holds, or `np.save` writes).
pub fn parse_npy(bytes: &[u8]) -> std::result::Result<HostTensor, String> {
    read_npy(&mut &bytes[..], bytes.len() as u64)
}

enum NpzError {
    /// The bytes are no zip archive at all.
    NotZip(String),
    /// An archive, but an entry is wrong (the message names it).
    Other(String),
}

fn parse_archive(bytes: &[u8]) -> std::result::Result<Named, NpzError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| {
        if bytes.starts_with(b"PK") {
            NpzError::Other(format!(
                "damaged zip archive (truncated or corrupt?), not a readable .npz: {e}"
            ))
        } else {
            NpzError::NotZip(e.to_string())
        }
    })?;
    let mut out = Named::new();
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| NpzError::Other(format!("entry {i} of the archive: {e}")))?;
        let entry_name = entry.name().to_string();
        let Some(name) = entry_name.strip_suffix(".npy").filter(|n| !n.is_empty()) else {
            return Err(NpzError::Other(format!(
                "entry `{entry_name}` is not a .npy file (a .npz holds only `NAME.npy` entries, \
                 as np.savez writes them)"
            )));
        };
        let size = entry.size();
        let t = read_npy(&mut entry, size)
            .map_err(|e| NpzError::Other(format!("entry `{entry_name}`: {e}")))?;
        if out.insert(name.to_string(), t).is_some() {
            return Err(NpzError::Other(format!(
                "entry `{entry_name}` appears twice in the archive"
            )));
        }
    }
    Ok(out)
}

/// Read one `.npy` stream of `size` bytes (the size only bounds allocations).
fn read_npy(r: &mut impl Read, size: u64) -> std::result::Result<HostTensor, String> {
    let mut lead = [0u8; 8];
    read_exact(r, &mut lead, "the magic and version")?;
    if &lead[..6] != b"\x93NUMPY" {
        return Err(format!(
            "not a .npy file (magic {:?}, expected \"\\x93NUMPY\")",
            String::from_utf8_lossy(&lead[..6])
        ));
    }
    let (major, minor) = (lead[6], lead[7]);
    let header_len = match (major, minor) {
        (1, 0) => {
            let mut b = [0u8; 2];
            read_exact(r, &mut b, "the header length")?;
            u16::from_le_bytes(b) as usize
        }
        (2, 0) | (3, 0) => {
            let mut b = [0u8; 4];
            read_exact(r, &mut b, "the header length")?;
            u32::from_le_bytes(b) as usize
        }
        _ => {
            return Err(format!(
                "unsupported .npy format version {major}.{minor} (1.0, 2.0 and 3.0 are read)"
            ))
        }
    };
    let lead_len = if major == 1 { 10 } else { 12 };
    if header_len as u64 > size.saturating_sub(lead_len) {
        return Err(format!(
            "bad .npy header: its length {header_len} runs past the end of the entry ({size} \
             bytes)"
        ));
    }
    let mut header = vec![0u8; header_len];
    read_exact(r, &mut header, "the header")?;
    // Versions 1 and 2 are latin-1, version 3 UTF-8; the keys and values read here are ASCII.
    let header: String = if major == 3 {
        String::from_utf8(header).map_err(|_| "bad .npy header: not UTF-8".to_string())?
    } else {
        header.iter().map(|&b| b as char).collect()
    };
    let h = Header::parse(&header)
        .map_err(|e| format!("bad .npy header {:?}: {e}", header.trim_end()))?;
    let Some(descr) = &h.descr else {
        return Err(
            "unsupported dtype: a structured (record) dtype; save plain numeric arrays".into(),
        );
    };
    let dtype = Dtype::parse(descr)?;
    let numel = h
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| n.checked_mul(dtype.size).is_some())
        .ok_or_else(|| {
            format!(
                "shape {} overflows ({} elements of {} bytes do not fit in memory)",
                shape_str(&h.shape),
                h.shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(" × "),
                dtype.size
            )
        })?;
    let need = numel * dtype.size;
    let mut data = Vec::with_capacity(need.min(size as usize));
    r.take(need as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read the data: {e}"))?;
    if data.len() != need {
        let what = if data.len() < need {
            "truncated"
        } else {
            "trailing bytes"
        };
        let got = if data.len() > need {
            "more".to_string()
        } else {
            data.len().to_string()
        };
        return Err(format!(
            "{what}: dtype {descr} and shape {} need {need} data bytes, the entry holds {got}",
            shape_str(&h.shape),
        ));
    }
    let mut t = dtype.decode(&data, &h.shape)?;
    if h.fortran_order && h.shape.len() > 1 {
        t.data = match t.data {
            HostData::Float(v) => HostData::Float(fortran_to_c(&v, &h.shape)),
            HostData::Half(d, v) => HostData::Half(d, fortran_to_c(&v, &h.shape)),
            HostData::Int(v) => HostData::Int(fortran_to_c(&v, &h.shape)),
        };
    }
    Ok(t)
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &str) -> std::result::Result<(), String> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => format!("truncated .npy file: it ends inside {what}"),
        _ => format!("cannot read {what}: {e}"),
    })
}

/// A shape as NumPy prints it: `()`, `(3,)`, `(3, 4)`.
fn shape_str(shape: &[usize]) -> String {
    match shape {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Column-major values of `shape` in row-major order.
fn fortran_to_c<T: Copy>(v: &[T], shape: &[usize]) -> Vec<T> {
    let n = shape.len();
    // Column-major strides (in elements): the first index varies fastest.
    let mut stride = vec![1usize; n];
    for k in 1..n {
        stride[k] = stride[k - 1] * shape[k - 1];
    }
    let mut out = Vec::with_capacity(v.len());
    if v.is_empty() {
        return out;
    }
    // Walk the row-major multi-index like an odometer, the last index fastest.
    let mut idx = vec![0usize; n];
    let mut off = 0usize;
    loop {
        out.push(v[off]);
        let mut k = n;
        loop {
            if k == 0 {
                return out;
            }
            k -= 1;
            idx[k] += 1;
            off += stride[k];
            if idx[k] < shape[k] {
                break;
            }
            off -= stride[k] * idx[k];
            idx[k] = 0;
        }
    }
}

/// The three keys of a `.npy` header.
#[derive(Debug)]
struct Header {
    /// `None` for a structured dtype (a list of fields), which is not read.
    descr: Option<String>,
    fortran_order: bool,
    shape: Vec<usize>,
}

impl Header {
    fn parse(text: &str) -> std::result::Result<Header, String> {
        let mut p = Lit {
            s: text.as_bytes(),
            i: 0,
        };
        let Value::Dict(entries) = p.value()? else {
            return Err("not a dict".into());
        };
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("unexpected text after the dict at byte {}", p.i));
        }
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        for (k, v) in entries {
            match (k.as_str(), v) {
                ("descr", Value::Str(s)) => descr = Some(Some(s)),
                ("descr", Value::List) => descr = Some(None),
                ("fortran_order", Value::Bool(b)) => fortran = Some(b),
                ("shape", Value::Tuple(dims)) => {
                    shape = Some(
                        dims.into_iter()
                            .map(|d| match d {
                                Value::Int(n) => usize::try_from(n).map_err(|_| {
                                    format!(
                                        "`shape` has dimension {n}, which is negative or too large"
                                    )
                                }),
                                _ => Err("`shape` must be a tuple of integers".to_string()),
                            })
                            .collect::<std::result::Result<Vec<_>, _>>()?,
                    )
                }
                ("descr" | "fortran_order" | "shape", _) => {
                    return Err(format!("`{k}` has the wrong type"))
                }
                _ => return Err(format!("unexpected key `{k}`")),
            }
        }
        match (descr, fortran, shape) {
            (Some(descr), Some(fortran_order), Some(shape)) => Ok(Header {
                descr,
                fortran_order,
                shape,
            }),
            (d, f, _) => Err(format!(
                "missing key `{}`",
                if d.is_none() {
                    "descr"
                } else if f.is_none() {
                    "fortran_order"
                } else {
                    "shape"
                }
            )),
        }
    }
}

/// The Python literals a `.npy` header uses.
enum Value {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<Value>),
    /// A list (only a structured dtype's `descr` is one, and that is refused unread).
    List,
    Dict(Vec<(String, Value)>),
}

/// A parser for Python literals (strings, integers, True/False/None, tuples, lists, dicts).
struct Lit<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lit<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn err<T>(&self, what: &str) -> std::result::Result<T, String> {
        Err(format!("expected {what} at byte {}", self.i))
    }
    fn value(&mut self) -> std::result::Result<Value, String> {
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                let mut entries = Vec::new();
                while !self.eat(b'}') {
                    let Value::Str(k) = self.value()? else {
                        return self.err("a string key");
                    };
                    if !self.eat(b':') {
                        return self.err("`:`");
                    }
                    entries.push((k, self.value()?));
                    if !self.eat(b',') && self.peek() != Some(b'}') {
                        return self.err("`,` or `}`");
                    }
                }
                Ok(Value::Dict(entries))
            }
            Some(open @ (b'(' | b'[')) => {
                self.i += 1;
                let close = if open == b'(' { b')' } else { b']' };
                let mut items = Vec::new();
                while !self.eat(close) {
                    items.push(self.value()?);
                    if !self.eat(b',') && self.peek() != Some(close) {
                        return self.err("`,` or a closing bracket");
                    }
                }
                Ok(if open == b'(' {
                    Value::Tuple(items)
                } else {
                    Value::List
                })
            }
            Some(q @ (b'\'' | b'"')) => {
                self.i += 1;
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i] != q {
                    if self.s[self.i] == b'\\' {
                        return self.err("a string without escapes");
                    }
                    self.i += 1;
                }
                if self.i == self.s.len() {
                    return self.err("the end of a string");
                }
                let v = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 1;
                Ok(Value::Str(v))
            }
            Some(c) if c.is_ascii_digit() || c == b'-' => {
                let start = self.i;
                self.i += 1;
                while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                // Python 2 era files may write `3L`.
                let digits = std::str::from_utf8(&self.s[start..self.i]).expect("ASCII");
                if self.s.get(self.i) == Some(&b'L') {
                    self.i += 1;
                }
                digits
                    .parse()
                    .map(Value::Int)
                    .or_else(|_| self.err("an integer"))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i].is_ascii_alphanumeric() {
                    self.i += 1;
                }
                match &self.s[start..self.i] {
                    b"True" => Ok(Value::Bool(true)),
                    b"False" => Ok(Value::Bool(false)),
                    b"None" => Ok(Value::None),
                    _ => {
                        self.i = start;
                        self.err("a literal")
                    }
                }
            }
            _ => self.err("a value"),
        }
    }
}

/// A supported `descr`.
struct Dtype {
    kind: Kind,
    size: usize,
    big_endian: bool,
}

#[derive(Clone, Copy)]
enum Kind {
    Float,
    Signed,
    Unsigned,
    Bool,
}

impl Dtype {
    fn parse(descr: &str) -> std::result::Result<Dtype, String> {
        let unsupported = |what: &str| {
            Err(format!(
                "unsupported dtype `{descr}` ({what}); use f2/f4/f8, bool or an integer type"
            ))
        };
        let (order, code) = match descr.as_bytes().first() {
            Some(b'<' | b'>' | b'|' | b'=') => descr.split_at(1),
            _ => ("", descr),
        };
        let (kind_char, size) = code.split_at(code.len().min(1));
        let kind = match kind_char {
            "f" => Kind::Float,
            "i" => Kind::Signed,
            "u" => Kind::Unsigned,
            "b" => Kind::Bool,
            "c" => return unsupported("complex"),
            "O" => return unsupported("Python objects"),
            "U" | "S" | "a" => return unsupported("strings"),
            "V" => return unsupported("raw bytes or records"),
            "M" | "m" => return unsupported("datetime or timedelta"),
            _ => return unsupported("not a NumPy dtype this reader knows"),
        };
        let Ok(size) = size.parse::<usize>() else {
            return unsupported("no item size");
        };
        let ok = match kind {
            Kind::Float => matches!(size, 2 | 4 | 8),
            Kind::Signed | Kind::Unsigned => matches!(size, 1 | 2 | 4 | 8),
            Kind::Bool => size == 1,
        };
        if !ok {
            return unsupported(match kind {
                Kind::Float => "only 16, 32 and 64-bit floats are read",
                _ => "no such integer size",
            });
        }
        if order == "|" && size > 1 {
            return Err(format!(
                "bad dtype `{descr}`: a {size}-byte type needs a byte order (`<` or `>`)"
            ));
        }
        Ok(Dtype {
            kind,
            size,
            big_endian: order == ">" || (order == "=" && cfg!(target_endian = "big")),
        })
    }

    fn decode(&self, b: &[u8], shape: &[usize]) -> std::result::Result<HostTensor, String> {
        let be = self.big_endian;
        fn each<const N: usize, T>(b: &[u8], be: bool, f: impl Fn([u8; N]) -> T) -> Vec<T> {
            b.chunks_exact(N)
                .map(|c| {
                    let mut a: [u8; N] = c.try_into().expect("chunks_exact gives N bytes");
                    if be {
                        a.reverse();
                    }
                    f(a)
                })
                .collect()
        }
        let data = match (self.kind, self.size) {
            (Kind::Float, 2) => {
                HostData::Float(each(b, be, |c| half::f16::from_le_bytes(c).to_f32()))
            }
            (Kind::Float, 4) => HostData::Float(each(b, be, f32::from_le_bytes)),
            (Kind::Float, _) => HostData::Float(each(b, be, |c| f64::from_le_bytes(c) as f32)),
            (Kind::Bool, _) => HostData::Int(b.iter().map(|&v| (v != 0) as i64).collect()),
            (Kind::Unsigned, 1) => HostData::Int(b.iter().map(|&v| v as i64).collect()),
            (Kind::Signed, 1) => HostData::Int(b.iter().map(|&v| v as i8 as i64).collect()),
            (Kind::Signed, 2) => HostData::Int(each(b, be, |c| i16::from_le_bytes(c) as i64)),
            (Kind::Unsigned, 2) => HostData::Int(each(b, be, |c| u16::from_le_bytes(c) as i64)),
            (Kind::Signed, 4) => HostData::Int(each(b, be, |c| i32::from_le_bytes(c) as i64)),
            (Kind::Unsigned, 4) => HostData::Int(each(b, be, |c| u32::from_le_bytes(c) as i64)),
            (Kind::Signed, _) => HostData::Int(each(b, be, i64::from_le_bytes)),
            (Kind::Unsigned, _) => {
                let v = each(b, be, u64::from_le_bytes);
                HostData::Int(
                    v.iter()
                        .enumerate()
                        .map(|(i, &x)| {
                            i64::try_from(x).map_err(|_| {
                                format!(
                                    "uint64 value {x} at flat index {i} is above the largest \
                                     int64 ({})",
                                    i64::MAX
                                )
                            })
                        })
                        .collect::<std::result::Result<_, _>>()?,
                )
            }
        };
        Ok(HostTensor {
            shape: shape.to_vec(),
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fortran_reorder_any_rank() {
        // A 2×3 matrix [[0,1,2],[3,4,5]] stored column-major is 0,3,1,4,2,5.
        assert_eq!(
            fortran_to_c(&[0, 3, 1, 4, 2, 5], &[2, 3]),
            vec![0, 1, 2, 3, 4, 5]
        );
        // 2×3×4: C index (i,j,k) = 12i+4j+k, F offset = i + 2j + 6k.
        let shape = [2, 3, 4];
        let mut f = vec![0usize; 24];
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    f[i + 2 * j + 6 * k] = 12 * i + 4 * j + k;
                }
            }
        }
        assert_eq!(fortran_to_c(&f, &shape), (0..24).collect::<Vec<_>>());
        assert!(fortran_to_c::<u8>(&[], &[0, 3]).is_empty());
    }

    #[test]
    fn header_literals() {
        let h = Header::parse("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }  \n")
            .unwrap();
        assert_eq!(
            (h.descr.as_deref(), h.fortran_order, h.shape),
            (Some("<f4"), false, vec![3, 4])
        );
        let h = Header::parse("{\"descr\":\"|u1\",\"fortran_order\":True,\"shape\":()}").unwrap();
        assert!(h.fortran_order && h.shape.is_empty());
        assert!(Header::parse("{'descr': '<f4', 'shape': (3,)}")
            .unwrap_err()
            .contains("fortran_order"));
        assert!(
            Header::parse("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}")
                .unwrap_err()
                .contains("negative")
        );
        let h = Header::parse("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}");
        assert!(h.unwrap().descr.is_none(), "a structured dtype");
    }
}
