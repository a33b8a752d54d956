//! Datasets from files: `.npz` archives (stored and deflated, hand-made `.npy` entries of
//! every supported dtype, Fortran order, big endian, format versions 1–3) and safetensors,
//! read through `bella::io::read_named` and validated by `Dataset`; every error is checked by
//! its message. Files written by NumPy and the `safetensors` package load to the same values
//! (skipped with a notice without python3 + numpy + safetensors, unless `BELLA_REQUIRE`
//! contains `numpy`).

use bella::io::{npz, read_named, safetensors};
use bella::ops::named::{HostData, HostTensor, Named};
use bella::train::dataset::{load_inputs, Dataset};
use bella::train::split::Split;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

// ---------------------------------------------------------------- helpers

/// A `.npy` file: format `version` (1, 2 or 3), the header dict, then `data`.
fn npy_v(version: u8, descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape = match shape {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let fortran = if fortran { "True" } else { "False" };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
    npy_raw(version, &dict, data)
}

/// A `.npy` file with an arbitrary header text (padded to 64 bytes like NumPy does).
fn npy_raw(version: u8, dict: &str, data: &[u8]) -> Vec<u8> {
    let lead = if version == 1 { 10 } else { 12 };
    let mut header = dict.to_string();
    while !(lead + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    npy_v(1, descr, false, shape, data)
}

/// A zip archive of `entries` (name, bytes), stored or deflated.
fn zip_bytes(entries: &[(&str, Vec<u8>)], deflated: bool) -> Vec<u8> {
    let method = if deflated {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// An `.npz` of (tensor name, npy bytes).
fn npz_bytes(tensors: &[(&str, Vec<u8>)], deflated: bool) -> Vec<u8> {
    let entries: Vec<(String, Vec<u8>)> = tensors
        .iter()
        .map(|(n, b)| (format!("{n}.npy"), b.clone()))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    zip_bytes(&refs, deflated)
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn i64s(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("bella-dataset-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
    fn safetensors(&self, name: &str, tensors: &[(&str, HostTensor)]) -> PathBuf {
        let p = self.0.join(name);
        let ts: Vec<(String, HostTensor)> = tensors
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        safetensors::write(&p, &ts).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// The message of an npz parse error.
fn npz_err(bytes: &[u8]) -> String {
    match npz::parse(bytes) {
        Ok(t) => panic!("expected an error, parsed {t:?}"),
        Err(e) => e,
    }
}

/// The message of a dataset error.
fn ds_err(named: &Named) -> String {
    match Dataset::from_named(named) {
        Ok(d) => panic!("expected an error, got {d:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_has(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
    }
    assert!(!msg.contains('\n'), "message {msg:?} is not one line");
}

/// A small valid dataset: train 4×3, test 2×3, shifted 3×3, ood 2×3.
fn good() -> Named {
    let x = |n: usize, k: f32| {
        HostTensor::float(&[n, 3], (0..n * 3).map(|i| i as f32 * 0.5 - k).collect())
    };
    let mut m = Named::new();
    m.insert("train.x".into(), x(4, 1.0));
    m.insert("train.y".into(), HostTensor::int(&[4], vec![0, 1, 2, 1]));
    m.insert("test.x".into(), x(2, 2.0));
    m.insert("test.y".into(), HostTensor::int(&[2], vec![2, 0]));
    m.insert("shifted.x".into(), x(3, 3.0));
    m.insert("shifted.y".into(), HostTensor::int(&[3], vec![1, 1, 0]));
    m.insert("ood.x".into(), x(2, 4.0));
    m
}

fn with(mut m: Named, name: &str, t: HostTensor) -> Named {
    m.insert(name.into(), t);
    m
}

fn without(mut m: Named, name: &str) -> Named {
    m.remove(name);
    m
}

// ---------------------------------------------------------------- npy dtypes and layouts

/// Each supported descr, little and big endian, stored and deflated, to the expected values.
#[test]
fn every_dtype_both_byte_orders() {
    type Enc = fn(f64, bool) -> Vec<u8>;
    fn enc<const N: usize>(le: [u8; N], big: bool) -> Vec<u8> {
        let mut b = le.to_vec();
        if big {
            b.reverse();
        }
        b
    }
    let cases: &[(&str, Enc, &[f64], bool)] = &[
        (
            "f2",
            |v, b| enc(half::f16::from_f64(v).to_le_bytes(), b),
            &[1.5, -2.25, 65504.0, 0.0],
            true,
        ),
        (
            "f4",
            |v, b| enc((v as f32).to_le_bytes(), b),
            &[1.5, -2.25, 3.0e38, 1e-3],
            true,
        ),
        (
            "f8",
            |v, b| enc(v.to_le_bytes(), b),
            &[1.5, -2.25, 1e30, -1e-7],
            true,
        ),
        (
            "i1",
            |v, _| vec![v as i8 as u8],
            &[-128.0, 127.0, 0.0, -1.0],
            false,
        ),
        ("u1", |v, _| vec![v as u8], &[0.0, 255.0, 7.0, 128.0], false),
        ("b1", |v, _| vec![v as u8], &[0.0, 1.0, 1.0, 0.0], false),
        (
            "i2",
            |v, b| enc((v as i16).to_le_bytes(), b),
            &[-32768.0, 32767.0, -1.0, 5.0],
            true,
        ),
        (
            "u2",
            |v, b| enc((v as u16).to_le_bytes(), b),
            &[0.0, 65535.0, 256.0, 1.0],
            true,
        ),
        (
            "i4",
            |v, b| enc((v as i32).to_le_bytes(), b),
            &[-2147483648.0, 2147483647.0, -7.0, 9.0],
            true,
        ),
        (
            "u4",
            |v, b| enc((v as u32).to_le_bytes(), b),
            &[0.0, 4294967295.0, 65536.0, 3.0],
            true,
        ),
        (
            "i8",
            |v, b| enc((v as i64).to_le_bytes(), b),
            &[-9.0e15, 9.0e15, -1.0, 0.0],
            true,
        ),
        (
            "u8",
            |v, b| enc((v as u64).to_le_bytes(), b),
            &[0.0, 9.0e15, 1.0, 2.0],
            true,
        ),
    ];
    for &(code, encode, values, multibyte) in cases {
        let orders: &[(&str, bool)] = if multibyte {
            &[("<", false), (">", true)]
        } else {
            &[("|", false)]
        };
        for &(order, big) in orders {
            let descr = format!("{order}{code}");
            let data: Vec<u8> = values.iter().flat_map(|&v| encode(v, big)).collect();
            for deflated in [false, true] {
                let bytes = npz_bytes(&[("t", npy(&descr, &[2, 2], &data))], deflated);
                let named = npz::parse(&bytes).unwrap_or_else(|e| panic!("{descr}: {e}"));
                let t = &named["t"];
                assert_eq!(t.shape, vec![2, 2], "{descr}");
                match (&t.data, code.starts_with('f')) {
                    (HostData::Float(v), true) => {
                        let want: Vec<f32> = values.iter().map(|&x| x as f32).collect();
                        assert_eq!(v, &want, "{descr} deflated={deflated}");
                    }
                    (HostData::Int(v), false) => {
                        let want: Vec<i64> = values.iter().map(|&x| x as i64).collect();
                        assert_eq!(v, &want, "{descr} deflated={deflated}");
                    }
                    (d, _) => panic!("{descr}: wrong kind {d:?}"),
                }
            }
        }
    }
    // The full uint64 range up to i64::MAX, and int64's extremes.
    let big = npz_bytes(
        &[
            ("u", npy("<u8", &[1], &(i64::MAX as u64).to_le_bytes())),
            ("i", npy("<i8", &[2], &i64s(&[i64::MIN, i64::MAX]))),
        ],
        false,
    );
    let named = npz::parse(&big).unwrap();
    assert_eq!(named["u"].data, HostData::Int(vec![i64::MAX]));
    assert_eq!(named["i"].data, HostData::Int(vec![i64::MIN, i64::MAX]));
}

#[test]
fn shapes_versions_and_fortran_order() {
    // 0-d, 1-d, 3-d, and an empty dimension.
    let scalar = npy("<f4", &[], &f32s(&[2.5]));
    let vector = npy("<i8", &[3], &i64s(&[4, 5, 6]));
    let cube = npy("<f4", &[2, 1, 3], &f32s(&[0., 1., 2., 3., 4., 5.]));
    let empty = npy("<f4", &[0, 3], &[]);
    let named = npz::parse(&npz_bytes(
        &[("s", scalar), ("v", vector), ("c", cube), ("e", empty)],
        true,
    ))
    .unwrap();
    assert_eq!(named["s"], HostTensor::float(&[], vec![2.5]));
    assert_eq!(named["v"], HostTensor::int(&[3], vec![4, 5, 6]));
    assert_eq!(
        named["c"],
        HostTensor::float(&[2, 1, 3], vec![0., 1., 2., 3., 4., 5.])
    );
    assert_eq!(named["e"], HostTensor::float(&[0, 3], vec![]));

    // Format versions 2.0 and 3.0 (4-byte header length).
    for v in [2, 3] {
        let b = npz_bytes(
            &[("a", npy_v(v, "<f4", false, &[2], &f32s(&[1., 2.])))],
            false,
        );
        assert_eq!(
            npz::parse(&b).unwrap()["a"],
            HostTensor::float(&[2], vec![1., 2.])
        );
    }

    // Fortran order: [[0,1,2],[3,4,5]] stored column-major; a 2×3×4 int tensor; big endian.
    let f2 = npy_v(1, "<f4", true, &[2, 3], &f32s(&[0., 3., 1., 4., 2., 5.]));
    let mut col = vec![0i64; 24];
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                col[i + 2 * j + 6 * k] = (12 * i + 4 * j + k) as i64;
            }
        }
    }
    let f3 = npy_v(1, "<i8", true, &[2, 3, 4], &i64s(&col));
    let be: Vec<u8> = [0f32, 3., 1., 4., 2., 5.]
        .iter()
        .flat_map(|x| x.to_be_bytes())
        .collect();
    let fbe = npy_v(1, ">f4", true, &[2, 3], &be);
    let f1 = npy_v(1, "<f4", true, &[3], &f32s(&[7., 8., 9.]));
    let named = npz::parse(&npz_bytes(
        &[("f2", f2), ("f3", f3), ("fbe", fbe), ("f1", f1)],
        false,
    ))
    .unwrap();
    let rows = HostTensor::float(&[2, 3], vec![0., 1., 2., 3., 4., 5.]);
    assert_eq!(named["f2"], rows);
    assert_eq!(named["fbe"], rows);
    assert_eq!(named["f3"], HostTensor::int(&[2, 3, 4], (0..24).collect()));
    assert_eq!(named["f1"], HostTensor::float(&[3], vec![7., 8., 9.]));

    // A single .npy also parses on its own.
    let t = npz::parse_npy(&npy("<u2", &[2], &[1, 0, 2, 0])).unwrap();
    assert_eq!(t, HostTensor::int(&[2], vec![1, 2]));
}

// ---------------------------------------------------------------- npz errors

#[test]
fn npz_errors_name_the_entry() {
    let ok = || npy("<f4", &[1], &f32s(&[1.0]));

    assert_has(
        &npz_err(b"definitely not a zip file"),
        &["not a .npz file (no zip archive)"],
    );
    assert_has(
        &npz_err(&zip_bytes(
            &[("train.x.npy", ok()), ("readme.txt", b"hi".to_vec())],
            false,
        )),
        &["`readme.txt`", "not a .npy file"],
    );

    let entry = |bytes: Vec<u8>| npz_err(&npz_bytes(&[("train.x", bytes)], false));
    // Magic, version, header length.
    let mut bad_magic = ok();
    bad_magic[1] = b'X';
    assert_has(&entry(bad_magic), &["`train.x.npy`", "magic"]);
    let mut bad_version = ok();
    bad_version[6] = 4;
    assert_has(&entry(bad_version), &["`train.x.npy`", "version 4.0"]);
    assert_has(
        &entry(b"\x93NUMPY\x01".to_vec()),
        &["`train.x.npy`", "truncated"],
    );
    let mut long_header = ok();
    long_header[8] = 0xff;
    long_header[9] = 0xff;
    assert_has(&entry(long_header), &["`train.x.npy`", "runs past the end"]);
    // Header dicts that do not parse or lack keys.
    for (dict, needle) in [
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)",
            "expected",
        ),
        (
            "{'descr': '<f4', 'shape': (1,), }",
            "missing key `fortran_order`",
        ),
        (
            "{'fortran_order': False, 'shape': (1,), }",
            "missing key `descr`",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, }",
            "missing key `shape`",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
            "unexpected key `x`",
        ),
        (
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }",
            "`fortran_order` has the wrong type",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }",
            "negative",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': ('a',), }",
            "tuple of integers",
        ),
        ("[1, 2]", "not a dict"),
    ] {
        assert_has(
            &entry(npy_raw(1, dict, &f32s(&[1.0]))),
            &["`train.x.npy`", "bad .npy header", needle],
        );
    }
    // Unsupported dtypes, each named.
    for (descr, what) in [
        ("|O", "Python objects"),
        ("<c8", "complex"),
        ("<c16", "complex"),
        ("<U5", "strings"),
        ("|S3", "strings"),
        ("|V8", "raw bytes"),
        ("<M8[ns]", "datetime"),
        ("<f16", "64-bit floats"),
        ("<i3", "integer size"),
        ("<u16", "integer size"),
        ("<f2x", "no item size"),
        ("|i4", "byte order"),
    ] {
        assert_has(
            &entry(npy(descr, &[1], &[0; 16])),
            &["`train.x.npy`", &format!("`{descr}`"), what],
        );
    }
    assert_has(
        &entry(npy_raw(
            1,
            "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (1,), }",
            &[0; 8],
        )),
        &["`train.x.npy`", "structured"],
    );
    // Data not matching the shape, either way; a shape too large for memory.
    assert_has(
        &entry(npy("<f4", &[3, 4], &[0; 40])),
        &[
            "`train.x.npy`",
            "truncated",
            "(3, 4)",
            "need 48",
            "holds 40",
        ],
    );
    assert_has(
        &entry(npy("<f4", &[2], &[0; 12])),
        &["`train.x.npy`", "trailing bytes", "(2,)"],
    );
    let huge = usize::MAX / 2 + 1;
    assert_has(
        &entry(npy_raw(
            1,
            &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({huge}, 4), }}"),
            &[],
        )),
        &["`train.x.npy`", "overflows"],
    );
    assert_has(
        &entry(npy_raw(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }",
            &[],
        )),
        &["`train.x.npy`", "too large"],
    );
    // uint64 beyond int64.
    let mut u = (i64::MAX as u64).to_le_bytes().to_vec();
    u.extend_from_slice(&u64::MAX.to_le_bytes());
    assert_has(
        &entry(npy("<u8", &[2], &u)),
        &["`train.x.npy`", "18446744073709551615", "index 1", "int64"],
    );
    // Deflated entries report the same.
    let deflated = npz_err(&npz_bytes(&[("y", npy("<f4", &[3], &[0; 8]))], true));
    assert_has(&deflated, &["`y.npy`", "truncated"]);
}

#[test]
fn files_by_content_with_the_path_in_errors() {
    let dir = TempDir::new("files");
    let tensors = [
        ("a", HostTensor::float(&[2, 2], vec![1., 2., 3., 4.])),
        ("b", HostTensor::int(&[3], vec![7, -1, 0])),
    ];
    let st = dir.safetensors("t.safetensors", &tensors);
    let npz_path = dir.write(
        "t.npz",
        &npz_bytes(
            &[
                ("a", npy("<f4", &[2, 2], &f32s(&[1., 2., 3., 4.]))),
                ("b", npy("<i8", &[3], &i64s(&[7, -1, 0]))),
            ],
            true,
        ),
    );
    // The extension does not decide: a .npz named .safetensors is still read.
    let disguised = dir.write("npz.safetensors", &std::fs::read(&npz_path).unwrap());
    let want: Named = tensors
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    for p in [&st, &npz_path, &disguised] {
        assert_eq!(read_named(p).unwrap(), want, "{}", p.display());
    }
    assert_eq!(npz::read(&npz_path).unwrap(), want);
    // An empty archive (np.savez with no arrays) has no tensors.
    let empty = dir.write("empty.npz", &zip_bytes(&[], false));
    assert!(read_named(&empty).unwrap().is_empty());

    let missing = dir.0.join("nope.npz");
    assert_has(
        &read_named(&missing).unwrap_err().to_string(),
        &["cannot open", "nope.npz"],
    );
    let garbage = dir.write("garbage.npz", b"hello world, no archive here");
    let e = npz::read(&garbage).unwrap_err().to_string();
    assert_has(&e, &["garbage.npz is not a .npz file (no zip archive)"]);
    // Named .npz: said so, not a safetensors parse error.
    let e = read_named(&garbage).unwrap_err().to_string();
    assert_has(&e, &["garbage.npz is not a .npz file (no zip archive"]);
    // Any other name: read as safetensors.
    let other = dir.write("garbage.bin", b"hello world, no archive here");
    let e = read_named(&other).unwrap_err().to_string();
    assert_has(&e, &["garbage.bin", "safetensors"]);
    let zero = dir.write("zero.npz", b"");
    assert_has(
        &npz::read(&zero).unwrap_err().to_string(),
        &["zero.npz is not a .npz file", "empty"],
    );
    let bad = dir.write(
        "bad.npz",
        &npz_bytes(&[("train.x", npy("|O", &[1], &[0; 8]))], false),
    );
    assert_has(
        &read_named(&bad).unwrap_err().to_string(),
        &["bad.npz", "`train.x.npy`", "`|O`", "Python objects"],
    );
    // A lone .npy has no tensor names.
    let lone = dir.write("x.npy", &npy("<f4", &[1], &f32s(&[1.0])));
    assert_has(
        &read_named(&lone).unwrap_err().to_string(),
        &["x.npy is a single .npy array", "np.savez"],
    );
    // A truncated archive (cut in the middle) is not a zip any more.
    let bytes = std::fs::read(&npz_path).unwrap();
    let cut = dir.write("cut.npz", &bytes[..bytes.len() / 2]);
    assert_has(
        &read_named(&cut).unwrap_err().to_string(),
        &["cut.npz", "damaged zip archive"],
    );
}

// ---------------------------------------------------------------- datasets

#[test]
fn a_full_dataset_from_either_format() {
    let dir = TempDir::new("full");
    let m = good();
    let ds = Dataset::from_named(&m).unwrap();
    assert_eq!(ds.features(), 3);
    assert_eq!(
        ds.splits().map(|(n, s)| (n, s.len())).collect::<Vec<_>>(),
        vec![("train", 4), ("test", 2), ("shifted", 3), ("ood", 2)]
    );
    assert_eq!(ds.train.y, vec![0, 1, 2, 1]);
    assert_eq!(ds.train.row(1), &[1.5 - 1.0, 2.0 - 1.0, 2.5 - 1.0]);
    let ood = ds.ood.as_ref().unwrap();
    assert!(ood.y.is_empty() && !ood.is_labeled());
    assert!(ds.test.as_ref().unwrap().is_labeled());

    // The same data as safetensors, as npz (f64 x, int32/uint8 y), stored and deflated.
    let st = dir.safetensors(
        "d.safetensors",
        &m.iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect::<Vec<_>>(),
    );
    // Floats as f64; labels as int64, big-endian int32 and uint8.
    let npy_of = |name: &str, t: &HostTensor| match (&t.data, name) {
        (HostData::Float(_) | HostData::Half(..), _) => {
            let b: Vec<u8> = t
                .to_f32()
                .iter()
                .flat_map(|&x| (x as f64).to_le_bytes())
                .collect();
            npy("<f8", &t.shape, &b)
        }
        (HostData::Int(v), "train.y") => npy("<i8", &t.shape, &i64s(v)),
        (HostData::Int(v), "test.y") => {
            let b: Vec<u8> = v.iter().flat_map(|&x| (x as i32).to_be_bytes()).collect();
            npy(">i4", &t.shape, &b)
        }
        (HostData::Int(v), _) => npy(
            "|u1",
            &t.shape,
            &v.iter().map(|&x| x as u8).collect::<Vec<_>>(),
        ),
    };
    let entries: Vec<(&str, Vec<u8>)> = m.iter().map(|(n, t)| (n.as_str(), npy_of(n, t))).collect();
    for (file, deflated) in [("s.npz", false), ("d.npz", true)] {
        let p = dir.write(file, &npz_bytes(&entries, deflated));
        let got = Dataset::load(&p).unwrap();
        assert_eq!(got, ds, "{file}");
        assert_eq!(got.fingerprint(), ds.fingerprint(), "{file}");
    }
    assert_eq!(Dataset::load(&st).unwrap(), ds);

    // Optional splits are optional; the fingerprint sees every value, name and shape.
    let minimal = Dataset::from_named(&without(
        without(
            without(without(without(m.clone(), "test.x"), "test.y"), "shifted.x"),
            "shifted.y",
        ),
        "ood.x",
    ))
    .unwrap();
    assert_eq!(minimal.splits().count(), 1);
    assert!(minimal.test.is_none() && minimal.ood.is_none());
    let fp = ds.fingerprint();
    assert_eq!(fp.len(), 16);
    assert_ne!(minimal.fingerprint(), fp);
    let mut changed = ds.clone();
    changed.train.x[5] += 1e-6;
    assert_ne!(changed.fingerprint(), fp);
    let mut relabeled = ds.clone();
    relabeled.test.as_mut().unwrap().y[0] = 1;
    assert_ne!(relabeled.fingerprint(), fp);
    let mut reshaped = ds.clone();
    reshaped.train.features = 6; // same values, 2 rows of 6
    assert_ne!(reshaped.fingerprint(), fp);
    let mut moved = ds.clone();
    moved.shifted = moved.test.take();
    assert_ne!(moved.fingerprint(), fp);
}

#[test]
fn every_dataset_error_names_the_tensor() {
    let g = good();
    let fx = |shape: &[usize]| HostTensor::float(shape, vec![0.5; shape.iter().product()]);
    let iy = |n: usize| HostTensor::int(&[n], vec![0; n]);

    // Missing required tensors.
    assert_has(
        &ds_err(&without(g.clone(), "train.x")),
        &["missing", "`train.x`"],
    );
    assert_has(
        &ds_err(&without(g.clone(), "train.y")),
        &["missing", "`train.y`"],
    );
    assert_has(&ds_err(&Named::new()), &["missing", "`train.x`"]);
    // Unknown names: the accepted list, and the intended name for a typo.
    for (typo, meant) in [
        ("train.X", "`train.x`"),
        ("test_x", "`test.x`"),
        ("TEST.Y", "`test.y`"),
        ("shifted/y", "`shifted.y`"),
        ("trian.x", "`train.x`"),
    ] {
        let e = ds_err(&with(g.clone(), typo, fx(&[4, 3])));
        assert_has(
            &e,
            &[
                &format!("unknown tensor `{typo}`"),
                &format!("did you mean {meant}?"),
                "`train.x`, `train.y`, `test.x`, `test.y`, `shifted.x`, `shifted.y`, `ood.x`",
            ],
        );
    }
    let e = ds_err(&with(with(g.clone(), "weights", fx(&[1])), "zz", fx(&[1])));
    assert_has(&e, &["unknown tensor `weights`", "(and 1 more)"]);
    assert!(!e.contains("did you mean"), "{e}");
    assert_has(
        &ds_err(&with(g.clone(), "ood.y", iy(2))),
        &["unknown tensor `ood.y`", "unlabeled"],
    );
    // Half a pair.
    assert_has(
        &ds_err(&without(g.clone(), "test.y")),
        &["`test.x` has no labels", "`test.y"],
    );
    assert_has(
        &ds_err(&without(g.clone(), "shifted.x")),
        &["`shifted.y` has no inputs", "`shifted.x [N, I]`"],
    );
    // Ranks and emptiness.
    for (name, shape, needle) in [
        ("train.x", &[12][..], "[12]"),
        ("test.x", &[2, 3, 1][..], "[2, 3, 1]"),
        ("ood.x", &[][..], "[]"),
    ] {
        assert_has(
            &ds_err(&with(g.clone(), name, fx(shape))),
            &[&format!("`{name}`"), needle, "[N, I]"],
        );
    }
    assert_has(
        &ds_err(&with(
            with(g.clone(), "train.x", fx(&[0, 3])),
            "train.y",
            iy(0),
        )),
        &["`train.x`", "[0, 3]", "no rows"],
    );
    assert_has(
        &ds_err(&with(g.clone(), "ood.x", fx(&[2, 0]))),
        &["`ood.x`", "[2, 0]", "no features"],
    );
    assert_has(
        &ds_err(&with(
            g.clone(),
            "train.y",
            HostTensor::int(&[4, 1], vec![0; 4]),
        )),
        &["`train.y`", "[4, 1]", "[N] = [4]"],
    );
    assert_has(
        &ds_err(&with(g.clone(), "test.y", iy(3))),
        &["`test.y` has 3 labels", "`test.x` has 2 rows"],
    );
    // Dtypes.
    assert_has(
        &ds_err(&with(
            g.clone(),
            "train.x",
            HostTensor::int(&[4, 3], vec![1; 12]),
        )),
        &["`train.x`", "integer dtype", "floats"],
    );
    assert_has(
        &ds_err(&with(g.clone(), "shifted.y", fx(&[3]))),
        &["`shifted.y`", "float dtype", "integers"],
    );
    // Label values.
    assert_has(
        &ds_err(&with(
            g.clone(),
            "test.y",
            HostTensor::int(&[2], vec![0, -3]),
        )),
        &["`test.y` holds label -3 at row 1", "≥ 0"],
    );
    assert_has(
        &ds_err(&with(
            g.clone(),
            "train.y",
            HostTensor::int(&[4], vec![0, 0, 1 << 40, 0]),
        )),
        &["`train.y` holds label 1099511627776 at row 2"],
    );
    // Non-finite inputs, with split, row and column.
    for (name, bad, needle) in [
        ("train.x", f32::NAN, "NaN"),
        ("shifted.x", f32::INFINITY, "inf"),
        ("ood.x", f32::NEG_INFINITY, "-inf"),
    ] {
        let mut t = g[name].clone();
        let HostData::Float(v) = &mut t.data else {
            unreachable!()
        };
        v[5] = bad; // row 1, column 2
        let e = Dataset::from_named(&with(g.clone(), name, t)).unwrap_err();
        assert!(matches!(e, bella::BellaError::NonFinite(_)), "{e:?}");
        assert_has(
            &e.to_string(),
            &[&format!("`{name}`"), needle, "row 1, column 2"],
        );
    }
    // Widths differing between splits.
    let e = ds_err(&with(
        with(g.clone(), "test.x", fx(&[2, 5])),
        "test.y",
        iy(2),
    ));
    assert_has(&e, &["`test.x` has 5 features per row", "`train.x` has 3"]);
    assert_has(
        &ds_err(&with(g.clone(), "ood.x", fx(&[2, 4]))),
        &["`ood.x` has 4 features per row"],
    );
}

#[test]
fn load_errors_start_with_the_path() {
    let dir = TempDir::new("paths");
    let bad = without(good(), "train.y");
    let p = dir.safetensors(
        "nolabels.safetensors",
        &bad.iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect::<Vec<_>>(),
    );
    let e = Dataset::load(&p).unwrap_err().to_string();
    assert!(e.starts_with(&p.display().to_string()), "{e}");
    assert_has(&e, &["`train.y`"]);
    let typo = dir.write(
        "typo.npz",
        &npz_bytes(
            &[
                ("train.X", npy("<f4", &[1, 1], &f32s(&[1.0]))),
                ("train.y", npy("<i8", &[1], &i64s(&[0]))),
            ],
            false,
        ),
    );
    let e = Dataset::load(&typo).unwrap_err().to_string();
    assert!(e.starts_with(&typo.display().to_string()), "{e}");
    assert_has(&e, &["`train.X`", "did you mean `train.x`?"]);
    let nan = with(
        good(),
        "test.x",
        HostTensor::float(&[2, 3], vec![0., 0., 0., 0., f32::NAN, 0.]),
    );
    let p = dir.safetensors(
        "nan.safetensors",
        &nan.iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect::<Vec<_>>(),
    );
    let e = Dataset::load(&p).unwrap_err().to_string();
    assert_has(
        &e,
        &[&p.display().to_string(), "`test.x`", "row 1, column 1"],
    );
    let e = Dataset::load(&dir.0.join("absent.npz"))
        .unwrap_err()
        .to_string();
    assert_has(&e, &["absent.npz"]);
}

#[test]
fn check_model_widths_and_labels() {
    let ds = Dataset::from_named(&good()).unwrap();
    ds.check_model(3, 3).unwrap();
    ds.check_model(3, 10).unwrap(); // classes missing from the data are fine
    assert_has(
        &ds.check_model(64, 3).unwrap_err().to_string(),
        &["the data has 3 features per row, the model takes 64 inputs"],
    );
    assert_has(
        &ds.check_model(3, 2).unwrap_err().to_string(),
        &["`train.y` holds label 2 at row 2; the model has 2 outputs (labels 0..1)"],
    );
    let mut late = good();
    late.insert("shifted.y".into(), HostTensor::int(&[3], vec![0, 0, 9]));
    let ds = Dataset::from_named(&late).unwrap();
    assert_has(
        &ds.check_model(3, 8).unwrap_err().to_string(),
        &["`shifted.y` holds label 9 at row 2; the model has 8 outputs (labels 0..7)"],
    );
    assert_has(
        &ds.check_model(3, 1).unwrap_err().to_string(),
        &["`train.y` holds label 1 at row 1; the model has 1 output (label 0)"],
    );
}

#[test]
fn inputs_files_for_predict() {
    let dir = TempDir::new("inputs");
    let x = HostTensor::float(&[2, 3], vec![1., 2., 3., 4., 5., 6.]);
    let p = dir.safetensors("x.safetensors", &[("x", x.clone())]);
    let s = load_inputs(&p, "x").unwrap();
    assert_eq!(
        s,
        Split {
            features: 3,
            x: vec![1., 2., 3., 4., 5., 6.],
            y: vec![]
        }
    );
    let p = dir.write(
        "x.npz",
        &npz_bytes(
            &[(
                "x",
                npy_v(1, "<f4", true, &[2, 3], &f32s(&[1., 4., 2., 5., 3., 6.])),
            )],
            true,
        ),
    );
    assert_eq!(load_inputs(&p, "x").unwrap(), s);

    let p = dir.safetensors(
        "extra.safetensors",
        &[
            ("x", x.clone()),
            ("train.y", HostTensor::int(&[2], vec![0, 1])),
            ("z", x.clone()),
        ],
    );
    let e = load_inputs(&p, "x").unwrap_err().to_string();
    assert_has(
        &e,
        &[
            &p.display().to_string(),
            "unexpected tensors `train.y`, `z`",
            "`x [N, I]`",
        ],
    );
    let p = dir.safetensors("other.safetensors", &[("train.x", x.clone())]);
    assert_has(
        &load_inputs(&p, "x").unwrap_err().to_string(),
        &["unexpected tensor `train.x`"],
    );
    let p = dir.write("empty.npz", &zip_bytes(&[], false));
    assert_has(
        &load_inputs(&p, "x").unwrap_err().to_string(),
        &["empty.npz", "missing", "`x`"],
    );
    let p = dir.safetensors(
        "ints.safetensors",
        &[("x", HostTensor::int(&[1, 2], vec![1, 2]))],
    );
    assert_has(
        &load_inputs(&p, "x").unwrap_err().to_string(),
        &["`x`", "integer dtype"],
    );
    let p = dir.safetensors(
        "flat.safetensors",
        &[("x", HostTensor::float(&[3], vec![1., 2., 3.]))],
    );
    assert_has(
        &load_inputs(&p, "x").unwrap_err().to_string(),
        &["`x`", "[3]", "[N, I]"],
    );
}

// ---------------------------------------------------------------- files written by Python

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python_dataset/write_datasets.py"
);

/// The values write_datasets.py writes for split number `k` with `rows` rows.
fn expected_split(k: usize, rows: usize, labeled: bool) -> Split {
    let mut s = Split::new(3);
    for i in 0..rows {
        for j in 0..3 {
            s.x.push(((7 * i + 3 * j + k) % 11) as f32 / 4.0 - 1.0);
        }
        if labeled {
            s.y.push(((5 * i + k) % 4) as u32);
        }
    }
    s
}

#[test]
fn python_written_datasets_load_to_the_same_values() {
    if !bella::testing::python_with("numpy, safetensors", "numpy", "the Python dataset test") {
        return;
    }
    let dir = TempDir::new("python");
    let o = Command::new(bella::testing::python())
        .arg(SCRIPT)
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "write_datasets.py failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let want = Dataset {
        train: expected_split(0, 6, true),
        test: Some(expected_split(1, 4, true)),
        shifted: Some(expected_split(2, 2, true)),
        ood: Some(expected_split(3, 5, false)),
    };
    for file in ["savez.npz", "savez_compressed.npz", "data.safetensors"] {
        let ds = Dataset::load(&dir.0.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(ds, want, "{file}");
        assert_eq!(ds.fingerprint(), want.fingerprint(), "{file}");
        ds.check_model(3, 4).unwrap();
    }
    assert_eq!(
        load_inputs(&dir.0.join("inputs.npz"), "x").unwrap(),
        Split {
            y: vec![],
            ..expected_split(1, 4, true)
        }
    );
}
