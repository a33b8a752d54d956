//! Running the cases on the counting simulator, the table and the JSON.

use super::cards::{occupancy, sm_limits, Occupancy, CARDS, SM_LIMITS};
use super::model::{model, Modelled, PipeInputs};
use super::ptxas::{KernelInfo, Ptxas};
use super::{SIM_MAX_BYTES, SIM_MAX_FLOPS};
use crate::backend::ptx_sim::profile::{Class, Counters, LaunchProfile};
use crate::bench::cases::{cases, OpCase, Scale, BENCH_OPS};
use crate::error::{BellaError, Result};
use crate::rng::Rng;
use serde::Serialize;
use std::collections::BTreeMap;

const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// One launch's counters with what ptxas and the occupancy rules add.
#[derive(Clone, Debug, Serialize)]
pub struct LaunchRow {
    pub kernel: String,
    pub module: String,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// static plus dynamic shared memory per CTA, bytes (from the launch)
    pub shared_bytes: u32,
    /// registers and static shared memory per arch from ptxas; null when unknown
    pub ptxas: BTreeMap<&'static str, Option<KernelInfo>>,
    /// blocks per SM per arch
    pub occupancy: BTreeMap<&'static str, Occupancy>,
    pub counters: Counters,
    /// sectors × 32
    pub l2_bytes: u64,
    pub sectors_per_load: f64,
    pub shared_conflict_degree: f64,
}

/// An op's totals over its launches.
#[derive(Clone, Debug, Serialize)]
pub struct Totals {
    pub useful_flops: f64,
    pub flops_executed: u64,
    pub min_bytes: f64,
    pub l2_bytes: u64,
    pub counters: Counters,
    /// modelled (never measured) time per card: `a100`, `h100`, `h200`
    pub modelled: BTreeMap<&'static str, Modelled>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OpProfile {
    pub op: String,
    pub shape: String,
    pub launches: Vec<LaunchRow>,
    pub totals: Totals,
}

#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub op: String,
    pub shape: String,
    pub reason: String,
}

#[derive(Serialize)]
pub struct Report {
    pub command: String,
    pub scale: String,
    pub quick: bool,
    pub ptxas: bool,
    pub model: &'static str,
    pub cards: &'static [super::cards::Card],
    pub sm_limits: &'static [super::cards::SmLimits],
    pub profiles: Vec<OpProfile>,
    pub skipped: Vec<Skipped>,
}

/// What to profile.
pub struct Options {
    pub ops: Vec<String>,
    pub quick: bool,
    pub scale: Scale,
    pub command: String,
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
    LaunchRow {
        l2_bytes: p.counters.global.l2_bytes(),
        sectors_per_load: p.counters.global.sectors_per_load(),
        shared_conflict_degree: p.counters.shared.conflict_degree(),
        kernel: p.kernel,
        module: p.module,
        grid: p.grid,
        block: p.block,
        shared_bytes: p.shared_bytes,
        ptxas: info,
        occupancy: occ,
        counters: p.counters,
    }
}

fn fp32_warp(c: &Counters) -> u64 {
    use Class::*;
    [Fp32Fma, Fp32Add, Fp32Mul, Fp32Other]
        .iter()
        .map(|&k| c.warp_inst.get(k))
        .sum()
}

/// Run one case once with counting on.
fn profile_case(
    case: &OpCase,
    be: &std::sync::Arc<dyn crate::Backend>,
    prof: &crate::backend::ptx_sim::Profiler,
    rng: &mut Rng,
    ptxas: &mut Ptxas,
) -> Result<OpProfile> {
    let mut body = case.prepare(be, rng)?;
    prof.take(); // what preparing the inputs launched (rbf_kernel before svgd_direction)
    body()?;
    be.synchronize()?;
    let launches: Vec<LaunchRow> = prof.take().into_iter().map(|p| row(p, ptxas)).collect();
    let mut total = Counters::default();
    for l in &launches {
        total += &l.counters;
    }
    let inputs = PipeInputs {
        warp_inst: total.warp_inst.total(),
        fp32_warp_inst: fp32_warp(&total),
        sfu_warp_inst: total.warp_inst.get(Class::Fp32Special),
        shared_wavefronts: total.shared.wavefronts(),
        l2_bytes: total.global.l2_bytes(),
        min_bytes: case.work.bytes,
        useful_flops: case.work.flops,
    };
    let modelled = CARDS.iter().map(|c| (c.key, model(c, &inputs))).collect();
    Ok(OpProfile {
        op: case.op.to_string(),
        shape: case.shape.clone(),
        totals: Totals {
            useful_flops: case.work.flops,
            flops_executed: total.flops,
            min_bytes: case.work.bytes,
            l2_bytes: total.global.l2_bytes(),
            counters: total,
            modelled,
        },
        launches,
    })
}

/// Profile the ops of `opts`; `progress` gets the table as it is made.
pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    if let Some(o) = opts.ops.iter().find(|o| !BENCH_OPS.contains(&o.as_str())) {
        return Err(BellaError::Unknown {
            what: "profile op",
            name: o.clone(),
        });
    }
    let (be, prof) = crate::backend::ptx_sim::open_profiled()?;
    let mut ptxas = Ptxas::new();
    progress(&format!(
        "registers / static shared memory: {}",
        if ptxas.available() {
            "from ptxas -v"
        } else {
            "unknown (ptxas not found; occupancy is an upper bound, marked ≤)"
        }
    ));
    progress(LEGEND);
    let mut rng = Rng::new(1);
    let mut report = Report {
        command: opts.command.clone(),
        scale: format!("{:?}", opts.scale).to_lowercase(),
        quick: opts.quick,
        ptxas: ptxas.available(),
        model: "max of pipeline times at public peaks: issue, fp32, sfu, shared wavefronts, \
                L2 bytes, DRAM = the op's minimum bytes (each byte from DRAM once, re-reads hit \
                L2); all SMs busy, no launch latency",
        cards: &CARDS,
        sm_limits: &SM_LIMITS,
        profiles: Vec::new(),
        skipped: Vec::new(),
    };
    for op in &opts.ops {
        for case in cases(op, opts.scale, opts.quick) {
            if case.work.flops > SIM_MAX_FLOPS || case.work.bytes > SIM_MAX_BYTES {
                let reason = format!(
                    "{:.2e} useful FLOPs, {} minimum bytes: past the simulator's budget \
                     ({SIM_MAX_FLOPS:.0e} FLOPs, {}); no sampling yet",
                    case.work.flops,
                    bytes(case.work.bytes),
                    bytes(SIM_MAX_BYTES)
                );
                progress(&format!("{} — {}: skipped: {reason}", case.op, case.shape));
                report.skipped.push(Skipped {
                    op: case.op.into(),
                    shape: case.shape.clone(),
                    reason,
                });
                continue;
            }
            let p = profile_case(&case, &be, &prof, &mut rng, &mut ptxas)?;
            for line in table(&p) {
                progress(&line);
            }
            report.profiles.push(p);
        }
    }
    Ok(report)
}

impl Report {
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
        n if n >= 1e9 => format!("{:.2}G", n / 1e9),
        n if n >= 1e6 => format!("{:.2}M", n / 1e6),
        n if n >= 1e4 => format!("{:.1}k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

/// What the columns hold.
pub const LEGEND: &str = "columns: regs = registers sm_80/sm_90 and smem = static shared bytes \
(ptxas); o80/o90 = blocks per SM (occupancy) on sm_80/sm_90; w.* = warp instructions: fp32 \
(FMA/add/mul/other/special), int (integer/convert/move), ldst (every load/store/atomic), ctrl \
(branches), bar (barriers, warp collectives); flops = FP32 FLOPs executed; gld/gst = global load \
/ store requests / 32-byte sectors; l2_bytes = all sectors × 32; shm = shared requests / \
wavefronts / conflict degree (wavefronts per request)";

const W: [usize; 17] = [16, 12, 6, 7, 6, 4, 4, 8, 8, 8, 8, 8, 12, 12, 9, 12, 10];

fn line(cells: &[String]) -> String {
    cells
        .iter()
        .zip(W)
        .map(|(c, w)| format!("{c:>w$}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The column names (`w.` = warp instructions, `gld`/`gst` = global load/store requests /
/// sectors, `shm` = shared requests / wavefronts / conflict degree).
pub fn header() -> String {
    let h = [
        "kernel",
        "grid",
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
        "shm r/wf/deg",
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
        format!(
            "{}/{}/{:.1}",
            big(c.shared.requests() as f64),
            big(c.shared.wavefronts() as f64),
            c.shared.conflict_degree()
        ),
    ]
}

/// The table lines of one op: a title, a row per launch, a total and the modelled times.
pub fn table(p: &OpProfile) -> Vec<String> {
    let t = &p.totals;
    let mut out = vec![format!(
        "\n{} — {}: useful {} FLOP, minimum {}",
        p.op,
        p.shape,
        big(t.useful_flops),
        bytes(t.min_bytes)
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
            l.block[0].to_string(),
            regs,
            smem,
            occ_cell(&l.occupancy["sm_80"]),
            occ_cell(&l.occupancy["sm_90"]),
        ];
        cells.extend(counter_cells(&l.counters));
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
    ];
    cells.extend(counter_cells(&t.counters));
    out.push(line(&cells));
    out.push(format!(
        "  flops executed / useful = {} / {} ({:.2}x); l2_bytes / minimum bytes = {} / {} ({:.2}x)",
        big(t.flops_executed as f64),
        big(t.useful_flops),
        ratio(t.flops_executed as f64, t.useful_flops),
        bytes(t.l2_bytes as f64),
        bytes(t.min_bytes),
        ratio(t.l2_bytes as f64, t.min_bytes),
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
