//! The C ABI from outside: `include/bella.h` declares exactly the library's exported
//! `bella_*` symbols; a C program compiled with the system `cc` against the header and
//! `libbella_capi.so` runs `lora_forward`, an SVGD step and bf16 tensors (bits, cast, a bf16
//! matmul) on cpu and ptx-sim and checks
//! them (`tests/c/check.c`); the README's Python `ctypes` example runs as written.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put `libbella_capi.so` for this test run: `cargo test` leaves it in `deps/`
/// beside the test binary; `cargo build` copies it up into the profile directory.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    let up = deps.parent().unwrap().to_path_buf();
    let found = [&deps, &up]
        .into_iter()
        .find(|d| d.join("libbella_capi.so").exists())
        .cloned();
    found.unwrap_or_else(|| panic!("no libbella_capi.so in {} or above", deps.display()))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// Function names declared in the header: `name(` after a return type, at a line start.
fn header_functions() -> BTreeSet<String> {
    let h = std::fs::read_to_string(crate_dir().join("include/bella.h")).unwrap();
    let mut names = BTreeSet::new();
    for line in h.lines() {
        let line = line.trim_start();
        if line.starts_with('#') || line.starts_with("/*") || line.starts_with('*') {
            continue;
        }
        if let Some(at) = line.find("bella_") {
            let rest = &line[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if rest[end..].starts_with('(') {
                names.insert(rest[..end].to_string());
            }
        }
    }
    names
}

#[test]
fn header_declares_exactly_the_exported_symbols() {
    let lib = lib_dir().join("libbella_capi.so");
    let nm = run(Command::new("nm").args(["-D", "--defined-only"]).arg(&lib));
    let exported: BTreeSet<String> = nm
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| s.starts_with("bella_"))
        .map(str::to_string)
        .collect();
    let declared = header_functions();
    assert!(
        declared.len() >= 25,
        "only {} functions parsed",
        declared.len()
    );
    assert_eq!(
        declared,
        exported,
        "declared but not exported: {:?}; exported but not declared: {:?}",
        declared.difference(&exported).collect::<Vec<_>>(),
        exported.difference(&declared).collect::<Vec<_>>()
    );
}

fn compile_check(out: &Path) {
    let dir = crate_dir();
    let libs = lib_dir();
    run(Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1"])
        .arg("-I")
        .arg(dir.join("include"))
        .arg(dir.join("tests/c/check.c"))
        .arg("-L")
        .arg(&libs)
        .arg(format!("-Wl,-rpath,{}", libs.display()))
        .args(["-lbella_capi", "-lm", "-o"])
        .arg(out));
}

#[test]
fn c_program_runs_lora_forward_and_an_svgd_step() {
    let tmp = std::env::temp_dir().join(format!("bella-capi-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let exe = tmp.join("check");
    compile_check(&exe);
    let mut backends = vec!["cpu"];
    if cfg!(feature = "ptx-sim") {
        backends.push("ptx-sim");
    } else {
        eprintln!("note: built without the ptx-sim feature: the C program runs on cpu only");
    }
    for be in backends {
        let text = run(Command::new(&exe).arg(be));
        assert!(text.contains(&format!("ok {be}")), "{text}");
    }
    // The program's own checks can fail: a wrong answer is an exit status of 1.
    let out = Command::new(&exe).arg("no-such-backend").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an unopenable backend exits 2");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The README's ctypes example (the python block of "## From C and Python"), run as written
/// with `BELLA_CAPI_LIB` pointing at this build's library.
#[test]
fn readme_ctypes_example_runs() {
    let readme = std::fs::read_to_string(crate_dir().join("../README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("From C and Python"))
        .expect("README has a section \"## From C and Python\"");
    let code = section
        .split("```python\n")
        .nth(1)
        .and_then(|s| s.split("\n```").next())
        .expect("the section has a python block");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let have_numpy = Command::new(&python)
        .args(["-c", "import numpy"])
        .status()
        .is_ok_and(|s| s.success());
    let required = std::env::var("BELLA_REQUIRE").unwrap_or_default();
    if !have_numpy {
        assert!(
            !required.split(',').any(|r| r.trim() == "numpy"),
            "BELLA_REQUIRE names numpy, but `{python} -c 'import numpy'` fails"
        );
        eprintln!("skipped: no numpy for {python}");
        return;
    }
    let text = run(Command::new(&python)
        .args(["-c", code])
        .env("BELLA_CAPI_LIB", lib_dir().join("libbella_capi.so")));
    assert!(text.contains("lora_forward matches numpy"), "{text}");
    assert!(text.contains("f16 matmul matches numpy"), "{text}");
}

/// The CUDA interop calls on a backend that is not cuda: a clear error, no output written.
/// (On cuda they wrap the caller's memory and stream; no session has had a GPU to run that.)
#[test]
fn device_pointer_calls_need_the_cuda_backend() {
    use bella_capi::*;
    use std::ffi::{CStr, CString};
    let name = CString::new("cpu").unwrap();
    let mut be = std::ptr::null_mut();
    assert_eq!(
        unsafe { bella_backend_open(name.as_ptr(), &mut be) },
        BELLA_OK
    );
    let last = || {
        unsafe { CStr::from_ptr(bella_last_error()) }
            .to_string_lossy()
            .into_owned()
    };
    let shape = [2usize, 3];
    let mut t = std::ptr::null_mut();
    let st = unsafe { bella_tensor_from_device_ptr(be, 0x1000, shape.as_ptr(), 2, &mut t) };
    assert_eq!(st, BELLA_ERR_INVALID);
    assert!(t.is_null(), "no handle on failure");
    assert!(last().contains("needs the cuda backend"), "{}", last());
    let st = unsafe {
        bella_tensor_from_device_ptr_as(be, 0x1000, shape.as_ptr(), 2, BELLA_BF16, &mut t)
    };
    assert_eq!(st, BELLA_ERR_INVALID);
    assert!(t.is_null(), "no handle on failure");
    assert!(
        last().contains("bella_tensor_from_device_ptr_as"),
        "{}",
        last()
    );

    let data = [1.0f32; 6];
    let mut cpu_t = std::ptr::null_mut();
    let st = unsafe { bella_tensor_upload(be, data.as_ptr(), shape.as_ptr(), 2, &mut cpu_t) };
    assert_eq!(st, BELLA_OK);
    let mut addr = 7u64;
    let st = unsafe { bella_tensor_device_ptr(be, cpu_t, &mut addr) };
    assert_eq!(st, BELLA_ERR_INVALID);
    assert_eq!(addr, 7, "nothing written on failure");
    assert!(last().contains("bella_tensor_device_ptr"), "{}", last());

    assert_eq!(
        unsafe { bella_cuda_set_stream(be, 0, 1) },
        BELLA_ERR_INVALID
    );
    assert!(last().contains("bella_cuda_set_stream"), "{}", last());
    unsafe {
        bella_tensor_free(cpu_t);
        bella_backend_free(be);
    }
}
