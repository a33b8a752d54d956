//! An ABI entry's example launched from the JSON alone, on the simulator's `Driver`: the
//! `.ptx` file it names, buffers filled as the example says, arguments in the ABI's order,
//! the ABI's block and a 1-D grid; optionally every pointer 4 bytes past a 16-byte boundary.

use bella::backend::ptx::abi::{BufferSpec, Entry, ParamType};
use bella::backend::ptx::driver::{Driver, LaunchConfig, Param};
use bella::backend::ptx::gemm_mma::{pack_half, HalfType};
use bella::backend::ptx_sim::SimDriver;
use bella::error::Result;
use bella::rng::Rng;
use std::collections::BTreeMap;
use std::path::Path;

/// One launch: every buffer before and after, by parameter name.
pub struct Run {
    pub inputs: BTreeMap<String, Vec<f32>>,
    pub outputs: BTreeMap<String, Vec<f32>>,
}

impl Run {
    /// A scalar of the example as f64.
    pub fn scalar(e: &Entry, name: &str) -> f64 {
        *e.example
            .scalars
            .get(name)
            .unwrap_or_else(|| panic!("{}: no example value for `{name}`", e.name))
    }
}

/// The example's data for one buffer (the same for every run of an entry).
fn fill(spec: &BufferSpec, rng: &mut Rng) -> Vec<f32> {
    let n = spec.len;
    match spec.fill.as_str() {
        "uniform" => rng.uniform_vec(n, -1.0, 1.0),
        "positive" => rng.uniform_vec(n, 0.01, 1.0),
        "nan" => vec![f32::NAN; n],
        "index" => {
            let below = spec.below.expect("an index fill names `below`") as usize;
            (0..n)
                .map(|_| f32::from_bits(rng.below(below) as u32))
                .collect()
        }
        "bf16x2" => pack_half(HalfType::Bf16, &rng.uniform_vec(2 * n, -1.0, 1.0)),
        "f16x2" => pack_half(HalfType::F16, &rng.uniform_vec(2 * n, -1.0, 1.0)),
        other => panic!("unknown fill `{other}`"),
    }
}

/// The word before each buffer of a misaligned run: must be left alone.
const GUARD: u32 = 0x7fc0_abcd;

/// Runs `e`'s example at `grid` CTAs on a fresh simulator. `misaligned`: each buffer starts
/// one word into its allocation (a 4-byte but not 16-byte aligned pointer), after a guard
/// word that the launch must not touch.
pub fn run_example(e: &Entry, grid: u32, misaligned: bool) -> Result<Run> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("kernels")
        .join(&e.file);
    let ptx = std::fs::read_to_string(&path).expect("the ABI's file exists");
    let driver = SimDriver::new();
    driver.load_module(&e.file, &ptx)?;

    let mut rng = Rng::new(0xab1);
    let mut inputs = BTreeMap::new();
    let mut bufs = BTreeMap::new();
    for p in e.params.iter().filter(|p| p.ty == ParamType::U64) {
        let spec =
            e.example.buffers.get(&p.name).unwrap_or_else(|| {
                panic!("{}: the example has no buffer for `{}`", e.name, p.name)
            });
        let data = fill(spec, &mut rng);
        let guard = misaligned.then_some(f32::from_bits(GUARD));
        let words: Vec<f32> = guard.into_iter().chain(data.iter().copied()).collect();
        bufs.insert(p.name.clone(), driver.upload(&words)?);
        inputs.insert(p.name.clone(), data);
    }
    let params: Vec<Param<'_, _>> = e
        .params
        .iter()
        .map(|p| match p.ty {
            ParamType::U64 => Param::Ptr {
                buf: &bufs[&p.name],
                byte_offset: if misaligned { 4 } else { 0 },
            },
            ParamType::U32 => Param::U32(Run::scalar(e, &p.name) as u32),
            ParamType::F32 => Param::F32(Run::scalar(e, &p.name) as f32),
        })
        .collect();
    let cfg = LaunchConfig {
        grid: [grid, 1, 1],
        block: e.block,
        shared_bytes: 0,
    };
    driver.launch(&e.file, &e.name, cfg, &params)?;
    let mut outputs = BTreeMap::new();
    let skip = usize::from(misaligned);
    for (name, buf) in &bufs {
        let mut words = driver.download(buf, skip + inputs[name].len())?;
        if misaligned {
            assert_eq!(
                words[0].to_bits(),
                GUARD,
                "{}: the word before `{name}` changed",
                e.name
            );
        }
        outputs.insert(name.clone(), words.split_off(skip));
    }
    Ok(Run { inputs, outputs })
}
