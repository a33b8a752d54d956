//! Counting mode: what a GPU profiler counts, measured on the simulator, per launch.
//!
//! Switched on per launch (`exec::launch_counted` inside the crate, or
//! [`Profiler::set_enabled`] on a [`SimDriver`](super::SimDriver)); plain launches run the
//! same instruction loop with a probe that compiles to nothing.
//!
//! **Warp instances.** Threads run one by one, so warp-level events are reconstructed: the
//! lanes of a warp that execute the same instruction (pc) for the n-th time within the same
//! barrier interval form one warp instance of it. A warp instance is counted once, whatever
//! its number of active lanes, so a divergent branch counts each path once per warp that
//! takes it, and a loop runs as many warp iterations as its longest lane. Barriers reconverge
//! a warp (the numbering restarts after each completed `bar.sync`).
//!
//! **What is counted.** All counts are PTX-level: `div.rn.f32` or `sqrt.rn.f32` is one
//! instruction here although ptxas expands it into several.
//! - `warp_inst`: warp instances per [`Class`], predicated-off lanes included (a warp issues
//!   a guarded instruction when any of its lanes reaches it), as Nsight's `inst_executed`.
//! - `thread_inst`: thread-level executions with the guard true, per class
//!   (`thread_inst_executed_pred_on`).
//! - `flops`: FP32 floating-point operations executed by threads with the guard true: FMA
//!   (`fma.f32`, `mad.f32`) 2, `add/sub/mul.f32` 1, nothing else (division, square roots and
//!   the special functions are counted as instructions only).
//! - Tensor cores ([`TensorCounters`]): warp instances of `mma.sync` by shape and input type
//!   and their FLOPs (2·16·8·16 per `m16n8k16`), apart from the FP32 `flops`. (The time
//!   model of `bella profile` has no tensor pipe yet: these counts are its input for one.)
//! - Global memory ([`GlobalCounters`]): one request per warp instance of a `ld`/`st`/`atom`
//!   with at least one lane whose guard is true and whose address is global (generic
//!   addresses count by the space they resolve to); the sectors of a request are the
//!   distinct aligned 32-byte blocks its lanes' bytes touch. Bytes between the SMs and L2 =
//!   sectors × 32.
//! - Shared memory ([`SharedCounters`]): requests likewise; wavefronts per request follow
//!   the bank model below.
//! - `ldmatrix` is a shared load request whose lanes `8j..8j+7` each read the 16-byte row
//!   they address (so `.x4` is four phases of 8 rows, like a `.v4` load); `cp.async` is a
//!   global load request of its source bytes (`src-size` of them) and a shared store request
//!   of its destination bytes, both counted where it is issued.
//!
//! **Shared-memory bank model** (32 banks of 4 bytes; word `w = addr / 4` lives in bank
//! `w % 32`). An access of up to 4 bytes per lane is served in one phase of all 32 lanes; an
//! 8-byte access (`.v2.f32`, `.f64`) in two phases of 16 lanes (lanes 0–15, 16–31), a 16-byte
//! access (`.v4.f32`) in four phases of 8 lanes. A phase with at least one active lane takes
//! as many wavefronts as the largest number of distinct words any one bank holds among the
//! words its lanes touch: lanes on the same word are a broadcast (no conflict), 32 lanes on
//! 32 different words of one bank take 32. `ideal_wavefronts` counts the active phases, the
//! conflict-free minimum.

use super::isa::{BinOp, Half, Op, Space, TerOp, Ty, UnOp};
use super::memory::SLOT_BITS;
use super::warp_matrix::MMA_M16N8K16_FLOPS;
use serde::Serialize;
use std::ops::AddAssign;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Defines [`Class`] and [`InstCounts`] (one `u64` field per class) from one list.
macro_rules! classes {
    ($( $(#[$doc:meta])* $var:ident => $field:ident, )*) => {
        /// The instruction classes counts are kept by (one table maps instructions to them:
        /// `classify` in `profile.rs`; each variant names what it holds).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Class {
            $( $(#[$doc])* $var, )*
        }

        impl Class {
            /// Every class, in the order of the fields of [`InstCounts`].
            pub const ALL: &'static [Class] = &[$(Class::$var),*];

            /// The class's name, as the field of [`InstCounts`] (and its JSON key).
            pub fn name(self) -> &'static str {
                match self {
                    $( Class::$var => stringify!($field), )*
                }
            }
        }

        /// Instruction counts by [`Class`].
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct InstCounts {
            $( $(#[$doc])* pub $field: u64, )*
        }

        impl InstCounts {
            /// The count of one class.
            pub fn get(&self, c: Class) -> u64 {
                match c {
                    $( Class::$var => self.$field, )*
                }
            }

            fn slot(&mut self, c: Class) -> &mut u64 {
                match c {
                    $( Class::$var => &mut self.$field, )*
                }
            }
        }
    };
}

classes! {
    /// `fma.f32`, `mad.f32`
    Fp32Fma => fp32_fma,
    /// `add.f32`, `sub.f32`
    Fp32Add => fp32_add,
    /// `mul.f32`
    Fp32Mul => fp32_mul,
    /// other f32 arithmetic: `neg abs min max div`, `setp.*.f32`
    Fp32Other => fp32_other,
    /// f32 special functions (the MUFU unit): `rcp sqrt rsqrt ex2 lg2 sin cos tanh`
    Fp32Special => fp32_special,
    /// any f64 arithmetic or comparison
    Fp64 => fp64,
    /// integer, bit and predicate arithmetic (`add.u32`, `mad.lo`, `shl`, `and.pred`, ...),
    /// integer `setp`, `selp`, `cvta`
    Integer => integer,
    /// `cvt`
    Convert => convert,
    /// `mov` and vector pack/unpack (often free after ptxas)
    Move => mov,
    /// `ld.global`
    LdGlobal => ld_global,
    /// `st.global`
    StGlobal => st_global,
    /// `ld.shared`
    LdShared => ld_shared,
    /// `st.shared`
    StShared => st_shared,
    /// `ld.param`
    LdParam => ld_param,
    /// `ld.local`
    LdLocal => ld_local,
    /// `st.local`
    StLocal => st_local,
    /// `ld` of a generic address
    LdGeneric => ld_generic,
    /// `st` to a generic address
    StGeneric => st_generic,
    /// `atom`, `red` (any space)
    Atomic => atomic,
    /// `bra`, `ret`, `exit`
    Control => control,
    /// `bar.sync`, `barrier.sync`, `membar`, `fence`, `cp.async.commit_group`,
    /// `cp.async.wait_group`, `cp.async.wait_all`
    Barrier => barrier,
    /// warp collectives: `shfl.sync`, `vote.sync`, `bar.warp.sync`
    Warp => warp,
    /// tensor-core `mma.sync`
    Mma => mma,
    /// `ldmatrix`
    Ldmatrix => ldmatrix,
    /// `cp.async` copies (global to shared)
    CpAsync => cp_async,
}

impl InstCounts {
    /// Add `n` to the count of class `c`.
    pub fn add(&mut self, c: Class, n: u64) {
        *self.slot(c) += n;
    }

    /// All classes together.
    pub fn total(&self) -> u64 {
        Class::ALL.iter().map(|&c| self.get(c)).sum()
    }
}

impl AddAssign<&InstCounts> for InstCounts {
    fn add_assign(&mut self, o: &InstCounts) {
        for &c in Class::ALL {
            *self.slot(c) += o.get(c);
        }
    }
}

/// The class of one decoded instruction.
pub(crate) fn classify(op: &Op) -> Class {
    let float = |ty: Ty, f32_class: Class| match ty {
        Ty::F32 => Some(f32_class),
        Ty::F64 => Some(Class::Fp64),
        _ => None,
    };
    let by_space = |space: &Space, classes: [Class; 5]| match space {
        Space::Global => classes[0],
        Space::Shared => classes[1],
        Space::Param => classes[2],
        Space::Local => classes[3],
        Space::Generic => classes[4],
    };
    use Class::*;
    match op {
        Op::Mov { .. } | Op::Pack { .. } | Op::Unpack { .. } => Move,
        Op::Unary { op, ty, .. } => {
            let c = match op {
                UnOp::Rcp
                | UnOp::Sqrt
                | UnOp::Rsqrt
                | UnOp::Ex2
                | UnOp::Lg2
                | UnOp::Sin
                | UnOp::Cos
                | UnOp::Tanh => Fp32Special,
                _ => Fp32Other,
            };
            float(*ty, c).unwrap_or(Integer)
        }
        Op::Binary { op, ty, .. } => {
            let c = match op {
                BinOp::Add | BinOp::Sub => Fp32Add,
                BinOp::Mul => Fp32Mul,
                _ => Fp32Other,
            };
            float(*ty, c).unwrap_or(Integer)
        }
        Op::Ternary { op, ty, .. } => match op {
            TerOp::Fma => float(*ty, Fp32Fma).unwrap_or(Integer),
            _ => Integer,
        },
        Op::Setp { ty, .. } => float(*ty, Fp32Other).unwrap_or(Integer),
        Op::Selp { .. } | Op::Cvta { .. } => Integer,
        Op::Cvt { .. } | Op::CvtToHalf { .. } | Op::CvtFromHalf { .. } => Convert,
        Op::Ld { space, .. } => by_space(space, [LdGlobal, LdShared, LdParam, LdLocal, LdGeneric]),
        // `st.param` faults when it runs; it sits with the generic stores
        Op::St { space, .. } => {
            by_space(space, [StGlobal, StShared, StGeneric, StLocal, StGeneric])
        }
        Op::Atom { .. } => Atomic,
        Op::Bra { .. } | Op::Exit => Control,
        Op::Bar { .. } | Op::Fence | Op::CpAsyncCommit | Op::CpAsyncWait { .. } => Barrier,
        Op::Shfl { .. } | Op::Vote { .. } | Op::WarpSync { .. } => Warp,
        Op::Mma { .. } => Mma,
        Op::Ldmatrix { .. } => Ldmatrix,
        Op::CpAsync { .. } => CpAsync,
    }
}

/// FP32 FLOPs one thread performs executing `op` (see the module notes).
pub(crate) fn flops(op: &Op) -> u64 {
    match classify(op) {
        Class::Fp32Fma => 2,
        Class::Fp32Add | Class::Fp32Mul => 1,
        _ => 0,
    }
}

/// Tensor-core work of a launch (warp-level `mma.sync` instances).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TensorCounters {
    /// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32`
    pub mma_m16n8k16_bf16: u64,
    /// `mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32`
    pub mma_m16n8k16_f16: u64,
    /// tensor-core FLOPs (2·M·N·K per mma), not in [`Counters::flops`]
    pub flops: u64,
}

impl TensorCounters {
    /// All `mma.sync` instances.
    pub fn mma(&self) -> u64 {
        self.mma_m16n8k16_bf16 + self.mma_m16n8k16_f16
    }
}

impl AddAssign<&TensorCounters> for TensorCounters {
    fn add_assign(&mut self, o: &TensorCounters) {
        self.mma_m16n8k16_bf16 += o.mma_m16n8k16_bf16;
        self.mma_m16n8k16_f16 += o.mma_m16n8k16_f16;
        self.flops += o.flops;
    }
}

/// Global-memory traffic of a launch (bytes = sectors × 32).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GlobalCounters {
    /// warp-level load requests
    pub load_requests: u64,
    /// distinct 32-byte sectors per load request, summed
    pub load_sectors: u64,
    /// warp-level store requests
    pub store_requests: u64,
    /// distinct 32-byte sectors per store request, summed
    pub store_sectors: u64,
    /// warp-level atomic / reduction requests
    pub atomic_requests: u64,
    /// distinct 32-byte sectors per atomic request, summed
    pub atomic_sectors: u64,
    /// distinct 32-byte sectors the whole launch loads (each crosses DRAM once if L2 holds
    /// the launch's footprint: the DRAM model of `bella profile`, a lower bound)
    pub dram_load_sectors: u64,
    /// distinct 32-byte sectors the whole launch stores or updates atomically
    pub dram_store_sectors: u64,
}

impl GlobalCounters {
    /// Bytes loaded between the SMs and L2.
    pub fn load_bytes(&self) -> u64 {
        self.load_sectors * 32
    }
    /// Bytes stored between the SMs and L2.
    pub fn store_bytes(&self) -> u64 {
        self.store_sectors * 32
    }
    /// All bytes between the SMs and L2 (loads, stores and atomics).
    pub fn l2_bytes(&self) -> u64 {
        (self.load_sectors + self.store_sectors + self.atomic_sectors) * 32
    }
    /// Bytes between L2 and DRAM if L2 holds the launch's whole footprint: every distinct
    /// sector loaded is read once and every distinct sector written is written back once.
    pub fn dram_bytes(&self) -> u64 {
        (self.dram_load_sectors + self.dram_store_sectors) * 32
    }
    /// Average sectors per load request (4 for a coalesced 4-byte warp load, 32 when every
    /// lane touches its own sector); 0 without loads.
    pub fn sectors_per_load(&self) -> f64 {
        ratio(self.load_sectors, self.load_requests)
    }
}

impl AddAssign<&GlobalCounters> for GlobalCounters {
    fn add_assign(&mut self, o: &GlobalCounters) {
        self.load_requests += o.load_requests;
        self.load_sectors += o.load_sectors;
        self.store_requests += o.store_requests;
        self.store_sectors += o.store_sectors;
        self.atomic_requests += o.atomic_requests;
        self.atomic_sectors += o.atomic_sectors;
        self.dram_load_sectors += o.dram_load_sectors;
        self.dram_store_sectors += o.dram_store_sectors;
    }
}

/// Shared-memory requests and wavefronts of a launch (the bank model is in the module notes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SharedCounters {
    /// warp-level load requests
    pub load_requests: u64,
    /// wavefronts of the load requests
    pub load_wavefronts: u64,
    /// warp-level store requests
    pub store_requests: u64,
    /// wavefronts of the store requests
    pub store_wavefronts: u64,
    /// warp-level atomic requests
    pub atomic_requests: u64,
    /// wavefronts of the atomic requests
    pub atomic_wavefronts: u64,
    /// the conflict-free minimum of all the wavefronts above (active phases)
    pub ideal_wavefronts: u64,
}

impl SharedCounters {
    /// All requests.
    pub fn requests(&self) -> u64 {
        self.load_requests + self.store_requests + self.atomic_requests
    }
    /// All wavefronts.
    pub fn wavefronts(&self) -> u64 {
        self.load_wavefronts + self.store_wavefronts + self.atomic_wavefronts
    }
    /// Wavefronts per request (1 when conflict-free with 4-byte accesses, 32 for a 32-way
    /// conflict; a conflict-free `.v4` access takes 4); 0 without requests.
    pub fn conflict_degree(&self) -> f64 {
        ratio(self.wavefronts(), self.requests())
    }
    /// Wavefronts beyond the conflict-free minimum.
    pub fn excess_wavefronts(&self) -> u64 {
        self.wavefronts() - self.ideal_wavefronts
    }
}

impl AddAssign<&SharedCounters> for SharedCounters {
    fn add_assign(&mut self, o: &SharedCounters) {
        self.load_requests += o.load_requests;
        self.load_wavefronts += o.load_wavefronts;
        self.store_requests += o.store_requests;
        self.store_wavefronts += o.store_wavefronts;
        self.atomic_requests += o.atomic_requests;
        self.atomic_wavefronts += o.atomic_wavefronts;
        self.ideal_wavefronts += o.ideal_wavefronts;
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Everything counted for one launch (or a sum of launches). See the module notes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// CTAs run
    pub ctas: u64,
    /// warps launched (`ceil(threads per CTA / 32)` per CTA)
    pub warps: u64,
    /// threads launched
    pub threads: u64,
    /// warp instances per class
    pub warp_inst: InstCounts,
    /// thread-level executions with the guard true, per class
    pub thread_inst: InstCounts,
    /// FP32 FLOPs executed (FMA 2, add/sub/mul 1)
    pub flops: u64,
    /// tensor-core instructions and FLOPs
    pub tensor: TensorCounters,
    /// global memory
    pub global: GlobalCounters,
    /// shared memory
    pub shared: SharedCounters,
}

impl AddAssign<&Counters> for Counters {
    fn add_assign(&mut self, o: &Counters) {
        self.ctas += o.ctas;
        self.warps += o.warps;
        self.threads += o.threads;
        self.warp_inst += &o.warp_inst;
        self.thread_inst += &o.thread_inst;
        self.flops += o.flops;
        self.tensor += &o.tensor;
        self.global += &o.global;
        self.shared += &o.shared;
    }
}

impl Counters {
    /// Counts of a sample of `run` CTAs scaled to `total` (rounded to the nearest count).
    /// The CTA, warp and thread counts are the whole grid's exactly; the DRAM counts are
    /// set by the caller from the sample's footprint (`Footprint::counts`).
    pub(super) fn scale_sample(
        &mut self,
        run: u64,
        total: u64,
        warps_per_cta: u64,
        threads_per_cta: u64,
    ) {
        let s = |v: &mut u64| {
            *v = ((*v as u128 * total as u128 + run as u128 / 2) / run as u128) as u64
        };
        self.ctas = total;
        self.warps = total * warps_per_cta;
        self.threads = total * threads_per_cta;
        for &c in Class::ALL {
            s(self.warp_inst.slot(c));
            s(self.thread_inst.slot(c));
        }
        s(&mut self.flops);
        let t = &mut self.tensor;
        for v in [
            &mut t.mma_m16n8k16_bf16,
            &mut t.mma_m16n8k16_f16,
            &mut t.flops,
        ] {
            s(v);
        }
        let g = &mut self.global;
        for v in [
            &mut g.load_requests,
            &mut g.load_sectors,
            &mut g.store_requests,
            &mut g.store_sectors,
            &mut g.atomic_requests,
            &mut g.atomic_sectors,
        ] {
            s(v);
        }
        let sh = &mut self.shared;
        for v in [
            &mut sh.load_requests,
            &mut sh.load_wavefronts,
            &mut sh.store_requests,
            &mut sh.store_wavefronts,
            &mut sh.atomic_requests,
            &mut sh.atomic_wavefronts,
            &mut sh.ideal_wavefronts,
        ] {
            s(v);
        }
    }
}

/// Which CTAs of a launch ran when it was sampled (its counters are scaled to the grid).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// CTAs executed: evenly strided over the linear CTA index
    pub ctas_run: u64,
    /// CTAs in the grid
    pub ctas_total: u64,
}

/// How a profiling simulator is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProfileOptions {
    /// The SM count the device reports, so that the launch code sizes grids as on that card.
    pub sm_count: u32,
    /// Run at most this many CTAs of a launch (an evenly strided sample) and scale the
    /// counters to the grid; the outputs of a sampled launch are then incomplete.
    pub max_ctas_per_launch: Option<u64>,
}

/// The counters of one launch a profiling [`SimDriver`](super::SimDriver) ran.
#[derive(Clone, Debug, Serialize)]
pub struct LaunchProfile {
    /// the module name given to `load_module`
    pub module: String,
    /// the kernel's `.entry` name
    pub kernel: String,
    /// CTAs in x, y, z.
    pub grid: [u32; 3],
    /// Threads per CTA in x, y, z.
    pub block: [u32; 3],
    /// static plus dynamic shared memory of one CTA, in bytes
    pub shared_bytes: u32,
    /// What the launch did, counted.
    pub counters: Counters,
    /// `Some` when only a sample of the CTAs ran (the counters are scaled to the grid)
    pub sample: Option<Sample>,
}

#[derive(Default)]
struct ProfilerState {
    enabled: AtomicBool,
    /// 0: run every CTA
    max_ctas: std::sync::atomic::AtomicU64,
    log: Mutex<Vec<LaunchProfile>>,
}

/// A handle on a [`SimDriver`](super::SimDriver)'s counting mode and the log of the launches
/// it counted. Clones share the state, so a handle taken before the driver moves into a
/// backend still controls it. Off until [`Profiler::set_enabled`].
#[derive(Clone, Default)]
pub struct Profiler(Arc<ProfilerState>);

impl Profiler {
    /// Count the launches from now on (`true`) or run them plainly (`false`).
    pub fn set_enabled(&self, on: bool) {
        self.0.enabled.store(on, Relaxed);
    }
    /// Whether launches are counted.
    pub fn enabled(&self) -> bool {
        self.0.enabled.load(Relaxed)
    }
    /// Run at most `max` CTAs of each counted launch (see [`ProfileOptions`]); `None`: all.
    pub fn set_max_ctas(&self, max: Option<u64>) {
        self.0.max_ctas.store(max.unwrap_or(0), Relaxed);
    }
    /// The sampling limit of counted launches.
    pub fn max_ctas(&self) -> Option<u64> {
        Some(self.0.max_ctas.load(Relaxed)).filter(|&m| m > 0)
    }
    /// The launches counted since the last `take`, in launch order; the log is emptied.
    pub fn take(&self) -> Vec<LaunchProfile> {
        std::mem::take(&mut *self.0.log.lock().unwrap_or_else(|e| e.into_inner()))
    }
    pub(super) fn record(&self, p: LaunchProfile) {
        self.0.log.lock().unwrap_or_else(|e| e.into_inner()).push(p);
    }
}

// ---- the counting machinery the executor drives

/// Hooks the thread loop calls; [`NoProbe`] makes them vanish from plain runs.
pub(crate) trait Probe {
    /// The thread reached instruction `pc` (before its guard is tested).
    fn reach(&mut self, pc: u32);
    /// The guard of `pc` is true (or absent): the thread executes it.
    fn execute(&mut self, pc: u32);
    /// The executed instruction `pc` accesses `bytes` bytes at `addr` of `space` (resolved:
    /// never generic).
    fn access(&mut self, pc: u32, space: Space, addr: u64, bytes: u32);
}

/// The probe of plain runs: does nothing.
pub(crate) struct NoProbe;

impl Probe for NoProbe {
    #[inline(always)]
    fn reach(&mut self, _: u32) {}
    #[inline(always)]
    fn execute(&mut self, _: u32) {}
    #[inline(always)]
    fn access(&mut self, _: u32, _: Space, _: u64, _: u32) {}
}

/// How many times a thread (or, as a maximum, a warp) reached a pc in barrier interval
/// `epoch`; a stale epoch reads as 0, so nothing is cleared between intervals.
#[derive(Clone, Copy, Default)]
struct Stamp {
    epoch: u32,
    n: u32,
}

/// One lane's access: a part of the request `(warp, pc, n)`.
#[derive(Clone, Copy)]
struct Access {
    warp: u32,
    pc: u32,
    n: u32,
    lane: u8,
    space: u8,
    bytes: u8,
    addr: u64,
}

impl Access {
    fn key(&self) -> (u32, u32, u32, u8) {
        (self.warp, self.pc, self.n, self.space)
    }
}

const GLOBAL: u8 = 0;
const SHARED: u8 = 1;

/// The counting state of the CTAs one worker runs; summed into [`Counters`] at the end.
pub(super) struct Tally<'a> {
    code: &'a [super::isa::Instr],
    ncode: usize,
    nthreads: usize,
    epoch: u32,
    /// `[thread][pc]`
    reach: Vec<Stamp>,
    /// `[warp][pc]`: the most any lane of the warp reached the pc
    warp_max: Vec<Stamp>,
    /// warp instances per pc
    warp_pc: Vec<u64>,
    /// thread executions (guard true) per pc
    thread_pc: Vec<u64>,
    /// the accesses of the current barrier interval
    log: Vec<Access>,
    /// distinct sectors loaded / stored so far (deduplicated when they grow)
    footprint: Footprint,
    out: Counters,
}

/// The distinct global sectors a launch (or part of it) loads and stores.
#[derive(Default)]
pub(super) struct Footprint {
    loads: Vec<u64>,
    stores: Vec<u64>,
}

impl Footprint {
    /// Sectors kept before a deduplication pass: bounds the memory a long launch takes.
    const COMPACT_AT: usize = 1 << 22;

    fn push(set: &mut Vec<u64>, sectors: &[u64]) {
        set.extend_from_slice(sectors);
        if set.len() >= Self::COMPACT_AT {
            set.sort_unstable();
            set.dedup();
        }
    }

    /// The union of two footprints.
    pub(super) fn merge(mut self, o: Footprint) -> Footprint {
        self.loads.extend(o.loads);
        self.stores.extend(o.stores);
        for v in [&mut self.loads, &mut self.stores] {
            v.sort_unstable();
            v.dedup();
        }
        self
    }

    /// `(distinct sectors loaded, distinct sectors stored)` of a launch of which `run` of
    /// `total` CTAs ran. For a sample, each buffer's count is scaled to the grid and capped
    /// at the buffer's size (`sectors_of_slot`): CTAs that share inputs (a GEMM's panels)
    /// touch the same sectors, so a linear scale alone would overcount them.
    pub(super) fn counts(
        mut self,
        run: u64,
        total: u64,
        sectors_of_slot: impl Fn(u64) -> u64,
    ) -> (u64, u64) {
        let per_slot = SLOT_BITS - 5;
        let count = |v: &mut Vec<u64>| -> u64 {
            v.sort_unstable();
            v.dedup();
            v.chunk_by(|a, b| a >> per_slot == b >> per_slot)
                .map(|group| {
                    let n = group.len() as u64;
                    if run == total {
                        n
                    } else {
                        let scaled = (n as u128 * total as u128 / run as u128) as u64;
                        scaled.min(sectors_of_slot(group[0] >> per_slot)).max(n)
                    }
                })
                .sum()
        };
        (count(&mut self.loads), count(&mut self.stores))
    }
}

impl<'a> Tally<'a> {
    pub(super) fn new(code: &'a [super::isa::Instr], nthreads: usize) -> Self {
        let ncode = code.len();
        let nwarps = nthreads.div_ceil(32);
        Tally {
            code,
            ncode,
            nthreads,
            epoch: 0,
            reach: vec![Stamp::default(); ncode * nthreads],
            warp_max: vec![Stamp::default(); ncode * nwarps],
            warp_pc: vec![0; ncode],
            thread_pc: vec![0; ncode],
            log: Vec::new(),
            footprint: Footprint::default(),
            out: Counters::default(),
        }
    }

    fn next_epoch(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            // after 2^32 intervals: forget every stamp once rather than misread one
            self.reach.fill(Stamp::default());
            self.warp_max.fill(Stamp::default());
            self.epoch = 1;
        }
    }

    /// A CTA starts.
    pub(super) fn begin_cta(&mut self) {
        self.next_epoch();
        let n = self.nthreads as u64;
        self.out.ctas += 1;
        self.out.threads += n;
        self.out.warps += n.div_ceil(32);
    }

    /// A barrier completed, or the CTA ended: the requests of the interval are complete.
    pub(super) fn end_interval(&mut self) {
        self.flush();
        self.next_epoch();
    }

    /// An access of a warp collective (`ldmatrix`) that thread `t` takes part in at `pc`
    /// (the probe saw the thread reach it).
    pub(super) fn collective_access(
        &mut self,
        t: usize,
        pc: u32,
        space: Space,
        addr: u64,
        bytes: u32,
    ) {
        let n = self.reach[t * self.ncode + pc as usize].n;
        log_access(&mut self.log, t, pc, n, space, addr, bytes);
    }

    /// The probe of thread `t` (linear index in the CTA).
    pub(super) fn probe(&mut self, t: usize) -> ThreadProbe<'_, 'a> {
        ThreadProbe {
            row: t * self.ncode,
            warp_row: t / 32 * self.ncode,
            warp: (t / 32) as u32,
            lane: (t % 32) as u8,
            n: 0,
            tally: self,
        }
    }

    /// Turn the accesses of the interval into requests, sectors and wavefronts.
    fn flush(&mut self) {
        if self.log.is_empty() {
            return;
        }
        self.log.sort_unstable_by_key(Access::key);
        let mut log = std::mem::take(&mut self.log);
        let code = self.code;
        for group in log.chunk_by(|a, b| a.key() == b.key()) {
            let op = &code[group[0].pc as usize].op;
            match group[0].space {
                GLOBAL => {
                    let sectors = global_sectors(group);
                    let g = &mut self.out.global;
                    let fp = &mut self.footprint;
                    let (req, sec, set) = match op {
                        Op::Ld { .. } | Op::CpAsync { .. } => {
                            (&mut g.load_requests, &mut g.load_sectors, &mut fp.loads)
                        }
                        Op::St { .. } => {
                            (&mut g.store_requests, &mut g.store_sectors, &mut fp.stores)
                        }
                        _ => (
                            &mut g.atomic_requests,
                            &mut g.atomic_sectors,
                            &mut fp.stores,
                        ),
                    };
                    *req += 1;
                    *sec += sectors.len() as u64;
                    Footprint::push(set, &sectors);
                }
                _ => {
                    let (wavefronts, ideal) = shared_wavefronts(group);
                    let s = &mut self.out.shared;
                    let (req, wf) = match op {
                        Op::Ld { .. } | Op::Ldmatrix { .. } => {
                            (&mut s.load_requests, &mut s.load_wavefronts)
                        }
                        Op::St { .. } | Op::CpAsync { .. } => {
                            (&mut s.store_requests, &mut s.store_wavefronts)
                        }
                        _ => (&mut s.atomic_requests, &mut s.atomic_wavefronts),
                    };
                    *req += 1;
                    *wf += wavefronts;
                    s.ideal_wavefronts += ideal;
                }
            }
        }
        log.clear();
        self.log = log;
    }

    /// The counters of every CTA this worker ran, and the sectors they touched (the launch
    /// sets the DRAM counts from the union of every worker's footprint).
    pub(super) fn finish(mut self) -> (Counters, Footprint) {
        self.flush();
        let mut out = self.out;
        for (pc, ins) in self.code.iter().enumerate() {
            let c = classify(&ins.op);
            *out.warp_inst.slot(c) += self.warp_pc[pc];
            *out.thread_inst.slot(c) += self.thread_pc[pc];
            out.flops += flops(&ins.op) * self.thread_pc[pc];
            if let Op::Mma { ab, .. } = ins.op {
                let warps = self.warp_pc[pc];
                match ab {
                    Half::Bf16 => out.tensor.mma_m16n8k16_bf16 += warps,
                    Half::F16 => out.tensor.mma_m16n8k16_f16 += warps,
                }
                out.tensor.flops += warps * MMA_M16N8K16_FLOPS;
            }
        }
        (out, self.footprint)
    }
}

/// The distinct 32-byte sectors the lanes of one request touch.
fn global_sectors(group: &[Access]) -> Vec<u64> {
    let mut sectors: Vec<u64> = Vec::with_capacity(group.len());
    for a in group {
        let last = a.addr + a.bytes.max(1) as u64 - 1;
        sectors.extend(a.addr >> 5..=last >> 5);
    }
    sectors.sort_unstable();
    sectors.dedup();
    sectors
}

/// Wavefronts of one shared request, and its conflict-free minimum (see the module notes).
fn shared_wavefronts(group: &[Access]) -> (u64, u64) {
    let lanes_per_phase = match group[0].bytes {
        0..=4 => 32,
        5..=8 => 16,
        _ => 8,
    };
    // (phase, bank, word) of every word touched
    let mut words: Vec<(u8, u8, u64)> = Vec::with_capacity(group.len() * 4);
    for a in group {
        let phase = a.lane / lanes_per_phase;
        let last = a.addr + a.bytes.max(1) as u64 - 1;
        for w in a.addr / 4..=last / 4 {
            words.push((phase, (w % 32) as u8, w));
        }
    }
    words.sort_unstable();
    words.dedup();
    let (mut wavefronts, mut ideal) = (0u64, 0u64);
    for phase in words.chunk_by(|a, b| a.0 == b.0) {
        ideal += 1;
        let most = phase
            .chunk_by(|a, b| a.1 == b.1)
            .map(|bank| bank.len())
            .max()
            .unwrap_or(1);
        wavefronts += most as u64;
    }
    (wavefronts, ideal)
}

/// The counting probe of one thread.
pub(super) struct ThreadProbe<'t, 'a> {
    tally: &'t mut Tally<'a>,
    row: usize,
    warp_row: usize,
    warp: u32,
    lane: u8,
    /// the thread's instance number of the pc it last reached
    n: u32,
}

impl Probe for ThreadProbe<'_, '_> {
    #[inline]
    fn reach(&mut self, pc: u32) {
        let t = &mut *self.tally;
        let epoch = t.epoch;
        let s = &mut t.reach[self.row + pc as usize];
        if s.epoch != epoch {
            *s = Stamp { epoch, n: 0 };
        }
        s.n += 1;
        let n = s.n;
        self.n = n;
        let w = &mut t.warp_max[self.warp_row + pc as usize];
        if w.epoch != epoch || w.n < n {
            // lanes advance one instance at a time: this lane opens instance n of the warp
            *w = Stamp { epoch, n };
            t.warp_pc[pc as usize] += 1;
        }
    }

    #[inline]
    fn execute(&mut self, pc: u32) {
        self.tally.thread_pc[pc as usize] += 1;
    }

    #[inline]
    fn access(&mut self, pc: u32, space: Space, addr: u64, bytes: u32) {
        let t = self.warp as usize * 32 + self.lane as usize;
        log_access(&mut self.tally.log, t, pc, self.n, space, addr, bytes);
    }
}

/// Log thread `t`'s access of instance `n` of `pc` (global and shared accesses only).
#[inline]
fn log_access(
    log: &mut Vec<Access>,
    t: usize,
    pc: u32,
    n: u32,
    space: Space,
    addr: u64,
    bytes: u32,
) {
    let space = match space {
        Space::Global => GLOBAL,
        Space::Shared => SHARED,
        _ => return,
    };
    log.push(Access {
        warp: (t / 32) as u32,
        pc,
        n,
        lane: (t % 32) as u8,
        space,
        bytes: bytes.min(255) as u8,
        addr,
    });
}
