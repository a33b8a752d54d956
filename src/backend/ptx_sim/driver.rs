//! The simulator behind the [`Driver`] surface: buffers in host memory, modules parsed once,
//! launches run to completion before `launch` returns (so `synchronize` has nothing to wait
//! for). Launch configurations are checked as a GPU driver would. With its [`Profiler`]
//! enabled, every launch runs in counting mode and its counters are logged.

use super::exec::{self, Launch};
use super::isa::Ty;
use super::memory::{GlobalBuf, GlobalMap, SLOTS, SLOT_BITS};
use super::parser::{parse_module, Module};
use super::profile::{LaunchProfile, Profiler};
use crate::backend::ptx::driver::{DeviceProps, Driver, LaunchConfig, Param};
use crate::backend::BackendKind;
use crate::error::{BellaError, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

const BACKEND: &str = "ptx-sim";

/// A simulated device allocation of f32 elements.
#[derive(Clone)]
pub struct SimBuf(Arc<GlobalBuf>);

impl SimBuf {
    /// The buffer's device address (what a `.u64` pointer parameter holds).
    pub fn address(&self) -> u64 {
        self.0.base
    }
}

/// The simulated device: buffers, loaded modules and the counting switch.
pub struct SimDriver {
    props: DeviceProps,
    next_slot: AtomicU64,
    modules: Mutex<HashMap<String, Arc<Module>>>,
    profiler: Profiler,
}

impl Default for SimDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl SimDriver {
    /// A device with no modules loaded and counting off.
    pub fn new() -> Self {
        let workers = rayon::current_num_threads().max(1) as u32;
        SimDriver {
            props: DeviceProps {
                name: "PTX simulator on the CPU".to_string(),
                max_grid: [i32::MAX as u32, 65535, 65535],
                max_threads_per_block: 1024,
                max_shared_per_block: 48 * 1024,
                sm_count: workers,
            },
            next_slot: AtomicU64::new(0),
            modules: Mutex::new(HashMap::new()),
            profiler: Profiler::default(),
        }
    }

    /// A device that reports `sm_count` SMs, so the launch code sizes its grids as it
    /// would on a card with that many (profiling; execution speed is unchanged).
    pub fn with_sm_count(sm_count: u32) -> Self {
        let mut d = Self::new();
        d.props.sm_count = sm_count.max(1);
        d
    }

    /// The handle on this driver's counting mode and launch log (clones share it, so it
    /// keeps working after the driver moves into a backend).
    pub fn profiler(&self) -> Profiler {
        self.profiler.clone()
    }

    fn new_buf(&self, len: usize, data: impl Iterator<Item = u32>) -> Result<SimBuf> {
        if len as u64 * 4 > 1 << SLOT_BITS {
            return Err(BellaError::device(
                BACKEND,
                format!(
                    "allocation of {len} f32 elements exceeds the simulator's 64 GiB per buffer"
                ),
            ));
        }
        // slot 0 is never used, so a null pointer is in no buffer
        let slot = self.next_slot.fetch_add(1, Relaxed) % (SLOTS - 1) + 1;
        Ok(SimBuf(Arc::new(GlobalBuf::new(slot << SLOT_BITS, data))))
    }

    fn module(&self, name: &str) -> Result<Arc<Module>> {
        let modules = self.modules.lock().map_err(|_| poisoned())?;
        modules
            .get(name)
            .cloned()
            .ok_or_else(|| BellaError::device(BACKEND, format!("module `{name}` is not loaded")))
    }
}

fn poisoned() -> BellaError {
    BellaError::device(BACKEND, "module cache lock poisoned")
}

fn range_error(what: &str, off: usize, len: usize, buf: usize) -> BellaError {
    BellaError::device(
        BACKEND,
        format!(
            "{what}: elements {off}..{} outside a buffer of {buf}",
            off + len
        ),
    )
}

impl Driver for SimDriver {
    type Buf = SimBuf;

    fn kind(&self) -> BackendKind {
        BackendKind::PtxSim
    }

    fn props(&self) -> &DeviceProps {
        &self.props
    }

    fn memory_budget(&self) -> crate::backend::MemoryBudget {
        // Simulated buffers live in host memory; kernels index them with 32-bit element counts.
        crate::backend::MemoryBudget::host(4 * u32::MAX as u64)
    }

    fn alloc_zeroed(&self, len: usize) -> Result<SimBuf> {
        self.new_buf(len, std::iter::repeat_n(0, len))
    }

    fn upload(&self, data: &[f32]) -> Result<SimBuf> {
        self.new_buf(data.len(), data.iter().map(|x| x.to_bits()))
    }

    fn download(&self, buf: &SimBuf, len: usize) -> Result<Vec<f32>> {
        let words = &buf.0.words;
        if len > words.len() {
            return Err(range_error("download", 0, len, words.len()));
        }
        Ok(words[..len]
            .iter()
            .map(|w| f32::from_bits(w.load(Relaxed)))
            .collect())
    }

    fn buf_len(&self, buf: &SimBuf) -> usize {
        buf.0.words.len()
    }

    fn copy(
        &self,
        src: &SimBuf,
        src_off: usize,
        dst: &SimBuf,
        dst_off: usize,
        len: usize,
    ) -> Result<()> {
        let (s, d) = (&src.0.words, &dst.0.words);
        if src_off.checked_add(len).is_none_or(|e| e > s.len()) {
            return Err(range_error("copy source", src_off, len, s.len()));
        }
        if dst_off.checked_add(len).is_none_or(|e| e > d.len()) {
            return Err(range_error("copy destination", dst_off, len, d.len()));
        }
        // through a temporary: source and destination may overlap
        let tmp: Vec<u32> = s[src_off..src_off + len]
            .iter()
            .map(|w| w.load(Relaxed))
            .collect();
        for (w, v) in d[dst_off..dst_off + len].iter().zip(tmp) {
            w.store(v, Relaxed);
        }
        Ok(())
    }

    fn load_module(&self, name: &str, ptx: &str) -> Result<()> {
        if self
            .modules
            .lock()
            .map_err(|_| poisoned())?
            .contains_key(name)
        {
            return Ok(());
        }
        let module = parse_module(ptx)
            .map_err(|e| BellaError::device(BACKEND, format!("module `{name}`: {e}")))?;
        self.modules
            .lock()
            .map_err(|_| poisoned())?
            .insert(name.to_string(), Arc::new(module));
        Ok(())
    }

    fn launch(
        &self,
        module: &str,
        kernel: &str,
        cfg: LaunchConfig,
        params: &[Param<'_, SimBuf>],
    ) -> Result<()> {
        let m = self.module(module)?;
        let k = m.kernels.get(kernel).ok_or_else(|| {
            BellaError::device(
                BACKEND,
                format!("module `{module}` has no kernel `{kernel}`"),
            )
        })?;
        let fail = |msg: String| BellaError::device(BACKEND, format!("kernel `{kernel}`: {msg}"));
        let threads: u64 = cfg.block.iter().map(|&b| b as u64).product();
        let ctas: u64 = cfg.grid.iter().map(|&g| g as u64).product();
        if threads == 0 || ctas == 0 {
            return Err(fail(format!(
                "empty launch: grid {:?}, block {:?}",
                cfg.grid, cfg.block
            )));
        }
        if threads > self.props.max_threads_per_block as u64 || cfg.block[2] > 64 {
            return Err(fail(format!("block {:?} is too large", cfg.block)));
        }
        if let Some(max) = k.max_threads {
            if threads > max {
                return Err(fail(format!(
                    "block of {threads} threads exceeds the kernel's .maxntid/.reqntid of {max}"
                )));
            }
        }
        if cfg
            .grid
            .iter()
            .zip(self.props.max_grid)
            .any(|(&g, m)| g > m)
        {
            return Err(fail(format!(
                "grid {:?} exceeds {:?}",
                cfg.grid, self.props.max_grid
            )));
        }
        let shared_bytes = match k.dyn_shared_offset {
            Some(off) => off as u64 + cfg.shared_bytes as u64,
            None => k.static_shared as u64 + cfg.shared_bytes as u64,
        };
        if shared_bytes > self.props.max_shared_per_block as u64 {
            return Err(fail(format!(
                "{shared_bytes} bytes of shared memory exceed the {} per block",
                self.props.max_shared_per_block
            )));
        }
        if params.len() != k.params.len() {
            return Err(fail(format!(
                "{} arguments given, the kernel takes {}",
                params.len(),
                k.params.len()
            )));
        }
        let mut bytes = vec![0u8; k.param_bytes as usize];
        let mut global = GlobalMap::new();
        for (i, (p, decl)) in params.iter().zip(&k.params).enumerate() {
            let mismatch = |given: &str| {
                fail(format!(
                    "argument {i} is {given} but parameter `{}` is .{}",
                    decl.name,
                    decl.ty.name()
                ))
            };
            let (value, size): (u64, usize) = match p {
                Param::Ptr { buf, byte_offset } => {
                    if decl.ty.bits() != 64 || decl.ty == Ty::F64 {
                        return Err(mismatch("a pointer"));
                    }
                    if *byte_offset as u64 > buf.0.bytes() {
                        return Err(fail(format!(
                            "argument {i} points {byte_offset} bytes into a buffer of {}",
                            buf.0.bytes()
                        )));
                    }
                    global.add(buf.0.clone(), &format!("`{}`", decl.name));
                    (buf.0.base + *byte_offset as u64, 8)
                }
                Param::U32(v) if matches!(decl.ty, Ty::U32 | Ty::S32 | Ty::B32) => (*v as u64, 4),
                Param::I32(v) if matches!(decl.ty, Ty::U32 | Ty::S32 | Ty::B32) => {
                    (*v as u32 as u64, 4)
                }
                Param::F32(v) if matches!(decl.ty, Ty::F32 | Ty::B32) => (v.to_bits() as u64, 4),
                Param::U64(v) if matches!(decl.ty, Ty::U64 | Ty::S64 | Ty::B64) => (*v, 8),
                Param::U32(_) => return Err(mismatch("a u32")),
                Param::I32(_) => return Err(mismatch("an i32")),
                Param::F32(_) => return Err(mismatch("an f32")),
                Param::U64(_) => return Err(mismatch("a u64")),
            };
            let at = decl.offset as usize;
            bytes[at..at + size].copy_from_slice(&value.to_le_bytes()[..size]);
        }
        let launch = Launch {
            kernel: k,
            grid: cfg.grid,
            block: cfg.block,
            shared_bytes: shared_bytes as u32,
            params: bytes,
            global,
        };
        if !self.profiler.enabled() {
            return exec::launch(&launch).map_err(|e| BellaError::device(BACKEND, e));
        }
        let (counters, sample) = exec::launch_counted(&launch, self.profiler.max_ctas())
            .map_err(|e| BellaError::device(BACKEND, e))?;
        self.profiler.record(LaunchProfile {
            module: module.to_string(),
            kernel: kernel.to_string(),
            grid: cfg.grid,
            block: cfg.block,
            shared_bytes: shared_bytes as u32,
            counters,
            sample,
        });
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}
