//! One thread's instruction loop: everything except barriers and warp collectives, which
//! stop the thread so that `exec` can run them for the whole CTA or warp at once.

use super::alu::{self, mask, sext};
use super::half_cvt;
use super::isa::{AtomOp, BoolOp, CpSource, Instr, Op, PredSrc, Space, Src, Ty};
use super::memory::{
    check_alignment, load_param, GlobalMap, LocalMem, SharedMem, LOCAL_WINDOW, SHARED_WINDOW,
};
use super::profile::Probe;

/// Why a thread stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// At a `bar.sync` / `barrier.sync` (its pc still points at it).
    Barrier,
    /// At a warp collective (`shfl.sync`, `vote.sync`, `bar.warp.sync`, `mma.sync`,
    /// `ldmatrix`).
    Collective,
    Exit,
}

/// Taken backward branches one thread may make before the launch is called a hang.
pub const MAX_LOOP_TRIPS: u64 = 1 << 26;

/// The memories one thread sees.
pub struct ThreadMem<'a> {
    pub global: &'a GlobalMap,
    pub shared: &'a mut SharedMem,
    pub local: &'a mut LocalMem,
    pub params: &'a [u8],
    /// linear thread index in the CTA
    pub thread: u32,
}

impl ThreadMem<'_> {
    /// A generic address's state space and its address there.
    pub fn resolve(space: Space, addr: u64) -> (Space, u64) {
        match space {
            Space::Generic if addr >= LOCAL_WINDOW => (Space::Local, addr - LOCAL_WINDOW),
            Space::Generic if addr >= SHARED_WINDOW => (Space::Shared, addr - SHARED_WINDOW),
            Space::Generic => (Space::Global, addr),
            s => (s, addr),
        }
    }

    fn load(&mut self, space: Space, addr: u64, bytes: u32) -> Result<u64, String> {
        match Self::resolve(space, addr) {
            (Space::Global, a) => self.global.load(a, bytes),
            (Space::Shared, a) => self.shared.load(a, bytes, self.thread),
            (Space::Local, a) => self.local.load(a, bytes, self.thread),
            (_, a) => load_param(self.params, a, bytes),
        }
    }

    fn store(&mut self, space: Space, addr: u64, bytes: u32, v: u64) -> Result<(), String> {
        match Self::resolve(space, addr) {
            (Space::Global, a) => self.global.store(a, bytes, v),
            (Space::Shared, a) => self.shared.store(a, bytes, v, self.thread),
            (Space::Local, a) => self.local.store(a, bytes, v, self.thread),
            _ => Err("store to the .param space".to_string()),
        }
    }

    fn atomic(&mut self, space: Space, addr: u64, f: impl Fn(u32) -> u32) -> Result<u32, String> {
        match Self::resolve(space, addr) {
            (Space::Global, a) => self.global.atomic(a, f),
            (Space::Shared, a) => self.shared.atomic(a, self.thread, f),
            (s, _) => Err(format!("atomic on .{} memory", s.name())),
        }
    }
}

#[inline(always)]
pub fn val(regs: &[u64], s: &Src) -> u64 {
    match *s {
        Src::Reg(r) => regs[r as usize],
        Src::Imm(v) => v,
    }
}

#[inline(always)]
pub fn pred(regs: &[u64], p: &PredSrc) -> bool {
    (regs[p.reg as usize] != 0) != p.negated
}

fn bool_op(op: BoolOp, a: bool, b: bool) -> bool {
    match op {
        BoolOp::And => a && b,
        BoolOp::Or => a || b,
        BoolOp::Xor => a != b,
    }
}

/// A loaded value as the register holds it: sub-word signed loads sign-extend to 32 bits.
fn extend(v: u64, ty: Ty) -> u64 {
    match ty {
        Ty::S8 | Ty::S16 => mask(sext(v, ty.bits()) as u64, 32),
        _ => v,
    }
}

/// The new value of a word under `atom.op` (32-bit types only).
pub fn atom_apply(op: AtomOp, ty: Ty, old: u32, b: u32, c: u32) -> u32 {
    let signed = ty.is_signed();
    match op {
        AtomOp::Add if ty == Ty::F32 => (f32::from_bits(old) + f32::from_bits(b)).to_bits(),
        AtomOp::Add => old.wrapping_add(b),
        AtomOp::Min if signed => (old as i32).min(b as i32) as u32,
        AtomOp::Min => old.min(b),
        AtomOp::Max if signed => (old as i32).max(b as i32) as u32,
        AtomOp::Max => old.max(b),
        AtomOp::Exch => b,
        AtomOp::Cas => {
            if old == b {
                c
            } else {
                old
            }
        }
        AtomOp::And => old & b,
        AtomOp::Or => old | b,
        AtomOp::Xor => old ^ b,
        AtomOp::Inc => {
            if old >= b {
                0
            } else {
                old + 1
            }
        }
        AtomOp::Dec => {
            if old == 0 || old > b {
                b
            } else {
                old - 1
            }
        }
    }
}

/// Run from `*pc` until the thread stops. On error `*pc` is the failing instruction.
/// `probe` sees every instruction reached and executed and every memory access (counting
/// mode); plain runs pass [`NoProbe`](super::profile::NoProbe), which compiles to nothing.
pub fn run<P: Probe>(
    code: &[Instr],
    regs: &mut [u64],
    pc: &mut u32,
    trips: &mut u64,
    mem: &mut ThreadMem,
    probe: &mut P,
) -> Result<Stop, String> {
    loop {
        let ins = &code[*pc as usize];
        probe.reach(*pc);
        if let Some(g) = &ins.guard {
            if !pred(regs, g) {
                *pc += 1;
                continue;
            }
        }
        probe.execute(*pc);
        match &ins.op {
            Op::Mov { d, a } => regs[*d as usize] = val(regs, a),
            Op::Pack {
                d,
                parts,
                part_bits,
            } => {
                let mut v = 0;
                for (i, p) in parts.iter().enumerate() {
                    v |= mask(val(regs, p), *part_bits) << (i as u32 * part_bits);
                }
                regs[*d as usize] = v;
            }
            Op::Unpack {
                parts,
                a,
                part_bits,
            } => {
                let v = val(regs, a);
                for (i, p) in parts.iter().enumerate() {
                    if let Some(r) = p {
                        regs[*r as usize] = mask(v >> (i as u32 * part_bits), *part_bits);
                    }
                }
            }
            Op::Unary { op, ty, fm, d, a } => {
                regs[*d as usize] = alu::unary(*op, *ty, *fm, val(regs, a));
            }
            Op::Binary {
                op,
                ty,
                fm,
                d,
                a,
                b,
            } => {
                regs[*d as usize] = alu::binary(*op, *ty, *fm, val(regs, a), val(regs, b))?;
            }
            Op::Ternary {
                op,
                ty,
                fm,
                d,
                a,
                b,
                c,
            } => {
                let (a, b, c) = (val(regs, a), val(regs, b), val(regs, c));
                regs[*d as usize] = alu::ternary(*op, *ty, *fm, a, b, c);
            }
            Op::Setp {
                cmp,
                ty,
                ftz,
                p,
                q,
                a,
                b,
                combine,
            } => {
                let t = alu::compare(*cmp, *ty, *ftz, val(regs, a), val(regs, b));
                let (pv, qv) = match combine {
                    None => (t, !t),
                    Some((op, c)) => {
                        let c = pred(regs, c);
                        (bool_op(*op, t, c), bool_op(*op, !t, c))
                    }
                };
                if let Some(p) = p {
                    regs[*p as usize] = pv as u64;
                }
                if let Some(q) = q {
                    regs[*q as usize] = qv as u64;
                }
            }
            Op::Selp { d, a, b, c } => {
                regs[*d as usize] = if pred(regs, c) {
                    val(regs, a)
                } else {
                    val(regs, b)
                };
            }
            Op::Cvt {
                dty,
                sty,
                rnd,
                int_rnd,
                ftz,
                sat,
                d,
                a,
            } => {
                regs[*d as usize] =
                    alu::convert(*dty, *sty, *rnd, *int_rnd, *ftz, *sat, val(regs, a));
            }
            Op::CvtToHalf { m, d, a, b } => {
                let hi = half_cvt::to_half(m, val(regs, a) as u32) as u64;
                regs[*d as usize] = match b {
                    None => hi,
                    Some(b) => hi << 16 | half_cvt::to_half(m, val(regs, b) as u32) as u64,
                };
            }
            Op::CvtFromHalf {
                half,
                ftz,
                sat,
                d,
                a,
            } => {
                regs[*d as usize] = half_cvt::from_half(*half, *ftz, *sat, val(regs, a)) as u64;
            }
            Op::CpAsync {
                bytes,
                dst,
                src,
                source,
            } => {
                let to = val(regs, &dst.base).wrapping_add(dst.offset as u64);
                let from = val(regs, &src.base).wrapping_add(src.offset as u64);
                check_alignment("shared", to, *bytes, true)?;
                check_alignment("global", from, *bytes, false)?;
                let src_bytes = match source {
                    CpSource::Full => *bytes,
                    CpSource::SrcSize(n) => {
                        let n = val(regs, n) as u32;
                        if n > *bytes {
                            return Err(format!(
                                "cp.async src-size {n} exceeds cp-size {bytes} (undefined)"
                            ));
                        }
                        n
                    }
                    CpSource::IgnoreSrc(p) if pred(regs, p) => 0,
                    CpSource::IgnoreSrc(_) => *bytes,
                };
                if src_bytes > 0 {
                    probe.access(*pc, Space::Global, from, src_bytes);
                }
                probe.access(*pc, Space::Shared, to, *bytes);
                let words = read_source(mem.global, from, src_bytes, *bytes)?;
                let words = &words[..*bytes as usize / 4];
                mem.shared.async_issue(to, words, mem.thread, ins.line)?;
            }
            Op::CpAsyncCommit => mem.shared.async_commit(mem.thread),
            Op::CpAsyncWait { n, all } => {
                if *all {
                    mem.shared.async_commit(mem.thread);
                }
                mem.shared.async_wait(mem.thread, *n);
            }
            Op::Cvta {
                to_generic,
                space,
                d,
                a,
            } => {
                let v = val(regs, a);
                let window = match space {
                    Space::Shared => SHARED_WINDOW,
                    Space::Local => LOCAL_WINDOW,
                    _ => 0, // global addresses are generic addresses
                };
                regs[*d as usize] = if *to_generic {
                    v.wrapping_add(window)
                } else {
                    v.wrapping_sub(window)
                };
            }
            Op::Ld { space, ty, d, addr } => {
                let base = val(regs, &addr.base).wrapping_add(addr.offset as u64);
                let size = ty.bytes();
                check_alignment(space.name(), base, size * d.len() as u32, false)?;
                let (sp, at) = ThreadMem::resolve(*space, base);
                probe.access(*pc, sp, at, size * d.len() as u32);
                for (i, r) in d.iter().enumerate() {
                    let v = mem.load(*space, base + (i as u32 * size) as u64, size)?;
                    if let Some(r) = r {
                        regs[*r as usize] = extend(v, *ty);
                    }
                }
            }
            Op::St { space, ty, s, addr } => {
                let base = val(regs, &addr.base).wrapping_add(addr.offset as u64);
                let size = ty.bytes();
                check_alignment(space.name(), base, size * s.len() as u32, true)?;
                let (sp, at) = ThreadMem::resolve(*space, base);
                probe.access(*pc, sp, at, size * s.len() as u32);
                for (i, v) in s.iter().enumerate() {
                    let v = mask(val(regs, v), ty.bits());
                    mem.store(*space, base + (i as u32 * size) as u64, size, v)?;
                }
            }
            Op::Atom {
                space,
                op,
                ty,
                d,
                addr,
                b,
                c,
            } => {
                let at = val(regs, &addr.base).wrapping_add(addr.offset as u64);
                check_alignment(space.name(), at, 4, true)?;
                let (sp, a) = ThreadMem::resolve(*space, at);
                probe.access(*pc, sp, a, 4);
                let (b, c) = (val(regs, b) as u32, val(regs, c) as u32);
                let old = mem.atomic(*space, at, |old| atom_apply(*op, *ty, old, b, c))?;
                if let Some(d) = d {
                    regs[*d as usize] = old as u64;
                }
            }
            Op::Bra { target } => {
                if *target <= *pc {
                    *trips += 1;
                    if *trips > MAX_LOOP_TRIPS {
                        return Err(format!(
                            "more than {MAX_LOOP_TRIPS} backward branches taken by one thread: \
                             the kernel does not terminate"
                        ));
                    }
                }
                *pc = *target;
                continue;
            }
            Op::Bar { .. } => return Ok(Stop::Barrier),
            Op::Shfl { .. }
            | Op::Vote { .. }
            | Op::WarpSync { .. }
            | Op::Mma { .. }
            | Op::Ldmatrix { .. } => return Ok(Stop::Collective),
            Op::Fence => {}
            Op::Exit => return Ok(Stop::Exit),
        }
        *pc += 1;
    }
}

/// The `bytes` bytes a `cp.async` writes, as words: the first `src_bytes` from global memory
/// at `from`, the rest zero.
fn read_source(
    global: &GlobalMap,
    from: u64,
    src_bytes: u32,
    bytes: u32,
) -> Result<[u32; 4], String> {
    let mut out = [0u32; 4];
    if src_bytes == bytes {
        for (i, w) in out.iter_mut().take(bytes as usize / 4).enumerate() {
            *w = global.load(from + 4 * i as u64, 4)? as u32;
        }
    } else {
        for i in 0..src_bytes {
            let b = global.load(from + i as u64, 1)? as u32;
            out[i as usize / 4] |= b << (8 * (i % 4));
        }
    }
    Ok(out)
}
