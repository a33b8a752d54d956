//! From an opcode with its dotted modifiers and its parsed operands to one [`Op`].
//!
//! Every modifier must be understood or explicitly ignored (cache hints, memory-order
//! qualifiers the sequentially consistent simulator already satisfies); anything else is an
//! "unsupported" error, so no instruction is ever half-simulated.

use super::isa::*;
use super::memory::{LOCAL_WINDOW, SHARED_WINDOW};
use super::parser::{Lit, Operand, Scope, Symbol};

type R<T> = Result<T, String>;

/// Cache and memory-order qualifiers of ld/st/atom: no effect on a sequentially consistent
/// memory.
const MEMORY_HINTS: [&str; 18] = [
    "weak", "volatile", "relaxed", "acquire", "release", "mmio", "cta", "gpu", "sys", "ca", "cg",
    "cs", "lu", "cv", "nc", "wb", "wt", "cluster",
];

/// The modifiers of one opcode; each must be consumed by the decoder.
struct Mods<'a> {
    parts: Vec<&'a str>,
    used: Vec<bool>,
}

impl<'a> Mods<'a> {
    fn take(&mut self, m: &str) -> bool {
        for (p, u) in self.parts.iter().zip(self.used.iter_mut()) {
            if !*u && *p == m {
                *u = true;
                return true;
            }
        }
        false
    }
    fn take_any(&mut self, set: &[&'static str]) -> Option<&'static str> {
        set.iter().copied().find(|m| self.take(m))
    }
    /// All type modifiers, in order.
    fn types(&mut self) -> Vec<Ty> {
        let mut out = Vec::new();
        for (p, u) in self.parts.iter().zip(self.used.iter_mut()) {
            if let (false, Some(t)) = (*u, Ty::parse(p)) {
                *u = true;
                out.push(t);
            }
        }
        out
    }
    fn one_type(&mut self) -> R<Ty> {
        match self.types()[..] {
            [t] => Ok(t),
            [] => Err("missing type".into()),
            _ => Err("expected one type".into()),
        }
    }
    fn ignore_memory_hints(&mut self) {
        for (p, u) in self.parts.iter().zip(self.used.iter_mut()) {
            if MEMORY_HINTS.contains(p) || p.starts_with("L1::") || p.starts_with("L2::") {
                *u = true;
            }
        }
    }
    fn space(&mut self) -> R<Space> {
        Ok(
            match self.take_any(&["global", "shared", "shared::cta", "local", "param", "const"]) {
                None => Space::Generic,
                Some("global") => Space::Global,
                Some("shared") | Some("shared::cta") => Space::Shared,
                Some("local") => Space::Local,
                Some("param") => Space::Param,
                Some(other) => return Err(format!("state space .{other} is not supported")),
            },
        )
    }
    fn float_rnd(&mut self) -> Option<Rnd> {
        self.take_any(&["rn", "rz", "rm", "rp"]).map(|r| match r {
            "rn" => Rnd::Rn,
            "rz" => Rnd::Rz,
            "rm" => Rnd::Rm,
            _ => Rnd::Rp,
        })
    }
    /// Float modifiers, and whether a rounding modifier was written.
    fn fmods(&mut self) -> (FMods, bool) {
        let rnd = self.float_rnd();
        let fm = FMods {
            rnd: rnd.unwrap_or(Rnd::Rn),
            ftz: self.take("ftz"),
            sat: self.take("sat"),
        };
        (fm, rnd.is_some())
    }
    /// The modifiers not consumed yet, in order (marked consumed).
    fn take_rest(&mut self) -> Vec<&'a str> {
        let mut out = Vec::new();
        for (p, u) in self.parts.iter().zip(self.used.iter_mut()) {
            if !*u {
                *u = true;
                out.push(*p);
            }
        }
        out
    }
    fn require(&mut self, m: &str, what: &str) -> R<()> {
        if self.take(m) {
            Ok(())
        } else {
            Err(format!("{what} needs .{m}"))
        }
    }
    fn finish(&self) -> R<()> {
        match self.parts.iter().zip(&self.used).find(|(_, u)| !**u) {
            Some((p, _)) => Err(format!("unsupported modifier `.{p}`")),
            None => Ok(()),
        }
    }
}

/// Decode one instruction statement.
pub fn decode(opcode: &str, ops: &[Operand], s: &Scope) -> R<Op> {
    let mut it = opcode.split('.');
    let base = it.next().unwrap_or("");
    let parts: Vec<&str> = it.collect();
    let mut m = Mods {
        used: vec![false; parts.len()],
        parts,
    };
    let op = match base {
        "mov" => mov(&mut m, ops, s)?,
        "ld" => ld(&mut m, ops, s)?,
        "st" => st(&mut m, ops, s)?,
        "cvta" => cvta(&mut m, ops, s)?,
        "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" | "and" | "or" | "xor" | "shl"
        | "shr" => binary(base, &mut m, ops, s)?,
        "neg" | "abs" | "not" | "cnot" | "popc" | "clz" | "brev" | "rcp" | "sqrt" | "rsqrt"
        | "ex2" | "lg2" | "sin" | "cos" | "tanh" => unary(base, &mut m, ops, s)?,
        "mad" | "fma" => ternary(base, &mut m, ops, s)?,
        "setp" => setp(&mut m, ops, s)?,
        "selp" => {
            let ty = m.one_type()?;
            want(ops, 4)?;
            Op::Selp {
                d: reg(&ops[0], s)?,
                a: src(&ops[1], ty, s)?,
                b: src(&ops[2], ty, s)?,
                c: pred(&ops[3], s)?,
            }
        }
        "cvt" => cvt(&mut m, ops, s)?,
        "bra" => {
            m.take("uni");
            want(ops, 1)?;
            Op::Bra { target: 0 }
        }
        "bar" | "barrier" => bar(base, &mut m, ops, s)?,
        "shfl" => shfl(&mut m, ops, s)?,
        "vote" => vote(&mut m, ops, s)?,
        "atom" | "red" => atom(base, &mut m, ops, s)?,
        "mma" => mma(&mut m, ops, s)?,
        "ldmatrix" => ldmatrix(&mut m, ops, s)?,
        "cp" => cp_async(&mut m, ops, s)?,
        "membar" | "fence" => {
            m.ignore_memory_hints();
            m.take("sc");
            m.take("acq_rel");
            want(ops, 0)?;
            Op::Fence
        }
        "ret" | "exit" => {
            m.take("uni");
            want(ops, 0)?;
            Op::Exit
        }
        _ => return Err(format!("unsupported instruction `{base}`")),
    };
    m.finish()?;
    Ok(op)
}

fn want(ops: &[Operand], n: usize) -> R<()> {
    if ops.len() == n {
        Ok(())
    } else {
        Err(format!("expected {n} operands, found {}", ops.len()))
    }
}

/// A register written by the instruction.
fn reg(o: &Operand, s: &Scope) -> R<Reg> {
    match o {
        Operand::Name(n) => match s.lookup(n) {
            Some(Symbol::Reg(r, _)) if r >= SPECIAL_REGS => Ok(r),
            Some(Symbol::Reg(..)) => Err(format!("special register `{n}` is read-only")),
            Some(_) => Err(format!("`{n}` is not a register")),
            None => Err(format!("undeclared register `{n}`")),
        },
        other => Err(format!("expected a register, found {other:?}")),
    }
}

/// A destination that may be the sink `_`.
fn dst(o: &Operand, s: &Scope) -> R<Option<Reg>> {
    match o {
        Operand::Name(n) if n == "_" => Ok(None),
        _ => reg(o, s).map(Some),
    }
}

/// The bits of literal `l` as an operand of type `ty`.
pub fn imm(l: Lit, ty: Ty) -> R<u64> {
    let bits = ty.bits();
    Ok(match (ty, l) {
        (Ty::F32, Lit::F32Bits(b)) => b as u64,
        (Ty::F32, Lit::Float(v)) => (v as f32).to_bits() as u64,
        (Ty::F32, Lit::F64Bits(b)) => (f64::from_bits(b) as f32).to_bits() as u64,
        (Ty::F64, Lit::F32Bits(b)) => (f32::from_bits(b) as f64).to_bits(),
        (Ty::F64, Lit::Float(v)) => v.to_bits(),
        (Ty::F64, Lit::F64Bits(b)) => b,
        (Ty::F32 | Ty::F64, Lit::Int(_)) => {
            return Err("integer literal for a float operand (write 0fXXXXXXXX)".into())
        }
        (Ty::Pred, Lit::Int(v)) => (v != 0) as u64,
        (_, Lit::Int(v)) => truncate(v, bits),
        (Ty::B32, Lit::F32Bits(b)) => b as u64,
        (Ty::B64, Lit::F64Bits(b)) => b,
        (_, lit) => {
            return Err(format!(
                "literal {lit:?} does not fit a .{} operand",
                ty.name()
            ))
        }
    })
}

fn truncate(v: u64, bits: u32) -> u64 {
    if bits >= 64 {
        v
    } else {
        v & ((1u64 << bits) - 1)
    }
}

/// A value read by the instruction: register, special register, variable address, literal.
fn src(o: &Operand, ty: Ty, s: &Scope) -> R<Src> {
    match o {
        Operand::Name(n) => match s.lookup(n) {
            Some(Symbol::Reg(r, _)) => Ok(Src::Reg(r)),
            Some(Symbol::Shared(a)) | Some(Symbol::Local(a)) | Some(Symbol::Param(a)) => {
                Ok(Src::Imm(a as u64))
            }
            None => Err(format!("undeclared name `{n}`")),
        },
        Operand::Lit(l) => Ok(Src::Imm(imm(*l, ty)?)),
        other => Err(format!("expected a value, found {other:?}")),
    }
}

/// A predicate source, `%p` or `!%p`.
fn pred(o: &Operand, s: &Scope) -> R<PredSrc> {
    let (inner, negated) = match o {
        Operand::Not(inner) => (inner.as_ref(), true),
        other => (other, false),
    };
    match inner {
        Operand::Name(n) => match s.lookup(n) {
            Some(Symbol::Reg(reg, Ty::Pred)) => Ok(PredSrc { reg, negated }),
            _ => Err(format!("`{n}` is not a predicate register")),
        },
        other => Err(format!("expected a predicate, found {other:?}")),
    }
}

/// `[reg+off]` or `[var+off]` in `space`.
fn addr(o: &Operand, space: Space, s: &Scope) -> R<Addr> {
    let Operand::Address { base, offset } = o else {
        return Err(format!("expected an address [..], found {o:?}"));
    };
    let base = match base {
        None => Src::Imm(0),
        Some(n) => match (s.lookup(n), space) {
            (Some(Symbol::Reg(r, _)), _) => Src::Reg(r),
            (Some(Symbol::Shared(a)), Space::Shared) => Src::Imm(a as u64),
            (Some(Symbol::Shared(a)), Space::Generic) => Src::Imm(SHARED_WINDOW + a as u64),
            (Some(Symbol::Local(a)), Space::Local) => Src::Imm(a as u64),
            (Some(Symbol::Local(a)), Space::Generic) => Src::Imm(LOCAL_WINDOW + a as u64),
            (Some(Symbol::Param(a)), Space::Param) => Src::Imm(a as u64),
            (Some(_), _) => {
                return Err(format!("`{n}` is not in the .{} state space", space.name()))
            }
            (None, _) => return Err(format!("undeclared name `{n}`")),
        },
    };
    Ok(Addr {
        base,
        offset: *offset,
    })
}

fn vector_width(m: &mut Mods) -> usize {
    match m.take_any(&["v2", "v4"]) {
        Some("v2") => 2,
        Some(_) => 4,
        None => 1,
    }
}

fn mov(m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    let ty = m.one_type()?;
    want(ops, 2)?;
    Ok(match (&ops[0], &ops[1]) {
        (Operand::Vector(parts), a) => {
            let part_bits = ty.bits() / parts.len() as u32;
            Op::Unpack {
                parts: parts.iter().map(|p| dst(p, s)).collect::<R<_>>()?,
                a: src(a, ty, s)?,
                part_bits,
            }
        }
        (d, Operand::Vector(parts)) => {
            let part_bits = ty.bits() / parts.len() as u32;
            let part_ty = match part_bits {
                8 => Ty::B8,
                16 => Ty::B16,
                32 => Ty::B32,
                _ => return Err("cannot pack into that width".into()),
            };
            Op::Pack {
                d: reg(d, s)?,
                parts: parts.iter().map(|p| src(p, part_ty, s)).collect::<R<_>>()?,
                part_bits,
            }
        }
        (d, a) => Op::Mov {
            d: reg(d, s)?,
            a: src(a, ty, s)?,
        },
    })
}

fn ld(m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    m.ignore_memory_hints();
    let space = m.space()?;
    let n = vector_width(m);
    let ty = m.one_type()?;
    want(ops, 2)?;
    let d = match &ops[0] {
        Operand::Vector(v) => v.iter().map(|o| dst(o, s)).collect::<R<Vec<_>>>()?,
        o => vec![dst(o, s)?],
    };
    if d.len() != n {
        return Err(format!("{n} destinations expected, found {}", d.len()));
    }
    Ok(Op::Ld {
        space,
        ty,
        d,
        addr: addr(&ops[1], space, s)?,
    })
}

fn st(m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    m.ignore_memory_hints();
    let space = m.space()?;
    let n = vector_width(m);
    let ty = m.one_type()?;
    want(ops, 2)?;
    if space == Space::Param {
        return Err("st.param is not supported (kernel parameters are read-only)".into());
    }
    let v = match &ops[1] {
        Operand::Vector(v) => v.iter().map(|o| src(o, ty, s)).collect::<R<Vec<_>>>()?,
        o => vec![src(o, ty, s)?],
    };
    if v.len() != n {
        return Err(format!("{n} sources expected, found {}", v.len()));
    }
    Ok(Op::St {
        space,
        ty,
        s: v,
        addr: addr(&ops[0], space, s)?,
    })
}

fn cvta(m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    let to = m.take("to");
    let space = m.space()?;
    let ty = m.one_type()?;
    want(ops, 2)?;
    if space == Space::Generic || space == Space::Param {
        return Err("cvta needs .global, .shared or .local".into());
    }
    Ok(Op::Cvta {
        to_generic: !to,
        space,
        d: reg(&ops[0], s)?,
        a: src(&ops[1], ty, s)?,
    })
}

fn binary(base: &str, m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    let ty = m.one_type()?;
    want(ops, 3)?;
    let float = ty.is_float();
    let mut fm = FMods::RN;
    let op = match base {
        "add" => BinOp::Add,
        "sub" => BinOp::Sub,
        "mul" if float => BinOp::Mul,
        "mul" => match m.take_any(&["lo", "hi", "wide"]) {
            Some("lo") => BinOp::Mul,
            Some("hi") => BinOp::MulHi,
            Some(_) => {
                wide(ty)?;
                BinOp::MulWide
            }
            None => return Err("integer mul needs .lo, .hi or .wide".into()),
        },
        "div" => BinOp::Div,
        "rem" => BinOp::Rem,
        "min" => BinOp::Min,
        "max" => BinOp::Max,
        "and" => BinOp::And,
        "or" => BinOp::Or,
        "xor" => BinOp::Xor,
        "shl" => BinOp::Shl,
        _ => BinOp::Shr,
    };
    if float {
        // .approx and .full divisions are within the ISA's error of the exact quotient
        let approx_or_full = m.take_any(&["approx", "full"]).is_some();
        let (f, rnd_written) = m.fmods();
        fm = f;
        if op == BinOp::Div && !approx_or_full && !rnd_written {
            return Err("f32 div needs .approx, .full or a rounding modifier".into());
        }
        if matches!(
            op,
            BinOp::Rem | BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Shl | BinOp::Shr
        ) {
            return Err(format!("`{base}` has no float form"));
        }
    } else if matches!(op, BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Shl)
        && !matches!(ty, Ty::Pred | Ty::B16 | Ty::B32 | Ty::B64)
    {
        return Err(format!("`{base}` takes .pred or .bN types"));
    }
    let bty = if matches!(op, BinOp::Shl | BinOp::Shr) {
        Ty::U32
    } else {
        ty
    };
    no_directed_f64(ty, fm)?;
    Ok(Op::Binary {
        op,
        ty,
        fm,
        d: reg(&ops[0], s)?,
        a: src(&ops[1], ty, s)?,
        b: src(&ops[2], bty, s)?,
    })
}

fn unary(base: &str, m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    let approx = m.take("approx");
    let ty = m.one_type()?;
    want(ops, 2)?;
    let op = match base {
        "neg" => UnOp::Neg,
        "abs" => UnOp::Abs,
        "not" => UnOp::Not,
        "cnot" => UnOp::Cnot,
        "popc" => UnOp::Popc,
        "clz" => UnOp::Clz,
        "brev" => UnOp::Brev,
        "rcp" => UnOp::Rcp,
        "sqrt" => UnOp::Sqrt,
        "rsqrt" => UnOp::Rsqrt,
        "ex2" => UnOp::Ex2,
        "lg2" => UnOp::Lg2,
        "sin" => UnOp::Sin,
        "cos" => UnOp::Cos,
        _ => UnOp::Tanh,
    };
    let (fm, rnd_written) = if ty.is_float() {
        m.fmods()
    } else {
        (FMods::RN, false)
    };
    let float_only = matches!(
        op,
        UnOp::Rcp
            | UnOp::Sqrt
            | UnOp::Rsqrt
            | UnOp::Ex2
            | UnOp::Lg2
            | UnOp::Sin
            | UnOp::Cos
            | UnOp::Tanh
    );
    let int_only = matches!(
        op,
        UnOp::Not | UnOp::Cnot | UnOp::Popc | UnOp::Clz | UnOp::Brev
    );
    if (float_only && !ty.is_float()) || (int_only && ty.is_float()) {
        return Err(format!("`{base}` does not take .{}", ty.name()));
    }
    if float_only && !matches!(op, UnOp::Rcp | UnOp::Sqrt) && !approx {
        return Err(format!("`{base}` needs .approx"));
    }
    if matches!(op, UnOp::Rcp | UnOp::Sqrt) && ty == Ty::F32 && !approx && !rnd_written {
        return Err(format!("`{base}.f32` needs .approx or a rounding modifier"));
    }
    no_directed_f64(ty, fm)?;
    Ok(Op::Unary {
        op,
        ty,
        fm,
        d: reg(&ops[0], s)?,
        a: src(&ops[1], ty, s)?,
    })
}

/// f64 arithmetic is simulated with the host's round-to-nearest only.
fn no_directed_f64(ty: Ty, fm: FMods) -> R<()> {
    if ty == Ty::F64 && (fm.rnd != Rnd::Rn || fm.ftz || fm.sat) {
        return Err("f64 with .rz/.rm/.rp/.ftz/.sat is not supported".into());
    }
    Ok(())
}

fn wide(ty: Ty) -> R<Ty> {
    Ok(match ty {
        Ty::U16 => Ty::U32,
        Ty::S16 => Ty::S32,
        Ty::U32 => Ty::U64,
        Ty::S32 => Ty::S64,
        _ => return Err(format!(".wide does not take .{}", ty.name())),
    })
}

fn ternary(base: &str, m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    let ty = m.one_type()?;
    want(ops, 4)?;
    let (op, fm, cty) = if ty.is_float() {
        let (fm, rnd_written) = m.fmods();
        if !rnd_written {
            return Err(format!("float `{base}` needs a rounding modifier"));
        }
        (TerOp::Fma, fm, ty)
    } else if base == "fma" {
        return Err("fma takes .f32 or .f64".into());
    } else {
        match m.take_any(&["lo", "hi", "wide"]) {
            Some("lo") => (TerOp::MadLo, FMods::RN, ty),
            Some("hi") => (TerOp::MadHi, FMods::RN, ty),
            Some(_) => (TerOp::MadWide, FMods::RN, wide(ty)?),
            None => return Err("integer mad needs .lo, .hi or .wide".into()),
        }
    };
    no_directed_f64(ty, fm)?;
    Ok(Op::Ternary {
        op,
        ty,
        fm,
        d: reg(&ops[0], s)?,
        a: src(&ops[1], ty, s)?,
        b: src(&ops[2], ty, s)?,
        c: src(&ops[3], cty, s)?,
    })
}

fn setp(m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    let cmp = m
        .parts
        .iter()
        .zip(m.used.iter_mut())
        .find_map(|(p, u)| Cmp::parse(p).map(|c| (c, u)));
    let cmp = match cmp {
        Some((c, u)) => {
            *u = true;
            c
        }
        None => return Err("missing comparison".into()),
    };
    let bool_op = match m.take_any(&["and", "or", "xor"]) {
        Some("and") => Some(BoolOp::And),
        Some("or") => Some(BoolOp::Or),
        Some(_) => Some(BoolOp::Xor),
        None => None,
    };
    let ftz = m.take("ftz");
    let ty = m.one_type()?;
    want(ops, if bool_op.is_some() { 4 } else { 3 })?;
    let unsigned_only = matches!(cmp, Cmp::Lo | Cmp::Ls | Cmp::Hi | Cmp::Hs);
    let float_only = matches!(
        cmp,
        Cmp::Equ | Cmp::Neu | Cmp::Ltu | Cmp::Leu | Cmp::Gtu | Cmp::Geu | Cmp::Num | Cmp::Nan
    );
    if (unsigned_only && ty.is_float()) || (float_only && !ty.is_float()) || ty == Ty::Pred {
        return Err(format!("comparison does not take .{}", ty.name()));
    }
    let (p, q) = match &ops[0] {
        Operand::Pair(p, q) => (
            dst(&Operand::Name(p.clone()), s)?,
            dst(&Operand::Name(q.clone()), s)?,
        ),
        o => (dst(o, s)?, None),
    };
    let combine = match bool_op {
        Some(b) => Some((b, pred(&ops[3], s)?)),
        None => None,
    };
    Ok(Op::Setp {
        cmp,
        ty,
        ftz,
        p,
        q,
        a: src(&ops[1], ty, s)?,
        b: src(&ops[2], ty, s)?,
        combine,
    })
}

fn cvt(m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    if m.parts.iter().any(|p| half_type(p).is_some()) {
        return cvt_half(m, ops, s);
    }
    let int_rnd = m.take_any(&["rni", "rzi", "rmi", "rpi"]);
    let float_rnd = m.float_rnd();
    let ftz = m.take("ftz");
    let sat = m.take("sat");
    let (dty, sty) = match m.types()[..] {
        [d, s] => (d, s),
        _ => return Err("cvt needs a destination and a source type".into()),
    };
    want(ops, 2)?;
    if dty == Ty::Pred || sty == Ty::Pred {
        return Err("cvt does not take .pred".into());
    }
    let (rnd, is_int_rnd) = match (int_rnd, float_rnd) {
        (Some(_), Some(_)) => return Err("two rounding modifiers".into()),
        (Some(r), None) => (
            match r {
                "rni" => Rnd::Rn,
                "rzi" => Rnd::Rz,
                "rmi" => Rnd::Rm,
                _ => Rnd::Rp,
            },
            true,
        ),
        (None, Some(r)) => (r, false),
        (None, None) => (Rnd::Rn, false),
    };
    // the ISA requires the rounding that matters to be written
    let narrowing_float = sty == Ty::F64 && dty == Ty::F32;
    if sty.is_float() && !dty.is_float() && int_rnd.is_none() {
        return Err("float-to-integer cvt needs .rni, .rzi, .rmi or .rpi".into());
    }
    if (!sty.is_float() && dty.is_float() || narrowing_float) && float_rnd.is_none() {
        return Err("this cvt needs .rn, .rz, .rm or .rp".into());
    }
    if int_rnd.is_some() && !sty.is_float() {
        return Err("integer rounding of an integer source".into());
    }
    if float_rnd.is_some() && !dty.is_float() {
        return Err("float rounding into an integer".into());
    }
    Ok(Op::Cvt {
        dty,
        sty,
        rnd,
        int_rnd: is_int_rnd,
        ftz,
        sat,
        d: reg(&ops[0], s)?,
        a: src(&ops[1], sty, s)?,
    })
}

fn bar(base: &str, m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    m.take("cta");
    if base == "bar" && m.take("warp") {
        if !m.take("sync") {
            return Err("only bar.warp.sync is supported".into());
        }
        want(ops, 1)?;
        return Ok(Op::WarpSync {
            mask: src(&ops[0], Ty::U32, s)?,
        });
    }
    if !m.take("sync") {
        return Err("only bar.sync / barrier.sync are supported (no arrive/red)".into());
    }
    // bar.sync is barrier.sync.aligned
    let aligned = base == "bar" || m.take("aligned");
    if ops.is_empty() || ops.len() > 2 {
        return Err("expected a barrier id and an optional thread count".into());
    }
    Ok(Op::Bar {
        id: src(&ops[0], Ty::U32, s)?,
        count: match ops.get(1) {
            Some(o) => Some(src(o, Ty::U32, s)?),
            None => None,
        },
        aligned,
    })
}

fn shfl(m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    if !m.take("sync") {
        return Err(
            "only shfl.sync is supported (shfl without .sync is not valid on sm_70+)".into(),
        );
    }
    let mode = match m.take_any(&["up", "down", "bfly", "idx"]) {
        Some("up") => ShflMode::Up,
        Some("down") => ShflMode::Down,
        Some("bfly") => ShflMode::Bfly,
        Some(_) => ShflMode::Idx,
        None => return Err("missing shuffle mode".into()),
    };
    if m.one_type()? != Ty::B32 {
        return Err("shfl.sync takes .b32".into());
    }
    want(ops, 5)?;
    let (d, p) = match &ops[0] {
        Operand::Pair(d, p) => (
            reg(&Operand::Name(d.clone()), s)?,
            dst(&Operand::Name(p.clone()), s)?,
        ),
        o => (reg(o, s)?, None),
    };
    Ok(Op::Shfl {
        mode,
        d,
        p,
        a: src(&ops[1], Ty::B32, s)?,
        b: src(&ops[2], Ty::B32, s)?,
        c: src(&ops[3], Ty::B32, s)?,
        mask: src(&ops[4], Ty::B32, s)?,
    })
}

fn vote(m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    if !m.take("sync") {
        return Err("only vote.sync is supported".into());
    }
    let mode = match m.take_any(&["all", "any", "uni", "ballot"]) {
        Some("all") => VoteMode::All,
        Some("any") => VoteMode::Any,
        Some("uni") => VoteMode::Uni,
        Some(_) => VoteMode::Ballot,
        None => return Err("missing vote mode".into()),
    };
    let ty = m.one_type()?;
    if (mode == VoteMode::Ballot) != (ty == Ty::B32) {
        return Err("vote.ballot takes .b32, the others .pred".into());
    }
    want(ops, 3)?;
    Ok(Op::Vote {
        mode,
        d: reg(&ops[0], s)?,
        a: pred(&ops[1], s)?,
        mask: src(&ops[2], Ty::B32, s)?,
    })
}

fn atom(base: &str, m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    m.ignore_memory_hints();
    let space = m.space()?;
    if !matches!(space, Space::Global | Space::Shared | Space::Generic) {
        return Err(format!("{base} on .{} memory", space.name()));
    }
    let op = match m.take_any(&[
        "add", "min", "max", "exch", "cas", "and", "or", "xor", "inc", "dec",
    ]) {
        Some("add") => AtomOp::Add,
        Some("min") => AtomOp::Min,
        Some("max") => AtomOp::Max,
        Some("exch") => AtomOp::Exch,
        Some("cas") => AtomOp::Cas,
        Some("and") => AtomOp::And,
        Some("or") => AtomOp::Or,
        Some("xor") => AtomOp::Xor,
        Some("inc") => AtomOp::Inc,
        Some(_) => AtomOp::Dec,
        None => return Err("missing atomic operation".into()),
    };
    let ty = m.one_type()?;
    if ty.bits() != 32 {
        // global memory is an array of 32-bit atomics: a 64-bit atomic could not be atomic
        return Err(format!(
            "{base} on .{} is not supported (32-bit types only)",
            ty.name()
        ));
    }
    if ty.is_float() && !matches!(op, AtomOp::Add | AtomOp::Exch) {
        return Err(format!("{base} float operations other than add/exch"));
    }
    let has_d = base == "atom";
    let n = has_d as usize + 2 + (op == AtomOp::Cas) as usize;
    want(ops, n)?;
    let o = &ops[has_d as usize..];
    Ok(Op::Atom {
        space,
        op,
        ty,
        d: if has_d { Some(reg(&ops[0], s)?) } else { None },
        addr: addr(&o[0], space, s)?,
        b: src(&o[1], ty, s)?,
        c: match o.get(2) {
            Some(c) => src(c, ty, s)?,
            None => Src::Imm(0),
        },
    })
}

/// `.f16` / `.bf16` (`false`) or `.f16x2` / `.bf16x2` (`true`).
fn half_type(p: &str) -> Option<(Half, bool)> {
    match p.strip_suffix("x2") {
        Some(h) => Half::parse(h).map(|h| (h, true)),
        None => Half::parse(p).map(|h| (h, false)),
    }
}

/// `cvt` to or from a 16-bit float: `.f32` to `.f16`/`.bf16` (also packed `x2`, two sources)
/// and back. The other half-precision conversions (integers, `.f64`) are not simulated.
fn cvt_half(m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    let rnd = m.float_rnd();
    let relu = m.take("relu");
    let satfinite = m.take("satfinite");
    let ftz = m.take("ftz");
    let sat = m.take("sat");
    let rest = m.take_rest();
    let (dty, sty) = match rest[..] {
        [d, a] => (d, a),
        _ => return Err(format!("cvt: unsupported modifiers {rest:?}")),
    };
    match (half_type(dty), half_type(sty)) {
        (Some((half, packed)), None) if sty == "f32" => {
            let rnd = rnd.ok_or("cvt to a 16-bit float needs .rn, .rz, .rm or .rp")?;
            if (packed || relu || satfinite) && !matches!(rnd, Rnd::Rn | Rnd::Rz) {
                return Err("packed, .relu and .satfinite conversions take .rn or .rz".into());
            }
            if packed && (ftz || sat) {
                return Err("packed conversions take no .ftz or .sat".into());
            }
            if sat && half == Half::Bf16 {
                return Err(".sat is not defined for .bf16".into());
            }
            want(ops, if packed { 3 } else { 2 })?;
            Ok(Op::CvtToHalf {
                m: ToHalf {
                    half,
                    rnd,
                    relu,
                    satfinite,
                    ftz,
                    sat,
                },
                d: reg(&ops[0], s)?,
                a: src(&ops[1], Ty::F32, s)?,
                b: match ops.get(2) {
                    Some(b) => Some(src(b, Ty::F32, s)?),
                    None => None,
                },
            })
        }
        (None, Some((half, false))) if dty == "f32" => {
            if rnd.is_some() || relu || satfinite {
                return Err("widening to .f32 takes no rounding, .relu or .satfinite".into());
            }
            want(ops, 2)?;
            Ok(Op::CvtFromHalf {
                half,
                ftz,
                sat,
                d: reg(&ops[0], s)?,
                a: src(&ops[1], Ty::B16, s)?,
            })
        }
        _ => Err(format!(
            "cvt.{dty}.{sty} is not supported (the simulator converts .f32 to and from \
             .f16/.bf16, and .f32 pairs to .f16x2/.bf16x2)"
        )),
    }
}

/// The registers or values of a brace-enclosed vector operand of `n` elements.
fn vector<'o>(o: &'o Operand, n: usize, what: &str) -> R<&'o [Operand]> {
    match o {
        Operand::Vector(v) if v.len() == n => Ok(v),
        _ => Err(format!("{what} must be a vector of {n} registers {{..}}")),
    }
}

fn mma(m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    m.require("sync", "mma")?;
    m.require("aligned", "mma")?;
    let form = m.take_rest();
    let ab = match form[..] {
        ["m16n8k16", "row", "col", "f32", a, b, "f32"] if a == b => Half::parse(a),
        _ => None,
    };
    let Some(ab) = ab else {
        return Err(format!(
            "mma.sync.aligned.{} is not supported (the simulator runs \
             m16n8k16.row.col.f32.bf16.bf16.f32 and m16n8k16.row.col.f32.f16.f16.f32)",
            form.join(".")
        ));
    };
    want(ops, 4)?;
    let regs = |o: &Operand, what: &str| -> R<[Reg; 4]> {
        let v = vector(o, 4, what)?;
        Ok([
            reg(&v[0], s)?,
            reg(&v[1], s)?,
            reg(&v[2], s)?,
            reg(&v[3], s)?,
        ])
    };
    let srcs = |o: &Operand, n: usize, ty: Ty, what: &str| -> R<Vec<Src>> {
        vector(o, n, what)?.iter().map(|x| src(x, ty, s)).collect()
    };
    let a = srcs(&ops[1], 4, Ty::B32, "A")?;
    let b = srcs(&ops[2], 2, Ty::B32, "B")?;
    let c = srcs(&ops[3], 4, Ty::F32, "C")?;
    Ok(Op::Mma {
        ab,
        d: regs(&ops[0], "D")?,
        a: [a[0], a[1], a[2], a[3]],
        b: [b[0], b[1]],
        c: [c[0], c[1], c[2], c[3]],
    })
}

fn ldmatrix(m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    m.require("sync", "ldmatrix")?;
    m.require("aligned", "ldmatrix")?;
    m.require("m8n8", "ldmatrix (the simulator runs the .m8n8 shape)")?;
    let n = match m.take_any(&["x1", "x2", "x4"]) {
        Some("x1") => 1,
        Some("x2") => 2,
        Some(_) => 4,
        None => return Err("ldmatrix needs .x1, .x2 or .x4".into()),
    };
    let trans = m.take("trans");
    let space = m.space()?;
    if !matches!(space, Space::Shared | Space::Generic) {
        return Err("ldmatrix reads .shared memory".into());
    }
    m.require("b16", "ldmatrix .m8n8")?;
    want(ops, 2)?;
    let d = vector(&ops[0], n, "the destination")?
        .iter()
        .map(|o| reg(o, s))
        .collect::<R<Vec<_>>>()?;
    Ok(Op::Ldmatrix {
        trans,
        space,
        d,
        addr: addr(&ops[1], space, s)?,
    })
}

fn cp_async(m: &mut Mods, ops: &[Operand], s: &Scope) -> R<Op> {
    m.require("async", "cp (only cp.async is supported)")?;
    if m.take("commit_group") {
        want(ops, 0)?;
        return Ok(Op::CpAsyncCommit);
    }
    if m.take("wait_all") {
        want(ops, 0)?;
        return Ok(Op::CpAsyncWait { n: 0, all: true });
    }
    if m.take("wait_group") {
        want(ops, 1)?;
        return match &ops[0] {
            Operand::Lit(Lit::Int(n)) if *n <= u32::MAX as u64 => Ok(Op::CpAsyncWait {
                n: *n as u32,
                all: false,
            }),
            _ => Err("cp.async.wait_group takes an integer constant".into()),
        };
    }
    let cg = match m.take_any(&["ca", "cg"]) {
        Some(c) => c == "cg",
        None => return Err("cp.async needs .ca or .cg".into()),
    };
    if m.take_any(&["shared", "shared::cta"]).is_none() {
        return Err("cp.async needs .shared (the destination)".into());
    }
    m.require("global", "cp.async")?;
    for hint in ["L2::64B", "L2::128B", "L2::256B"] {
        m.take(hint);
    }
    if ops.len() != 3 && ops.len() != 4 {
        return Err(
            "cp.async takes [dst], [src], cp-size and an optional src-size or \
                    ignore-src predicate (no cache policy)"
                .into(),
        );
    }
    let bytes = match &ops[2] {
        Operand::Lit(Lit::Int(n @ (4 | 8 | 16))) => *n as u32,
        _ => return Err("cp-size must be the constant 4, 8 or 16".into()),
    };
    if cg && bytes != 16 {
        return Err("cp.async.cg copies 16 bytes".into());
    }
    let source = match ops.get(3) {
        None => CpSource::Full,
        Some(Operand::Lit(Lit::Int(n))) if *n > bytes as u64 => {
            return Err(format!("src-size {n} exceeds cp-size {bytes}"))
        }
        Some(o @ Operand::Name(n)) if matches!(s.lookup(n), Some(Symbol::Reg(_, Ty::Pred))) => {
            CpSource::IgnoreSrc(pred(o, s)?)
        }
        Some(o @ Operand::Not(_)) => CpSource::IgnoreSrc(pred(o, s)?),
        Some(o) => CpSource::SrcSize(src(o, Ty::U32, s)?),
    };
    Ok(Op::CpAsync {
        bytes,
        dst: addr(&ops[0], Space::Shared, s)?,
        src: addr(&ops[1], Space::Global, s)?,
        source,
    })
}
