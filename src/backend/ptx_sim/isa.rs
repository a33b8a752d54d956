//! The decoded form of a PTX kernel: what the parser produces and the executor runs.
//!
//! Every register of a thread lives in one flat `u64` file (predicates hold 0 or 1, 32-bit
//! values are zero-extended); operands are indices into it or immediates already converted to
//! the bits of the instruction's type, so the executor never looks at names or strings.

use std::sync::Arc;

/// Index into a thread's register file.
pub type Reg = u32;

/// Special registers occupy the first slots of every register file; the executor writes them
/// when a thread starts, so reading `%tid.x` is an ordinary register read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    TidX,
    TidY,
    TidZ,
    NtidX,
    NtidY,
    NtidZ,
    CtaidX,
    CtaidY,
    CtaidZ,
    NctaidX,
    NctaidY,
    NctaidZ,
    LaneId,
    WarpId,
    NWarpId,
}

impl Special {
    pub const ALL: [Special; 15] = [
        Special::TidX,
        Special::TidY,
        Special::TidZ,
        Special::NtidX,
        Special::NtidY,
        Special::NtidZ,
        Special::CtaidX,
        Special::CtaidY,
        Special::CtaidZ,
        Special::NctaidX,
        Special::NctaidY,
        Special::NctaidZ,
        Special::LaneId,
        Special::WarpId,
        Special::NWarpId,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Special::TidX => "%tid.x",
            Special::TidY => "%tid.y",
            Special::TidZ => "%tid.z",
            Special::NtidX => "%ntid.x",
            Special::NtidY => "%ntid.y",
            Special::NtidZ => "%ntid.z",
            Special::CtaidX => "%ctaid.x",
            Special::CtaidY => "%ctaid.y",
            Special::CtaidZ => "%ctaid.z",
            Special::NctaidX => "%nctaid.x",
            Special::NctaidY => "%nctaid.y",
            Special::NctaidZ => "%nctaid.z",
            Special::LaneId => "%laneid",
            Special::WarpId => "%warpid",
            Special::NWarpId => "%nwarpid",
        }
    }
    pub fn reg(self) -> Reg {
        self as Reg
    }
}

/// Number of register slots reserved for the special registers.
pub const SPECIAL_REGS: u32 = Special::ALL.len() as u32;

/// Scalar types. `B*` are untyped bits (they behave as unsigned where arithmetic needs a sign).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Pred,
    B8,
    B16,
    B32,
    B64,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F32,
    F64,
}

impl Ty {
    pub fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "pred" => Ty::Pred,
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            _ => return None,
        })
    }
    pub fn bits(self) -> u32 {
        match self {
            Ty::Pred => 1,
            Ty::B8 | Ty::U8 | Ty::S8 => 8,
            Ty::B16 | Ty::U16 | Ty::S16 => 16,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 => 32,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 64,
        }
    }
    pub fn bytes(self) -> u32 {
        self.bits().div_ceil(8)
    }
    pub fn is_float(self) -> bool {
        matches!(self, Ty::F32 | Ty::F64)
    }
    pub fn is_signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }
    pub fn name(self) -> &'static str {
        match self {
            Ty::Pred => "pred",
            Ty::B8 => "b8",
            Ty::B16 => "b16",
            Ty::B32 => "b32",
            Ty::B64 => "b64",
            Ty::U8 => "u8",
            Ty::U16 => "u16",
            Ty::U32 => "u32",
            Ty::U64 => "u64",
            Ty::S8 => "s8",
            Ty::S16 => "s16",
            Ty::S32 => "s32",
            Ty::S64 => "s64",
            Ty::F32 => "f32",
            Ty::F64 => "f64",
        }
    }
}

/// A source operand: a register or an immediate (already the bits of the operand's type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    Reg(Reg),
    Imm(u64),
}

/// State spaces an address can live in. `Generic` addresses are resolved through windows
/// (see `memory`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Generic,
    Global,
    Shared,
    Local,
    Param,
}

impl Space {
    pub fn name(self) -> &'static str {
        match self {
            Space::Generic => "generic",
            Space::Global => "global",
            Space::Shared => "shared",
            Space::Local => "local",
            Space::Param => "param",
        }
    }
}

/// `[base+offset]`. A symbol base (a shared variable, a kernel parameter) is resolved by the
/// parser into `Src::Imm` of its address in its state space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    pub base: Src,
    pub offset: i64,
}

/// Floating-point rounding of an instruction (`.rn` when none is written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rnd {
    /// to nearest, ties to even
    Rn,
    /// toward zero
    Rz,
    /// toward -inf
    Rm,
    /// toward +inf
    Rp,
}

/// Float modifiers shared by most f32 instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FMods {
    pub rnd: Rnd,
    /// flush subnormal inputs and results to sign-preserving zero
    pub ftz: bool,
    /// clamp the result to [0, 1] (NaN gives 0)
    pub sat: bool,
}

impl FMods {
    pub const RN: FMods = FMods {
        rnd: Rnd::Rn,
        ftz: false,
        sat: false,
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Abs,
    Not,
    /// logical not of an integer: 1 if zero else 0
    Cnot,
    Popc,
    Clz,
    Brev,
    Rcp,
    Sqrt,
    Rsqrt,
    Ex2,
    Lg2,
    Sin,
    Cos,
    Tanh,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    /// `mul.lo` for integers, `mul` for floats
    Mul,
    MulHi,
    /// `mul.wide`: the full product, destination twice as wide as `ty`
    MulWide,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerOp {
    MadLo,
    MadHi,
    /// destination and addend twice as wide as `ty`
    MadWide,
    /// `fma` and `mad.f32` (a fused multiply-add)
    Fma,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

impl Cmp {
    pub fn parse(s: &str) -> Option<Cmp> {
        Some(match s {
            "eq" => Cmp::Eq,
            "ne" => Cmp::Ne,
            "lt" => Cmp::Lt,
            "le" => Cmp::Le,
            "gt" => Cmp::Gt,
            "ge" => Cmp::Ge,
            "lo" => Cmp::Lo,
            "ls" => Cmp::Ls,
            "hi" => Cmp::Hi,
            "hs" => Cmp::Hs,
            "equ" => Cmp::Equ,
            "neu" => Cmp::Neu,
            "ltu" => Cmp::Ltu,
            "leu" => Cmp::Leu,
            "gtu" => Cmp::Gtu,
            "geu" => Cmp::Geu,
            "num" => Cmp::Num,
            "nan" => Cmp::Nan,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
}

/// A predicate source, possibly negated (`!%p`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PredSrc {
    pub reg: Reg,
    pub negated: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomOp {
    Add,
    Min,
    Max,
    Exch,
    Cas,
    And,
    Or,
    Xor,
    Inc,
    Dec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

/// A 16-bit float format: `.f16` (IEEE binary16) or `.bf16` (bfloat16). Registers hold
/// their bits (`.b16`, or two per `.b32` for `.f16x2` / `.bf16x2`, the first element in the
/// low half).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    F16,
    Bf16,
}

impl Half {
    pub fn parse(s: &str) -> Option<Half> {
        match s {
            "f16" => Some(Half::F16),
            "bf16" => Some(Half::Bf16),
            _ => None,
        }
    }
}

/// Modifiers of a conversion from `.f32` to a 16-bit float.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToHalf {
    pub half: Half,
    pub rnd: Rnd,
    /// `.relu`: negative results (and -0) become +0, NaN the canonical NaN
    pub relu: bool,
    /// `.satfinite`: results beyond the largest finite value (infinities too) become it
    pub satfinite: bool,
    /// `.ftz`: a subnormal f32 input is flushed to a zero of its sign first
    pub ftz: bool,
    /// `.sat`: the input is clamped to [0, 1] first (NaN gives 0)
    pub sat: bool,
}

/// Where the bytes of a `cp.async` come from: all `cp-size` bytes from the source, the
/// first `src-size` (the rest zero), or none when the `ignore-src` predicate is true.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpSource {
    Full,
    SrcSize(Src),
    IgnoreSrc(PredSrc),
}

/// One decoded instruction. Field names follow the PTX ISA's operand names (d, a, b, c).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `mov`, `cvta` between identical windows, `mov` of a symbol address: `d = a` (bits).
    Mov {
        d: Reg,
        a: Src,
    },
    /// `mov.b64 d, {lo, hi}` / `mov.b32 d, {a, b}`: pack `parts` of `part_bits` each.
    Pack {
        d: Reg,
        parts: Vec<Src>,
        part_bits: u32,
    },
    /// `mov.b64 {lo, hi}, a`: split `a` into `parts` of `part_bits` each (`None` = `_`).
    Unpack {
        parts: Vec<Option<Reg>>,
        a: Src,
        part_bits: u32,
    },
    Unary {
        op: UnOp,
        ty: Ty,
        fm: FMods,
        d: Reg,
        a: Src,
    },
    Binary {
        op: BinOp,
        ty: Ty,
        fm: FMods,
        d: Reg,
        a: Src,
        b: Src,
    },
    Ternary {
        op: TerOp,
        ty: Ty,
        fm: FMods,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `setp.cmp[.bool].ty p[|q], a, b[, {!}c]`: `p = (a cmp b) bool c`, `q = !(a cmp b) bool c`.
    Setp {
        cmp: Cmp,
        ty: Ty,
        ftz: bool,
        p: Option<Reg>,
        q: Option<Reg>,
        a: Src,
        b: Src,
        combine: Option<(BoolOp, PredSrc)>,
    },
    /// `selp.ty d, a, b, c`: `d = c ? a : b`.
    Selp {
        d: Reg,
        a: Src,
        b: Src,
        c: PredSrc,
    },
    Cvt {
        dty: Ty,
        sty: Ty,
        /// float rounding (`.rn .rz .rm .rp`) or, with `int_rnd`, rounding to an integer
        /// (`.rni .rzi .rmi .rpi`)
        rnd: Rnd,
        int_rnd: bool,
        ftz: bool,
        sat: bool,
        d: Reg,
        a: Src,
    },
    /// `cvt.frnd[.relu][.satfinite].{f16,bf16}.f32 d, a` (`b: None`) and the packed
    /// `cvt.frnd[.relu][.satfinite].{f16,bf16}x2.f32 d, a, b`: `a` to the upper half of `d`,
    /// `b` to the lower half, as the ISA specifies.
    CvtToHalf {
        m: ToHalf,
        d: Reg,
        a: Src,
        b: Option<Src>,
    },
    /// `cvt[.ftz][.sat].f32.{f16,bf16} d, a`: exact widening.
    CvtFromHalf {
        half: Half,
        ftz: bool,
        sat: bool,
        d: Reg,
        a: Src,
    },
    /// `cvta.space` (to generic) or `cvta.to.space` (from generic).
    Cvta {
        to_generic: bool,
        space: Space,
        d: Reg,
        a: Src,
    },
    /// `ld.space[.vN].ty`: `d.len()` registers from consecutive elements.
    Ld {
        space: Space,
        ty: Ty,
        d: Vec<Option<Reg>>,
        addr: Addr,
    },
    St {
        space: Space,
        ty: Ty,
        s: Vec<Src>,
        addr: Addr,
    },
    /// `atom` (with `d`) and `red` (without).
    Atom {
        space: Space,
        op: AtomOp,
        ty: Ty,
        d: Option<Reg>,
        addr: Addr,
        b: Src,
        c: Src,
    },
    Bra {
        target: u32,
    },
    /// `bar.sync` / `barrier.sync` (`aligned`: every thread of the CTA executes this same
    /// instruction, `bar.sync` and `barrier.sync.aligned`).
    Bar {
        id: Src,
        count: Option<Src>,
        aligned: bool,
    },
    /// `bar.warp.sync membermask`.
    WarpSync {
        mask: Src,
    },
    Shfl {
        mode: ShflMode,
        d: Reg,
        p: Option<Reg>,
        a: Src,
        b: Src,
        c: Src,
        mask: Src,
    },
    Vote {
        mode: VoteMode,
        d: Reg,
        a: PredSrc,
        mask: Src,
    },
    /// `mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 d, a, b, c`: a warp
    /// collective (see `warp_matrix`).
    Mma {
        ab: Half,
        d: [Reg; 4],
        a: [Src; 4],
        b: [Src; 2],
        c: [Src; 4],
    },
    /// `ldmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans][.shared].b16 {d..}, [addr]`: a warp
    /// collective; `d` holds one register per matrix.
    Ldmatrix {
        trans: bool,
        space: Space,
        d: Vec<Reg>,
        addr: Addr,
    },
    /// `cp.async.{ca,cg}.shared.global [dst], [src], bytes[, src-size | ignore-src]`.
    CpAsync {
        bytes: u32,
        dst: Addr,
        src: Addr,
        source: CpSource,
    },
    /// `cp.async.commit_group`.
    CpAsyncCommit,
    /// `cp.async.wait_group n` (`all`: `cp.async.wait_all`, a commit then `wait_group 0`).
    CpAsyncWait {
        n: u32,
        all: bool,
    },
    /// `membar` / `fence`: a no-op here, the simulator is sequentially consistent.
    Fence,
    /// `ret` and `exit`.
    Exit,
}

/// An instruction with its guard and its source line (1-based) for error messages.
#[derive(Clone, Debug, PartialEq)]
pub struct Instr {
    pub guard: Option<PredSrc>,
    pub op: Op,
    pub line: u32,
}

/// A kernel parameter, laid out in the parameter buffer as the ISA does (naturally aligned).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    pub name: String,
    pub ty: Ty,
    pub offset: u32,
}

/// A decoded `.entry`.
#[derive(Debug)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<ParamDecl>,
    pub param_bytes: u32,
    pub code: Vec<Instr>,
    /// Size of a thread's register file (special registers included).
    pub nregs: u32,
    /// Bytes of static `.shared` variables; dynamic (`.extern`) shared memory starts at
    /// `dyn_shared_offset`.
    pub static_shared: u32,
    pub dyn_shared_offset: Option<u32>,
    /// Bytes of `.local` memory per thread.
    pub local_bytes: u32,
    /// `.maxntid`/`.reqntid`: the most threads a CTA may have (a launch with more fails).
    pub max_threads: Option<u64>,
    /// The module's source lines, to quote the failing line in errors.
    pub source: Arc<Vec<String>>,
}

impl Kernel {
    /// The source text of a 1-based line, trimmed.
    pub fn line_text(&self, line: u32) -> &str {
        self.source
            .get((line as usize).wrapping_sub(1))
            .map(|s| s.trim())
            .unwrap_or("")
    }
}
