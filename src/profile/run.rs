//! Running the cases on the counting simulator (whole or sampled), the table and the JSON.

use super::cards::{occupancy, sm_limits, Occupancy, CARDS, SM_LIMITS};
use super::model::{
    model_launch, model_op, FlopPeak, LaunchInputs, LaunchModelled, Modelled, MODEL,
};
use super::ptxas::{KernelInfo, Ptxas};
use super::{SAMPLE_BUDGET_INST, SIM_MAX_BYTES, SIM_MAX_FLOPS};
use crate::backend::ptx_sim::profile::{Class, Counters, LaunchProfile, Sample};
use crate::backend::ptx_sim::{ProfileOptions, Profiler};
use crate::bench::cases::{cases_in, matmul_case_in, matmul_case_layout, OpCase, Scale, BENCH_OPS};
use crate::bench::tensor_core::{self, gemm_mma_case, half_type};
use crate::error::{BellaError, Result};
use crate::rng::Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// One launch's counters with what ptxas, the occupancy rules and the model add.
#[derive(Clone, Debug, Serialize)]
pub struct LaunchRow {
    /// The kernel's entry name in its PTX module.
    pub kernel: String,
    /// The PTX module (`kernels/<module>.ptx`).
    pub module: String,
    /// Grid size in CTAs (x, y, z).
    pub grid: [u32; 3],
    /// CTA size in threads (x, y, z).
    pub block: [u32; 3],
    /// static plus dynamic shared memory per CTA, bytes (from the launch)
    pub shared_bytes: u32,
    /// registers and static shared memory per arch from ptxas; null when unknown
    pub ptxas: BTreeMap<&'static str, Option<KernelInfo>>,
    /// blocks per SM per arch
    pub occupancy: BTreeMap<&'static str, Occupancy>,
    /// null when every CTA ran; else the CTAs run of the grid's (the counters are scaled)
    pub sample: Option<Sample>,
    /// The simulator's counters (scaled to the whole grid when sampled).
    pub counters: Counters,
    /// sectors × 32
    pub l2_bytes: u64,
    /// the DRAM model: distinct 32-byte sectors loaded + stored by the launch, × 32 (for a
    /// sampled launch, each buffer's scaled to the grid and capped at its size: an estimate)
    pub dram_bytes: u64,
    /// 32-byte sectors per global load request (4 for a warp's coalesced f32 loads; up to 32).
    pub sectors_per_load: f64,
    /// Shared-memory wavefronts per request (1 = no bank conflicts).
    pub shared_conflict_degree: f64,
    /// modelled (never measured) time of this launch per card: `a100`, `h100`, `h200`
    pub modelled: BTreeMap<&'static str, LaunchModelled>,
}

/// An op's totals over its launches.
#[derive(Clone, Debug, Serialize)]
pub struct Totals {
    /// The op's FLOPs by its formula (from the bench case).
    pub useful_flops: f64,
    /// FP32 operations the kernels executed (an FMA counts 2), plus the tensor-core FLOPs of
    /// their `mma` instructions (2·M·N·K each; also in `counters.tensor`).
    pub flops_executed: u64,
    /// The op's minimum DRAM traffic: its inputs read and outputs written once, bytes.
    pub min_bytes: f64,
    /// The launches' `l2_bytes`, summed.
    pub l2_bytes: u64,
    /// the launches' `dram_bytes`, summed
    pub dram_bytes: u64,
    /// The launches' counters, summed.
    pub counters: Counters,
    /// modelled (never measured) time per card, the sum of the launches': `a100`, `h100`,
    /// `h200`
    pub modelled: BTreeMap<&'static str, Modelled>,
}

/// How an op's launches were run.
#[derive(Clone, Debug, Serialize)]
pub struct Sampling {
    /// the CTA limit per launch the counted run had (null: every CTA of every launch)
    pub max_ctas_per_launch: Option<u64>,
    /// how the limit was chosen: `whole` (within the simulator budget), `forced`
    /// (`--max-ctas`), `budget` (from a probe run and the work budget)
    pub how: &'static str,
    /// launches that ran a sample
    pub sampled_launches: usize,
}

#[derive(Clone, Debug, Serialize)]
/// One op case's launches and totals.
pub struct OpProfile {
    /// The op's name (as in `bella bench`).
    pub op: String,
    /// The case's shape, in words.
    pub shape: String,
    /// Whether and how its launches were sampled.
    pub sampling: Sampling,
    /// wall seconds the simulator took for this case (inputs, probe and counted run)
    pub sim_seconds: f64,
    /// Every kernel launch the op made, in order.
    pub launches: Vec<LaunchRow>,
    /// Sums over the launches.
    pub totals: Totals,
}

#[derive(Serialize)]
/// What `bella profile` prints and writes as JSON (`--json FILE`).
pub struct Report {
    /// The command line that produced it.
    pub command: String,
    /// The bench scale whose shapes ran (`small`, `cpu`, `gpu`).
    pub scale: String,
    /// `--quick`: fewer, smaller cases.
    pub quick: bool,
    /// Whether ptxas was found (registers and occupancy are null without it).
    pub ptxas: bool,
    /// the SM count the simulated device reported (grids sized as on that card)
    pub sm_count: u32,
    /// what the modelled times of the cards whose SM count differs are based on
    pub launches_note: String,
    /// simulated thread instructions per sampled case (see `sampling`)
    pub sample_budget_inst: u64,
    /// The model's assumptions, in words.
    pub model: &'static str,
    /// The card figures the modelled times use.
    pub cards: &'static [super::cards::Card],
    /// The per-SM limits the occupancies use.
    pub sm_limits: &'static [super::cards::SmLimits],
    /// One entry per op case.
    pub profiles: Vec<OpProfile>,
}

/// What to profile.
pub struct Options {
    /// Op names, from `bella bench`'s list (the command line passes all of them by default).
    pub ops: Vec<String>,
    /// Fewer, smaller cases.
    pub quick: bool,
    /// Which of `bella bench`'s shape sets to take.
    pub scale: Scale,
    /// The command line, recorded in the report.
    pub command: String,
    /// the SM count the simulated device reports
    pub sm_count: u32,
    /// run at most this many CTAs of every launch (None: whole within the budget, else
    /// sampled from [`Options::budget_inst`])
    pub max_ctas: Option<u64>,
    /// simulated thread instructions a sampled case may take
    pub budget_inst: u64,
    /// the particle count of the SVGD cases (None: `bella bench`'s)
    pub particles: Option<usize>,
    /// the operand dtype of the ops that take 16-bit operands (`bella bench --dtype`); with
    /// bf16/f16 those are modelled against the card's `mma.sync` peak
    pub dtype: crate::dtype::DType,
    /// only the cases whose shape label contains this text (e.g. `shared x`)
    pub shape_filter: Option<String>,
}

impl Options {
    /// Every op at `scale`, on 132 SMs, the default budget.
    pub fn new(ops: Vec<String>, quick: bool, scale: Scale, command: String) -> Self {
        Options {
            ops,
            quick,
            scale,
            command,
            sm_count: super::DEFAULT_SM_COUNT,
            max_ctas: None,
            budget_inst: SAMPLE_BUDGET_INST,
            particles: None,
            dtype: crate::dtype::DType::F32,
            shape_filter: None,
        }
    }
}

fn ctas_of(grid: [u32; 3]) -> u64 {
    grid.iter().map(|&g| g as u64).product()
}

fn fp32_warp(c: &Counters) -> u64 {
    use Class::*;
    [Fp32Fma, Fp32Add, Fp32Mul, Fp32Other]
        .iter()
        .map(|&k| c.warp_inst.get(k))
        .sum()
}

fn row(p: LaunchProfile, ptxas: &mut Ptxas) -> LaunchRow {
    let threads = p.block.iter().product::<u32>();
    let mut info = BTreeMap::new();
    let mut occ = BTreeMap::new();
    for arch in ARCHS {
        let k = ptxas.info(&p.module, &p.kernel, arch);
        info.insert(arch, k);
        occ.insert(
            arch,
            occupancy(
                sm_limits(arch),
                threads,
                k.map(|k| k.registers),
                p.shared_bytes,
            ),
        );
    }
    let c = &p.counters;
    let inputs = LaunchInputs {
        ctas: ctas_of(p.grid),
        warp_inst: c.warp_inst.total(),
        fp32_warp_inst: fp32_warp(c),
        sfu_warp_inst: c.warp_inst.get(Class::Fp32Special),
        shared_wavefronts: c.shared.wavefronts(),
        l2_bytes: c.global.l2_bytes(),
        dram_bytes: c.global.dram_bytes(),
        tensor_flops: c.tensor.flops,
    };
    LaunchRow {
        l2_bytes: c.global.l2_bytes(),
        dram_bytes: c.global.dram_bytes(),
        sectors_per_load: c.global.sectors_per_load(),
        shared_conflict_degree: c.shared.conflict_degree(),
        modelled: CARDS
            .iter()
            .map(|card| (card.key, model_launch(card, &inputs)))
            .collect(),
        kernel: p.kernel,
        module: p.module,
        grid: p.grid,
        block: p.block,
        shared_bytes: p.shared_bytes,
        ptxas: info,
        occupancy: occ,
        sample: p.sample,
        counters: p.counters,
    }
}

/// The largest CTA limit `s >= floor` whose sampled run of the probed launches fits
/// `budget` thread instructions (None: every launch whole within it). Each launch costs
/// `min(s, ctas) × its average thread instructions per CTA`.
pub fn sample_limit(probe: &[LaunchProfile], budget: u64, floor: u64) -> Option<u64> {
    let launches: Vec<(u64, f64)> = probe
        .iter()
        .map(|p| {
            let ctas = ctas_of(p.grid).max(1);
            (ctas, p.counters.thread_inst.total() as f64 / ctas as f64)
        })
        .collect();
    let widest = launches.iter().map(|l| l.0).max().unwrap_or(1);
    let cost = |s: u64| -> f64 { launches.iter().map(|&(n, c)| n.min(s) as f64 * c).sum() };
    if cost(widest) <= budget as f64 {
        return None;
    }
    let (mut lo, mut hi) = (floor.max(1), widest);
    if cost(lo) > budget as f64 {
        return Some(lo);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if cost(mid) <= budget as f64 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

/// Run `body` once with counting on and return its launches.
fn counted(
    body: &mut crate::bench::cases::RunOnce,
    be: &Arc<dyn crate::Backend>,
    prof: &Profiler,
) -> Result<Vec<LaunchProfile>> {
    prof.take();
    body()?;
    be.synchronize()?;
    Ok(prof.take())
}

/// Run one case with counting on: whole, forced to `opts.max_ctas`, or sampled to the budget.
fn profile_case(
    case: &OpCase,
    opts: &Options,
    be: &Arc<dyn crate::Backend>,
    prof: &Profiler,
    rng: &mut Rng,
    ptxas: &mut Ptxas,
) -> Result<OpProfile> {
    let start = Instant::now();
    let whole = case.work.flops <= SIM_MAX_FLOPS && case.work.bytes <= SIM_MAX_BYTES;
    // the probe runs as many CTAs as there are simulator workers: the same wall time as one
    let probe = rayon::current_num_threads().max(1) as u64;
    let (how, first) = match (opts.max_ctas, whole) {
        (Some(m), _) => ("forced", Some(m)),
        (None, true) => ("whole", None),
        (None, false) => ("budget", Some(probe)),
    };
    prof.set_max_ctas(first);
    // what preparing the inputs launches (rbf_kernel before svgd_direction) runs under the
    // same limit and is not reported
    let mut body = case.prepare(be, rng)?;
    let mut raw = counted(&mut body, be, prof)?;
    let mut limit = first;
    if how == "budget" && raw.iter().any(|p| p.sample.is_some()) {
        let s = sample_limit(&raw, opts.budget_inst, probe);
        if s != Some(probe) {
            prof.set_max_ctas(s);
            raw = counted(&mut body, be, prof)?;
            limit = s;
        }
    }
    prof.set_max_ctas(None);
    let launches: Vec<LaunchRow> = raw.into_iter().map(|p| row(p, ptxas)).collect();
    let mut total = Counters::default();
    for l in &launches {
        total += &l.counters;
    }
    let modelled = CARDS
        .iter()
        .map(|c| {
            let ls: Vec<&LaunchModelled> = launches.iter().map(|l| &l.modelled[c.key]).collect();
            let peak = if half_type(case.op).is_some() || opts.dtype.is_half() {
                FlopPeak::MmaSync
            } else {
                FlopPeak::Fp32
            };
            (
                c.key,
                model_op(c, &ls, case.work.flops, case.work.bytes, peak),
            )
        })
        .collect();
    let sampled_launches = launches.iter().filter(|l| l.sample.is_some()).count();
    Ok(OpProfile {
        op: case.op.to_string(),
        shape: case.shape.clone(),
        sampling: Sampling {
            max_ctas_per_launch: if sampled_launches > 0 { limit } else { None },
            how: if sampled_launches > 0 { how } else { "whole" },
            sampled_launches,
        },
        sim_seconds: start.elapsed().as_secs_f64(),
        totals: Totals {
            useful_flops: case.work.flops,
            flops_executed: total.flops + total.tensor.flops,
            min_bytes: case.work.bytes,
            l2_bytes: total.global.l2_bytes(),
            dram_bytes: total.global.dram_bytes(),
            counters: total,
            modelled,
        },
        launches,
    })
}

/// The cases of `op` profiled at `scale`: `bella bench`'s, plus at `--scale gpu` the single
/// 4096³ GEMM of issue 11's targets next to bench's batched one (with 16-bit operands in all
/// four `trans_a` / `trans_b` layouts).
pub fn profile_cases(
    op: &str,
    scale: Scale,
    quick: bool,
    particles: Option<usize>,
    dtype: crate::dtype::DType,
) -> Vec<OpCase> {
    const SVGD_OPS: [&str; 5] = [
        "pairwise_sqdist",
        "rbf_kernel",
        "svgd_direction",
        "svgd_step",
        "svgd_step_fused",
    ];
    if let (Some(k), Some(svgd_op)) = (particles, SVGD_OPS.iter().find(|o| **o == op)) {
        let d = crate::bench::cases::target_svgd_shape(scale).1;
        let d = if quick && scale != Scale::Small {
            d / 4
        } else {
            d
        };
        return vec![crate::bench::cases::svgd_case(svgd_op, k, d)];
    }
    let mut v = cases_in(op, scale, quick, dtype);
    if op == "matmul" && scale == Scale::Gpu {
        v.push(matmul_case_in(1, 4096, 4096, 4096, dtype));
        // 16-bit operands: the tensor-core GEMM's other operand layouts too (select one
        // with --shape "(no trans)", "(trans_a)" or "(trans_a, trans_b)")
        if dtype.is_half() {
            for (ta, tb) in [(false, false), (true, false), (true, true)] {
                v.push(matmul_case_layout(1, 4096, 4096, 4096, dtype, ta, tb));
            }
        }
    }
    v
}

/// Profile the ops of `opts`; `progress` gets the table as it is made.
pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    if let Some(o) = opts
        .ops
        .iter()
        .find(|o| !BENCH_OPS.contains(&o.as_str()) && half_type(o).is_none())
    {
        return Err(BellaError::Unknown {
            what: "profile op",
            name: o.clone(),
        });
    }
    let (be, prof) = crate::backend::ptx_sim::open_profiled_with(ProfileOptions {
        sm_count: opts.sm_count,
        max_ctas_per_launch: None,
    })?;
    let mut ptxas = Ptxas::new();
    progress(&format!(
        "registers / static shared memory: {}",
        if ptxas.available() {
            "from ptxas -v"
        } else {
            "unknown (ptxas not found; occupancy is an upper bound, marked ≤)"
        }
    ));
    let launches_note = launches_note(opts.sm_count);
    progress(&launches_note);
    progress(&format!(
        "sampling: {}",
        match opts.max_ctas {
            Some(m) => format!(
                "every launch runs at most {m} CTAs (--max-ctas), counters scaled to the grid"
            ),
            None => format!(
                "cases past {SIM_MAX_FLOPS:.0e} useful FLOPs or {} minimum bytes run an evenly \
                 strided sample of each launch's CTAs, as many as fit {:.1e} simulated thread \
                 instructions per case (after a probe of {} CTAs per launch), counters scaled \
                 to the grid; sampled launches show `run/total` CTAs",
                bytes(SIM_MAX_BYTES),
                opts.budget_inst as f64,
                rayon::current_num_threads().max(1)
            ),
        }
    ));
    progress(LEGEND);
    let mut rng = Rng::new(1);
    let mut report = Report {
        command: opts.command.clone(),
        scale: format!("{:?}", opts.scale).to_lowercase(),
        quick: opts.quick,
        ptxas: ptxas.available(),
        sm_count: opts.sm_count,
        launches_note,
        sample_budget_inst: opts.budget_inst,
        model: MODEL,
        cards: &CARDS,
        sm_limits: &SM_LIMITS,
        profiles: Vec::new(),
    };
    for op in &opts.ops {
        let cases = match half_type(op) {
            Some(dtype) => vec![gemm_mma_case(
                be.clone(),
                dtype,
                tensor_core::size(opts.scale),
            )],
            None => profile_cases(op, opts.scale, opts.quick, opts.particles, opts.dtype),
        };
        let be: Arc<dyn crate::Backend> = be.clone();
        let wanted = |c: &OpCase| {
            opts.shape_filter
                .as_ref()
                .is_none_or(|f| c.shape.contains(f))
        };
        for case in cases.into_iter().filter(wanted) {
            let p = profile_case(&case, opts, &be, &prof, &mut rng, &mut ptxas)?;
            for line in table(&p) {
                progress(&line);
            }
            report.profiles.push(p);
        }
    }
    Ok(report)
}

/// Which card the launches were sized for, and what that means for the others.
fn launches_note(sm_count: u32) -> String {
    let same: Vec<&str> = CARDS
        .iter()
        .filter(|c| c.sms == sm_count)
        .map(|c| c.key)
        .collect();
    let other: Vec<String> = CARDS
        .iter()
        .filter(|c| c.sms != sm_count)
        .map(|c| format!("{} ({} SMs)", c.key, c.sms))
        .collect();
    let mut s = format!(
        "launches sized for {sm_count} SMs (the simulated device reports {sm_count}){}",
        if same.is_empty() {
            String::new()
        } else {
            format!(": as on {}", same.join(", "))
        }
    );
    if !other.is_empty() {
        s += &format!(
            "; the modelled {} figures use these same launches, spread over that card's SMs \
             (`--sm-count N` sizes them for another card)",
            other.join(", ")
        );
    }
    s
}

impl Report {
    /// Write the report as pretty-printed JSON to `path`; [`BellaError::Io`] on failure.
    pub fn write_json(&self, path: &str) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| BellaError::io(format!("profile json: {e}")))?;
        std::fs::write(path, text).map_err(|e| BellaError::io(format!("{path}: {e}")))
    }
}

fn bytes(b: f64) -> String {
    match b {
        b if b >= 1e9 => format!("{:.2} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.2} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
        b => format!("{b:.0} B"),
    }
}

fn big(n: f64) -> String {
    match n {
        n if n >= 1e12 => format!("{:.2}T", n / 1e12),
        n if n >= 1e9 => format!("{:.2}G", n / 1e9),
        n if n >= 1e6 => format!("{:.2}M", n / 1e6),
        n if n >= 1e4 => format!("{:.1}k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

/// What the columns hold.
pub const LEGEND: &str = "columns: ctas = CTAs run / in the grid (`all`: the whole grid ran; \
else a sample, counters scaled to the grid); regs = registers sm_80/sm_90 and smem = static \
shared bytes (ptxas); o80/o90 = blocks per SM (occupancy) on sm_80/sm_90; w.* = warp \
instructions: fp32 (FMA/add/mul/other/special), int (integer/convert/move), ldst (every \
load/store/atomic), ctrl (branches), bar (barriers, warp collectives); flops = FP32 FLOPs \
executed; gld/gst = global load / store requests / 32-byte sectors; l2_bytes = all sectors × \
32; dram = distinct sectors loaded + stored × 32 (the DRAM model: an L2 holding the launch's \
footprint, a lower bound; ~: a sampled launch's, scaled per buffer and capped at its size, \
an estimate); shm = shared requests / wavefronts / conflict degree (wavefronts \
per request); modelled us = the launch's modelled time on a100/h100/h200, lim = the h100 \
limiter";

const W: [usize; 21] = [
    16, 10, 11, 5, 7, 6, 4, 4, 8, 8, 8, 8, 8, 9, 13, 12, 9, 9, 14, 20, 6,
];

fn line(cells: &[String]) -> String {
    cells
        .iter()
        .zip(W)
        .map(|(c, w)| format!("{c:>w$}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The column names (see [`LEGEND`]).
pub fn header() -> String {
    let h = [
        "kernel",
        "grid",
        "ctas",
        "block",
        "regs",
        "smem",
        "o80",
        "o90",
        "w.fp32",
        "w.int",
        "w.ldst",
        "w.ctrl",
        "w.bar",
        "flops",
        "gld req/sec",
        "gst req/s",
        "l2_bytes",
        "dram",
        "shm r/wf/deg",
        "modelled us a/h1/h2",
        "lim",
    ];
    line(&h.map(String::from))
}

fn occ_cell(o: &Occupancy) -> String {
    if o.exact {
        o.blocks_per_sm.to_string()
    } else {
        format!("≤{}", o.blocks_per_sm)
    }
}

fn counter_cells(c: &Counters) -> Vec<String> {
    use Class::*;
    let w = |cs: &[Class]| big(cs.iter().map(|&k| c.warp_inst.get(k)).sum::<u64>() as f64);
    vec![
        w(&[Fp32Fma, Fp32Add, Fp32Mul, Fp32Other, Fp32Special]),
        w(&[Integer, Convert, Move]),
        w(&[
            LdGlobal, StGlobal, LdShared, StShared, LdParam, LdLocal, StLocal, LdGeneric,
            StGeneric, Atomic,
        ]),
        w(&[Control]),
        w(&[Barrier, Warp]),
        big(c.flops as f64),
        format!(
            "{}/{}",
            big(c.global.load_requests as f64),
            big(c.global.load_sectors as f64)
        ),
        format!(
            "{}/{}",
            big(c.global.store_requests as f64),
            big(c.global.store_sectors as f64)
        ),
        big(c.global.l2_bytes() as f64),
        big(c.global.dram_bytes() as f64),
        format!(
            "{}/{}/{:.1}",
            big(c.shared.requests() as f64),
            big(c.shared.wavefronts() as f64),
            c.shared.conflict_degree()
        ),
    ]
}

fn sample_cell(s: &Option<Sample>) -> String {
    match s {
        None => "all".into(),
        Some(s) => format!("{}/{}", s.ctas_run, s.ctas_total),
    }
}

/// The table lines of one op: a title, a row per launch, a total and the modelled times.
pub fn table(p: &OpProfile) -> Vec<String> {
    let t = &p.totals;
    let mut out = vec![format!(
        "\n{} — {}: useful {} FLOP, minimum {}{}",
        p.op,
        p.shape,
        big(t.useful_flops),
        bytes(t.min_bytes),
        match p.sampling.max_ctas_per_launch {
            Some(m) if p.sampling.sampled_launches > 0 => format!(
                "; SAMPLED ({}): {} of {} launches ran at most {m} CTAs, counts scaled to the grid",
                p.sampling.how,
                p.sampling.sampled_launches,
                p.launches.len()
            ),
            _ => String::new(),
        }
    )];
    out.push(header());
    for l in &p.launches {
        let info = |arch| l.ptxas[arch];
        let regs = match (info("sm_80"), info("sm_90")) {
            (Some(a), Some(b)) => format!("{}/{}", a.registers, b.registers),
            _ => "unknown".into(),
        };
        let smem = info("sm_80")
            .map(|k| k.smem.to_string())
            .unwrap_or_else(|| "unknown".into());
        let mut cells = vec![
            l.kernel.clone(),
            format!("{}x{}x{}", l.grid[0], l.grid[1], l.grid[2]),
            sample_cell(&l.sample),
            l.block[0].to_string(),
            regs,
            smem,
            occ_cell(&l.occupancy["sm_80"]),
            occ_cell(&l.occupancy["sm_90"]),
        ];
        cells.extend(counter_cells(&l.counters));
        if l.sample.is_some() {
            cells[17] = format!("~{}", cells[17]);
        }
        let us: Vec<String> = CARDS.iter().map(|c| sig3(l.modelled[c.key].us)).collect();
        cells.push(us.join("/"));
        cells.push(l.modelled["h100"].limiter.to_string());
        out.push(line(&cells));
    }
    let mut cells = vec![
        "total".to_string(),
        format!("{} launch", p.launches.len()),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ];
    cells.extend(counter_cells(&t.counters));
    if p.sampling.sampled_launches > 0 {
        cells[17] = format!("~{}", cells[17]);
    }
    let us: Vec<String> = CARDS.iter().map(|c| sig3(t.modelled[c.key].us)).collect();
    cells.push(us.join("/"));
    cells.push(t.modelled["h100"].limiter.to_string());
    out.push(line(&cells));
    let tensor = t.counters.tensor.flops;
    let executed = if tensor > 0 {
        format!(
            "{} (fp32 {} + tensor {})",
            big(t.flops_executed as f64),
            big(t.counters.flops as f64),
            big(tensor as f64)
        )
    } else {
        big(t.flops_executed as f64)
    };
    out.push(format!(
        "  flops executed / useful = {} / {} ({:.2}x); l2_bytes / minimum bytes = {} / {} \
         ({:.2}x); dram (distinct sectors) / minimum = {:.2}x",
        executed,
        big(t.useful_flops),
        ratio(t.flops_executed as f64, t.useful_flops),
        bytes(t.l2_bytes as f64),
        bytes(t.min_bytes),
        ratio(t.l2_bytes as f64, t.min_bytes),
        ratio(t.dram_bytes as f64, t.min_bytes),
    ));
    let cards: Vec<String> = CARDS
        .iter()
        .map(|c| {
            let m = &t.modelled[c.key];
            format!(
                "{} {} us ({}, {:.1}% of roofline)",
                c.key,
                sig3(m.us),
                m.limiter,
                m.roofline_pct
            )
        })
        .collect();
    out.push(format!("  modelled: {}", cards.join("; ")));
    out
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Three significant digits.
fn sig3(x: f64) -> String {
    if x <= 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (2 - x.log10().floor() as i32).max(0) as usize;
    format!("{x:.digits$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ptx_sim::profile::InstCounts;

    fn launch(ctas: u32, inst_per_cta: u64) -> LaunchProfile {
        let mut thread_inst = InstCounts::default();
        thread_inst.add(Class::Fp32Fma, inst_per_cta * ctas as u64);
        LaunchProfile {
            module: "m".into(),
            kernel: "k".into(),
            grid: [ctas, 1, 1],
            block: [256, 1, 1],
            shared_bytes: 0,
            counters: Counters {
                thread_inst,
                ..Default::default()
            },
            sample: None,
        }
    }

    #[test]
    fn the_sample_limit_fits_the_budget() {
        let probe = [launch(1000, 100), launch(10, 1000)];
        // everything: 1000·100 + 10·1000 = 110 000
        assert_eq!(sample_limit(&probe, 110_000, 2), None);
        // s ≥ 10: 100 s + 10 000 ≤ 30 000 → s = 200
        assert_eq!(sample_limit(&probe, 30_000, 2), Some(200));
        // below the floor's cost: the floor
        assert_eq!(sample_limit(&probe, 10, 2), Some(2));
    }
}
