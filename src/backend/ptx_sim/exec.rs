//! Grid, CTA and warp structure. CTAs run in parallel (rayon); inside a CTA each thread runs
//! alone until it reaches a barrier, a warp collective or its end. Then the collectives of
//! each warp run with all their lanes at once, and when every live thread waits at the
//! barrier it completes. Divergence a GPU would hang on or give undefined results for (lanes
//! of a collective at different instructions, threads at different `bar.sync`s) is an error.
//!
//! [`launch_counted`] runs the same way with the counters of `profile` switched on.

use super::isa::{Addr, Half, Kernel, Op, Reg, ShflMode, Space, Special, Src, VoteMode};
use super::memory::{check_alignment, thread_name, GlobalMap, LocalMem, SharedMem};
use super::profile::{Counters, Footprint, NoProbe, Sample, Tally};
use super::thread::{self, pred, val, Stop, ThreadMem};
use super::warp_matrix::{self, ldmatrix_position};
use rayon::prelude::*;

/// Everything one launch needs.
pub struct Launch<'a> {
    pub kernel: &'a Kernel,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Static plus dynamic shared memory of one CTA, in bytes.
    pub shared_bytes: u32,
    pub params: Vec<u8>,
    pub global: GlobalMap,
}

/// Run every CTA of the grid; the first error stops the launch.
pub fn launch(l: &Launch) -> Result<(), String> {
    let ctas = l.grid.iter().map(|&g| g as u64).product::<u64>();
    (0..ctas)
        .into_par_iter()
        .try_for_each_init(|| Cta::new(l, false), |cta, id| cta.run(id))
}

/// [`launch`] with counting on: the counters of every CTA, summed (see `profile`), with
/// the launch's distinct sectors as its DRAM counts. With `max_ctas` below the grid's CTA
/// count, only that many CTAs run, evenly strided over the linear CTA index, and the
/// counters are scaled to the whole grid.
pub fn launch_counted(
    l: &Launch,
    max_ctas: Option<u64>,
) -> Result<(Counters, Option<Sample>), String> {
    let total = l.grid.iter().map(|&g| g as u64).product::<u64>();
    let run = max_ctas.map_or(total, |m| m.clamp(1, total.max(1)));
    let id_of = |i: u64| (i as u128 * total as u128 / run as u128) as u64;
    let (mut counters, footprint) = (0..run)
        .into_par_iter()
        .try_fold(
            || Cta::new(l, true),
            |mut cta, i| cta.run(id_of(i)).map(|_| cta),
        )
        .map(|cta| cta.map(Cta::into_counters))
        .try_reduce(
            || (Counters::default(), Footprint::default()),
            |(mut a, fa), (b, fb)| {
                a += &b;
                Ok((a, fa.merge(fb)))
            },
        )?;
    let (loads, stores) = footprint.counts(run, total, |slot| l.global.sectors_of_slot(slot));
    counters.global.dram_load_sectors = loads;
    counters.global.dram_store_sectors = stores;
    if run == total {
        return Ok((counters, None));
    }
    let threads = l.block.iter().map(|&b| b as u64).product::<u64>();
    counters.scale_sample(run, total, threads.div_ceil(32), threads);
    Ok((
        counters,
        Some(Sample {
            ctas_run: run,
            ctas_total: total,
        }),
    ))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ready,
    AtBarrier,
    AtCollective,
    Exited,
}

use warp_matrix::WARP;

/// The machine state of one CTA (reused for the next CTA the same worker runs).
struct Cta<'a> {
    l: &'a Launch<'a>,
    nregs: usize,
    nthreads: usize,
    ctaid: [u32; 3],
    regs: Vec<u64>,
    pc: Vec<u32>,
    state: Vec<State>,
    trips: Vec<u64>,
    shared: SharedMem,
    local: LocalMem,
    /// The counters, in counting mode.
    tally: Option<Tally<'a>>,
}

impl<'a> Cta<'a> {
    fn new(l: &'a Launch<'a>, counting: bool) -> Self {
        let nthreads = l.block.iter().map(|&b| b as usize).product();
        let nregs = l.kernel.nregs as usize;
        Cta {
            l,
            nregs,
            nthreads,
            ctaid: [0; 3],
            regs: vec![0; nregs * nthreads],
            pc: vec![0; nthreads],
            state: vec![State::Ready; nthreads],
            trips: vec![0; nthreads],
            shared: SharedMem::new(l.shared_bytes, l.block),
            local: LocalMem::new(l.kernel.local_bytes, nthreads),
            tally: counting.then(|| Tally::new(&l.kernel.code, nthreads)),
        }
    }

    /// The counters of the CTAs run and the sectors they touched (empty when not counting).
    fn into_counters(self) -> (Counters, Footprint) {
        self.tally.map(Tally::finish).unwrap_or_default()
    }

    /// `kernel `k` line N `text`: thread (x,y,z) of CTA (x,y,z): what`
    fn fault(&self, t: usize, msg: &str) -> String {
        let k = self.l.kernel;
        let line = k.code[self.pc[t] as usize].line;
        let [cx, cy, cz] = self.ctaid;
        format!(
            "kernel `{}` line {line} `{}`: thread {} of CTA ({cx},{cy},{cz}): {msg}",
            k.name,
            k.line_text(line),
            thread_name(t as u32, self.l.block)
        )
    }

    fn run(&mut self, id: u64) -> Result<(), String> {
        let [gx, gy, _] = self.l.grid;
        let (gx, gy) = (gx as u64, gy as u64);
        self.ctaid = [
            (id % gx) as u32,
            (id / gx % gy) as u32,
            (id / (gx * gy)) as u32,
        ];
        self.start_threads();
        self.shared.begin_cta()?;
        if self.l.kernel.local_bytes > 0 {
            self.local.clear();
        }
        if let Some(t) = &mut self.tally {
            t.begin_cta();
        }
        loop {
            for t in 0..self.nthreads {
                if self.state[t] == State::Ready {
                    self.run_thread(t)?;
                }
            }
            if self.run_collectives()? {
                continue;
            }
            let more = self.complete_barrier()?;
            if let Some(t) = &mut self.tally {
                t.end_interval();
            }
            if !more {
                return Ok(());
            }
        }
    }

    fn start_threads(&mut self) {
        let [bx, by, bz] = self.l.block;
        let [cx, cy, cz] = self.ctaid;
        let [gx, gy, gz] = self.l.grid;
        let nwarps = self.nthreads.div_ceil(WARP) as u64;
        self.regs.fill(0);
        for t in 0..self.nthreads {
            let r = &mut self.regs[t * self.nregs..(t + 1) * self.nregs];
            let t32 = t as u32;
            let special = |s: Special| -> u64 {
                (match s {
                    Special::TidX => t32 % bx,
                    Special::TidY => t32 / bx % by,
                    Special::TidZ => t32 / (bx * by),
                    Special::NtidX => bx,
                    Special::NtidY => by,
                    Special::NtidZ => bz,
                    Special::CtaidX => cx,
                    Special::CtaidY => cy,
                    Special::CtaidZ => cz,
                    Special::NctaidX => gx,
                    Special::NctaidY => gy,
                    Special::NctaidZ => gz,
                    Special::LaneId => t32 % WARP as u32,
                    Special::WarpId => t32 / WARP as u32,
                    Special::NWarpId => nwarps as u32,
                }) as u64
            };
            for s in Special::ALL {
                r[s.reg() as usize] = special(s);
            }
        }
        self.pc.fill(0);
        self.state.fill(State::Ready);
        self.trips.fill(0);
    }

    fn run_thread(&mut self, t: usize) -> Result<(), String> {
        let l = self.l;
        let regs = &mut self.regs[t * self.nregs..(t + 1) * self.nregs];
        let mut mem = ThreadMem {
            global: &l.global,
            shared: &mut self.shared,
            local: &mut self.local,
            params: &l.params,
            thread: t as u32,
        };
        let (code, pc, trips) = (&l.kernel.code, &mut self.pc[t], &mut self.trips[t]);
        let stopped = match &mut self.tally {
            None => thread::run(code, regs, pc, trips, &mut mem, &mut NoProbe),
            Some(tally) => thread::run(code, regs, pc, trips, &mut mem, &mut tally.probe(t)),
        };
        match stopped {
            Ok(stop) => {
                self.state[t] = match stop {
                    Stop::Barrier => State::AtBarrier,
                    Stop::Collective => State::AtCollective,
                    Stop::Exit => State::Exited,
                };
                Ok(())
            }
            Err(msg) => Err(self.fault(t, &msg)),
        }
    }

    fn reg_file(&self, t: usize) -> &[u64] {
        &self.regs[t * self.nregs..(t + 1) * self.nregs]
    }

    /// Run the warp collectives whose lanes have all arrived. Returns whether any ran (or
    /// was left for lanes that are running again).
    fn run_collectives(&mut self) -> Result<bool, String> {
        let mut ran = false;
        for w0 in (0..self.nthreads).step_by(WARP) {
            let lanes = (self.nthreads - w0).min(WARP);
            for lane in 0..lanes {
                if self.state[w0 + lane] == State::AtCollective {
                    ran |= self.run_collective(w0, lanes, w0 + lane)?;
                }
            }
        }
        Ok(ran)
    }

    /// Run the collective `leader` waits at, with the lanes of its membermask. Returns
    /// false when it must wait for lanes that run again (see [`Cta::run_warp_wide`]).
    fn run_collective(&mut self, w0: usize, lanes: usize, leader: usize) -> Result<bool, String> {
        let code = &self.l.kernel.code;
        let pc = self.pc[leader];
        let op = &code[pc as usize].op;
        let mask_src = match op {
            Op::Shfl { mask, .. } | Op::Vote { mask, .. } | Op::WarpSync { mask } => mask,
            Op::Mma { .. } | Op::Ldmatrix { .. } => return self.run_warp_wide(w0, lanes, leader),
            _ => unreachable!("only collectives stop a thread as AtCollective"),
        };
        let mask = val(self.reg_file(leader), mask_src) as u32;
        if mask & (1 << (leader - w0)) == 0 {
            return Err(self.fault(
                leader,
                &format!(
                    "lane {} executes a collective whose membermask {mask:#010x} excludes it",
                    leader - w0
                ),
            ));
        }
        // every live lane of the mask must wait at this same instruction with the same mask
        let mut members = 0u32;
        for lane in 0..lanes {
            if mask & (1 << lane) == 0 {
                continue;
            }
            let t = w0 + lane;
            match self.state[t] {
                State::Exited => {}
                State::AtCollective
                    if self.pc[t] == pc && val(self.reg_file(t), mask_src) as u32 == mask =>
                {
                    members |= 1 << lane;
                }
                State::AtCollective | State::AtBarrier | State::Ready => {
                    let other = code[self.pc[t] as usize].line;
                    return Err(self.fault(
                        leader,
                        &format!(
                            "warp divergence at a collective: lane {lane} (thread {}) of membermask \
                             {mask:#010x} is at line {other} `{}` instead",
                            thread_name(t as u32, self.l.block),
                            self.l.kernel.line_text(other)
                        ),
                    ));
                }
            }
        }
        match op.clone() {
            Op::Shfl {
                mode,
                d,
                p,
                a,
                b,
                c,
                ..
            } => {
                let mut src_vals = [0u64; WARP];
                for (lane, v) in src_vals.iter_mut().enumerate().take(lanes) {
                    if members & (1 << lane) != 0 {
                        *v = val(self.reg_file(w0 + lane), &a) & 0xffff_ffff;
                    }
                }
                for lane in 0..lanes {
                    if members & (1 << lane) == 0 {
                        continue;
                    }
                    let t = w0 + lane;
                    let r = self.reg_file(t);
                    let (bv, cv) = (val(r, &b) as u32, val(r, &c) as u32);
                    let (j, in_range) = shfl_source(mode, lane as u32, bv, cv);
                    if members & (1 << j) == 0 {
                        return Err(self.fault(
                            t,
                            &format!(
                                "shfl.sync: lane {lane} reads lane {j}, which does not take part \
                                 (exited or outside membermask {mask:#010x}); the value is undefined"
                            ),
                        ));
                    }
                    let nregs = self.nregs;
                    self.regs[t * nregs + d as usize] = src_vals[j as usize];
                    if let Some(p) = p {
                        self.regs[t * nregs + p as usize] = in_range as u64;
                    }
                }
            }
            Op::Vote { mode, d, a, .. } => {
                let mut ballot = 0u32;
                for lane in 0..lanes {
                    if members & (1 << lane) != 0 && pred(self.reg_file(w0 + lane), &a) {
                        ballot |= 1 << lane;
                    }
                }
                let result = match mode {
                    VoteMode::All => (ballot == members) as u64,
                    VoteMode::Any => (ballot != 0) as u64,
                    VoteMode::Uni => (ballot == 0 || ballot == members) as u64,
                    VoteMode::Ballot => ballot as u64,
                };
                for lane in 0..lanes {
                    if members & (1 << lane) != 0 {
                        self.regs[(w0 + lane) * self.nregs + d as usize] = result;
                    }
                }
            }
            _ => {} // bar.warp.sync: arriving together is all it does
        }
        for lane in 0..lanes {
            if members & (1 << lane) != 0 {
                self.pc[w0 + lane] += 1;
                self.state[w0 + lane] = State::Ready;
            }
        }
        Ok(true)
    }

    /// Run the `.sync.aligned` warp-wide instruction `leader` waits at (`mma`, `ldmatrix`):
    /// every lane of a full warp must be at it. Lanes another collective just released run
    /// first (returns false); a lane elsewhere or exited is an error.
    fn run_warp_wide(&mut self, w0: usize, lanes: usize, leader: usize) -> Result<bool, String> {
        let l = self.l;
        let pc = self.pc[leader];
        let op = &l.kernel.code[pc as usize].op;
        let name = match op {
            Op::Mma { .. } => "mma.sync.aligned",
            _ => "ldmatrix.sync.aligned",
        };
        if lanes < WARP {
            return Err(self.fault(
                leader,
                &format!(
                    "{name} needs a full warp, but this warp has {lanes} threads (the CTA's \
                     thread count is not a multiple of 32)"
                ),
            ));
        }
        for lane in 0..WARP {
            let t = w0 + lane;
            let other = l.kernel.code[self.pc[t] as usize].line;
            let place = match self.state[t] {
                State::AtCollective if self.pc[t] == pc => continue,
                State::Ready => return Ok(false),
                State::Exited => "has exited".to_string(),
                State::AtCollective | State::AtBarrier => {
                    format!("is at line {other} `{}`", l.kernel.line_text(other))
                }
            };
            return Err(self.fault(
                leader,
                &format!(
                    "{name}: every lane of the warp must execute this instruction together, but \
                     lane {lane} (thread {}) {place}",
                    thread_name(t as u32, l.block)
                ),
            ));
        }
        match op {
            Op::Mma { ab, d, a, b, c } => self.mma(w0, *ab, d, a, b, c),
            Op::Ldmatrix {
                trans,
                space,
                d,
                addr,
            } => self.ldmatrix(w0, pc, *trans, *space, d, addr)?,
            _ => unreachable!("only mma and ldmatrix are warp-wide"),
        }
        for t in w0..w0 + WARP {
            self.pc[t] += 1;
            self.state[t] = State::Ready;
        }
        Ok(true)
    }

    /// `mma.sync.aligned.m16n8k16.row.col.f32.ab.ab.f32` of the warp starting at thread `w0`.
    fn mma(&mut self, w0: usize, ab: Half, d: &[Reg; 4], a: &[Src; 4], b: &[Src; 2], c: &[Src; 4]) {
        let mut av = [[0u32; 4]; WARP];
        let mut bv = [[0u32; 2]; WARP];
        let mut cv = [[0u32; 4]; WARP];
        for lane in 0..WARP {
            let r = self.reg_file(w0 + lane);
            av[lane] = a.map(|x| val(r, &x) as u32);
            bv[lane] = b.map(|x| val(r, &x) as u32);
            cv[lane] = c.map(|x| val(r, &x) as u32);
        }
        let dv = warp_matrix::mma_m16n8k16(ab, &av, &bv, &cv);
        for (lane, dl) in dv.iter().enumerate() {
            let base = (w0 + lane) * self.nregs;
            for (reg, v) in d.iter().zip(dl) {
                self.regs[base + *reg as usize] = *v as u64;
            }
        }
    }

    /// `ldmatrix.sync.aligned.m8n8.xN[.trans].b16` of the warp starting at thread `w0`: lanes
    /// `8j..8j+7` give the row addresses of matrix `j` (higher lanes' addresses are not
    /// used); each element is read by the lane that receives it (the shared-memory checker
    /// sees those reads).
    fn ldmatrix(
        &mut self,
        w0: usize,
        pc: u32,
        trans: bool,
        space: Space,
        d: &[Reg],
        addr: &Addr,
    ) -> Result<(), String> {
        let nmat = d.len();
        let mut rows = [0u64; WARP];
        for (lane, row) in rows.iter_mut().enumerate().take(8 * nmat) {
            let t = w0 + lane;
            let at = val(self.reg_file(t), &addr.base).wrapping_add(addr.offset as u64);
            let (sp, at) = ThreadMem::resolve(space, at);
            if sp != Space::Shared {
                return Err(self.fault(
                    t,
                    &format!(
                        "ldmatrix row address {at:#x} is in .{} memory, not .shared",
                        sp.name()
                    ),
                ));
            }
            check_alignment("shared", at, 16, false)
                .map_err(|e| self.fault(t, &format!("ldmatrix row: {e}")))?;
            *row = at;
        }
        if let Some(tally) = &mut self.tally {
            for (lane, &row) in rows.iter().enumerate().take(8 * nmat) {
                tally.collective_access(w0 + lane, pc, Space::Shared, row, 16);
            }
        }
        for lane in 0..WARP {
            let t = w0 + lane;
            for (j, reg) in d.iter().enumerate() {
                let mut v = 0u64;
                for i in 0..2 {
                    let (r, c) = ldmatrix_position(lane, i, trans);
                    let at = rows[8 * j + r] + 2 * c as u64;
                    let h = self
                        .shared
                        .load(at, 2, t as u32)
                        .map_err(|e| self.fault(t, &e))?;
                    v |= h << (16 * i);
                }
                self.regs[t * self.nregs + *reg as usize] = v;
            }
        }
        Ok(())
    }

    /// Complete the barrier every live thread waits at. Returns false when all have exited.
    /// Exited threads do not hold a barrier up (the ISA releases it without them).
    fn complete_barrier(&mut self) -> Result<bool, String> {
        let Some(first) = (0..self.nthreads).find(|&t| self.state[t] == State::AtBarrier) else {
            return Ok(false);
        };
        let code = &self.l.kernel.code;
        let (id0, aligned0) = self.barrier_of(first);
        for t in first..self.nthreads {
            if self.state[t] != State::AtBarrier {
                continue;
            }
            let (id, aligned) = self.barrier_of(t);
            let other = code[self.pc[t] as usize].line;
            if id != id0 {
                return Err(self.fault(
                    first,
                    &format!(
                        "deadlock: this thread waits at barrier {id0} while thread {} waits at \
                         barrier {id} (line {other})",
                        thread_name(t as u32, self.l.block)
                    ),
                ));
            }
            if (aligned || aligned0) && self.pc[t] != self.pc[first] {
                return Err(self.fault(
                    first,
                    &format!(
                        "divergent bar.sync: thread {} waits at another barrier instruction, line \
                         {other} `{}` (an aligned barrier must be the same instruction for every \
                         thread of the CTA)",
                        thread_name(t as u32, self.l.block),
                        self.l.kernel.line_text(other)
                    ),
                ));
            }
            if let Op::Bar { count: Some(c), .. } = &code[self.pc[t] as usize].op {
                let count = val(self.reg_file(t), c);
                let all = self.nthreads.div_ceil(WARP) * WARP;
                if count != all as u64 {
                    return Err(self.fault(
                        t,
                        &format!(
                            "barrier thread count {count} is not the CTA's {all} threads (barriers \
                             on part of a CTA are not supported)"
                        ),
                    ));
                }
            }
        }
        self.shared.barrier().map_err(|e| self.fault(first, &e))?;
        for t in 0..self.nthreads {
            if self.state[t] == State::AtBarrier {
                self.pc[t] += 1;
                self.state[t] = State::Ready;
            }
        }
        Ok(true)
    }

    fn barrier_of(&self, t: usize) -> (u64, bool) {
        match &self.l.kernel.code[self.pc[t] as usize].op {
            Op::Bar { id, aligned, .. } => (val(self.reg_file(t), id), *aligned),
            _ => unreachable!("only bar stops a thread as AtBarrier"),
        }
    }
}

/// The ISA's source lane of `shfl.sync` for `lane`, and whether it lies inside the segment
/// (when not, the lane reads its own value).
pub fn shfl_source(mode: ShflMode, lane: u32, b: u32, c: u32) -> (u32, bool) {
    let b = (b & 31) as i32;
    let clamp = (c & 31) as i32;
    let seg = ((c >> 8) & 31) as i32;
    let lane = lane as i32;
    let max_lane = (lane & seg) | (clamp & !seg);
    let min_lane = lane & seg;
    let (j, ok) = match mode {
        ShflMode::Up => (lane - b, lane - b >= max_lane),
        ShflMode::Down => (lane + b, lane + b <= max_lane),
        ShflMode::Bfly => (lane ^ b, (lane ^ b) <= max_lane),
        ShflMode::Idx => {
            let j = min_lane | (b & !seg);
            (j, j <= max_lane)
        }
    };
    if ok {
        (j as u32, true)
    } else {
        (lane as u32, false)
    }
}
