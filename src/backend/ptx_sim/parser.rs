//! PTX module structure: directives, `.entry` headers, declarations, labels and operand
//! syntax. Each instruction statement is handed to `decode` with its operands parsed into
//! [`Operand`]s; this file knows nothing about what an opcode means.

use super::decode::decode;
use super::isa::{Instr, Kernel, Op, ParamDecl, Reg, Special, Ty, SPECIAL_REGS};
use super::lexer::{lex, Tok, Token};
use std::collections::HashMap;
use std::sync::Arc;

/// A parsed module: its kernels by name.
#[derive(Debug, Default)]
pub struct Module {
    pub kernels: HashMap<String, Arc<Kernel>>,
}

/// A literal as written; converted to the bits of an instruction's type by `decode`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lit {
    Int(u64),
    Float(f64),
    F32Bits(u32),
    F64Bits(u64),
}

/// One operand as written.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A register, special register, symbol, label or `_`.
    Name(String),
    Lit(Lit),
    /// `!%p`
    Not(Box<Operand>),
    /// `%p|%q`
    Pair(String, String),
    /// `{a, b, c, d}`
    Vector(Vec<Operand>),
    /// `[base+offset]`; `base` is `None` for an absolute address.
    Address {
        base: Option<String>,
        offset: i64,
    },
}

/// What a name can be inside a kernel body.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Symbol {
    Reg(Reg, Ty),
    /// A variable's address in its state space (`.shared`, `.local` or `.param`).
    Shared(u32),
    Local(u32),
    Param(u32),
}

/// Names visible in the kernel being parsed; nested `{ }` blocks open scopes.
pub struct Scope {
    frames: Vec<HashMap<String, Symbol>>,
}

impl Scope {
    pub fn lookup(&self, name: &str) -> Option<Symbol> {
        if let Some(s) = Special::ALL.iter().find(|s| s.name() == name) {
            return Some(Symbol::Reg(s.reg(), Ty::U32));
        }
        self.frames.iter().rev().find_map(|f| f.get(name).copied())
    }
    fn declare(&mut self, name: String, sym: Symbol, line: u32) -> Result<(), String> {
        let frame = self.frames.last_mut().expect("a scope is always open");
        if frame.insert(name.clone(), sym).is_some() {
            return Err(format!("line {line}: `{name}` declared twice"));
        }
        Ok(())
    }
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

/// Parse a whole module. Errors are `line N: message`.
pub fn parse_module(src: &str) -> Result<Module, String> {
    let source = Arc::new(src.lines().map(str::to_string).collect::<Vec<_>>());
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
    };
    let mut module = Module::default();
    // module-scope .shared variables are visible to (and allocated in) every kernel
    let mut module_shared: Vec<(String, u32, u32)> = Vec::new();
    while let Some(t) = p.peek() {
        let line = t.line;
        let name = match &t.tok {
            Tok::Name(n) => n.clone(),
            other => return Err(format!("line {line}: unexpected {other:?} at module scope")),
        };
        match name.as_str() {
            ".version" | ".address_size" => {
                p.pos += 1;
                p.next()?; // the number
            }
            ".target" => {
                p.pos += 1;
                p.next()?;
                while p.eat_punct(',') {
                    p.next()?;
                }
            }
            ".visible" | ".weak" => p.pos += 1,
            ".entry" => {
                p.pos += 1;
                let k = p.entry(&module_shared, &source)?;
                if module.kernels.contains_key(&k.name) {
                    return Err(format!("line {line}: kernel `{}` defined twice", k.name));
                }
                module.kernels.insert(k.name.clone(), Arc::new(k));
            }
            ".shared" => {
                p.pos += 1;
                let (var, align, size) = p.variable(line)?;
                module_shared.push((var, align, size));
            }
            ".pragma" => {
                p.pos += 1;
                p.next()?;
                p.expect_punct(';')?;
            }
            _ => {
                return Err(format!(
                    "line {line}: unsupported module-scope directive `{name}` (the simulator \
                     runs .entry kernels with .shared variables)"
                ))
            }
        }
    }
    Ok(module)
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }
    fn line(&self) -> u32 {
        self.peek()
            .or(self.toks.last())
            .map(|t| t.line)
            .unwrap_or(0)
    }
    fn next(&mut self) -> Result<Token, String> {
        let t = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or_else(|| "unexpected end of module".to_string())?;
        self.pos += 1;
        Ok(t)
    }
    fn eat_punct(&mut self, c: char) -> bool {
        if matches!(self.peek(), Some(Token { tok: Tok::Punct(p), .. }) if *p == c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect_punct(&mut self, c: char) -> Result<(), String> {
        let line = self.line();
        if self.eat_punct(c) {
            Ok(())
        } else {
            Err(format!(
                "line {line}: expected `{c}`, found {:?}",
                self.peek().map(|t| &t.tok)
            ))
        }
    }
    fn name(&mut self) -> Result<String, String> {
        let t = self.next()?;
        match t.tok {
            Tok::Name(n) => Ok(n),
            other => Err(format!("line {}: expected a name, found {other:?}", t.line)),
        }
    }
    fn peek_name(&self) -> Option<&str> {
        match self.peek() {
            Some(Token {
                tok: Tok::Name(n), ..
            }) => Some(n.as_str()),
            _ => None,
        }
    }
    fn int(&mut self) -> Result<u64, String> {
        let t = self.next()?;
        match t.tok {
            Tok::Int(v) => Ok(v),
            other => Err(format!(
                "line {}: expected an integer, found {other:?}",
                t.line
            )),
        }
    }

    /// `[.align N] .type name[dims]...` after `.shared`/`.local`: (name, align, bytes).
    /// `name[]` (dynamic shared memory) has size 0.
    fn variable(&mut self, line: u32) -> Result<(String, u32, u32), String> {
        let mut align = 0;
        let ty;
        loop {
            let n = self.name()?;
            match n.as_str() {
                ".align" => align = self.int()? as u32,
                ".v2" | ".v4" => {
                    return Err(format!("line {line}: vector variables are not supported"))
                }
                _ if n.starts_with('.') => {
                    ty = Ty::parse(&n[1..]).ok_or_else(|| {
                        format!("line {line}: unknown type `{n}` in a variable declaration")
                    })?;
                    break;
                }
                _ => return Err(format!("line {line}: expected a type before `{n}`")),
            }
        }
        let var = self.name()?;
        let mut count: u64 = 1;
        while self.eat_punct('[') {
            if self.eat_punct(']') {
                count = 0;
                continue;
            }
            count = count.saturating_mul(self.int()?);
            self.expect_punct(']')?;
        }
        if self.eat_punct('=') {
            return Err(format!(
                "line {line}: initialised variables are not supported"
            ));
        }
        self.expect_punct(';')?;
        let bytes = count.saturating_mul(ty.bytes() as u64);
        let bytes = u32::try_from(bytes).map_err(|_| format!("line {line}: `{var}` too large"))?;
        Ok((var, align.max(ty.bytes()), bytes))
    }

    /// `name ( .param ... ) [performance directives] { body }`
    fn entry(
        &mut self,
        module_shared: &[(String, u32, u32)],
        source: &Arc<Vec<String>>,
    ) -> Result<Kernel, String> {
        let name = self.name()?;
        let mut params = Vec::new();
        let mut param_bytes = 0u32;
        self.expect_punct('(')?;
        if !self.eat_punct(')') {
            loop {
                let line = self.line();
                if self.name()? != ".param" {
                    return Err(format!("line {line}: expected `.param` in `{name}`'s list"));
                }
                let mut ty = None;
                while let Some(n) = self.peek_name() {
                    if !n.starts_with('.') {
                        break;
                    }
                    let n = self.name()?;
                    match n.as_str() {
                        ".ptr" | ".global" | ".const" | ".shared" | ".local" => {}
                        ".align" => {
                            self.int()?;
                        }
                        _ => {
                            ty = Some(Ty::parse(&n[1..]).ok_or_else(|| {
                                format!("line {line}: unsupported parameter type `{n}`")
                            })?)
                        }
                    }
                }
                let ty = ty.ok_or_else(|| format!("line {line}: parameter without a type"))?;
                let pname = self.name()?;
                if self.eat_punct('[') {
                    return Err(format!(
                        "line {line}: array parameter `{pname}` not supported"
                    ));
                }
                let align = ty.bytes();
                let offset = param_bytes.div_ceil(align) * align;
                param_bytes = offset + ty.bytes();
                params.push(ParamDecl {
                    name: pname,
                    ty,
                    offset,
                });
                if self.eat_punct(')') {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        // performance directives: hints to ptxas (`.maxntid` is checked at launch)
        let mut max_threads = None;
        while let Some(n) = self.peek_name() {
            let line = self.line();
            let n = n.to_string();
            self.pos += 1;
            match n.as_str() {
                ".maxntid" | ".reqntid" => {
                    let mut dims = vec![self.int()?];
                    while self.eat_punct(',') {
                        dims.push(self.int()?);
                    }
                    max_threads = Some(dims.iter().product::<u64>());
                }
                ".minnctapersm" | ".maxnctapersm" | ".maxnreg" => {
                    self.int()?;
                }
                ".noreturn" => {}
                _ => {
                    return Err(format!(
                        "line {line}: unsupported directive `{n}` on `{name}`"
                    ))
                }
            }
        }
        let mut body = Body {
            scope: Scope {
                frames: vec![HashMap::new()],
            },
            code: Vec::new(),
            labels: HashMap::new(),
            fixups: Vec::new(),
            nregs: SPECIAL_REGS,
            shared: 0,
            dyn_shared: None,
            local: 0,
        };
        for (var, align, size) in module_shared {
            body.alloc_shared(var.clone(), *align, *size, 0)?;
        }
        for p in &params {
            body.scope
                .declare(p.name.clone(), Symbol::Param(p.offset), 0)?;
        }
        self.expect_punct('{')?;
        self.block(&mut body)?;
        let Body {
            mut code,
            labels,
            fixups,
            nregs,
            shared,
            dyn_shared,
            local,
            ..
        } = body;
        for (at, label, line) in fixups {
            let target = *labels
                .get(&label)
                .ok_or_else(|| format!("line {line}: undefined label `{label}`"))?;
            if let Op::Bra { target: t } = &mut code[at].op {
                *t = target;
            }
        }
        // falling off the end of the body ends the thread, as `ret` would
        let last_line = self.toks[self.pos - 1].line;
        code.push(Instr {
            guard: None,
            op: Op::Exit,
            line: last_line,
        });
        Ok(Kernel {
            name,
            params,
            param_bytes,
            code,
            nregs,
            static_shared: shared,
            dyn_shared_offset: dyn_shared,
            local_bytes: local,
            max_threads,
            source: source.clone(),
        })
    }

    /// Statements up to the `}` that closes the current block.
    fn block(&mut self, body: &mut Body) -> Result<(), String> {
        loop {
            let t = self.next()?;
            let line = t.line;
            match t.tok {
                Tok::Punct('}') => return Ok(()),
                Tok::Punct('{') => {
                    body.scope.frames.push(HashMap::new());
                    self.block(body)?;
                    body.scope.frames.pop();
                }
                Tok::Punct('@') => {
                    let negated = self.eat_punct('!');
                    let pred = self.name()?;
                    let reg = match body.scope.lookup(&pred) {
                        Some(Symbol::Reg(r, Ty::Pred)) => r,
                        _ => return Err(format!("line {line}: guard `{pred}` is not a predicate")),
                    };
                    let opcode = self.name()?;
                    self.instruction(body, opcode, Some((reg, negated)), line)?;
                }
                Tok::Name(n) if self.eat_punct(':') => {
                    if body
                        .labels
                        .insert(n.clone(), body.code.len() as u32)
                        .is_some()
                    {
                        return Err(format!("line {line}: label `{n}` defined twice"));
                    }
                }
                Tok::Name(n) if n == ".reg" => self.reg_decl(body, line)?,
                Tok::Name(n) if n == ".shared" => {
                    let (var, align, size) = self.variable(line)?;
                    body.alloc_shared(var, align, size, line)?;
                }
                Tok::Name(n) if n == ".extern" => {
                    if self.name()? != ".shared" {
                        return Err(format!("line {line}: only `.extern .shared` is supported"));
                    }
                    let (var, align, _) = self.variable(line)?;
                    body.dyn_shared_var(var, align, line)?;
                }
                Tok::Name(n) if n == ".local" => {
                    let (var, align, size) = self.variable(line)?;
                    let offset = body.local.div_ceil(align) * align;
                    body.local = offset + size;
                    body.scope.declare(var, Symbol::Local(offset), line)?;
                }
                Tok::Name(n) if n == ".pragma" => {
                    self.next()?;
                    self.expect_punct(';')?;
                }
                Tok::Name(n) if n.starts_with('.') => {
                    return Err(format!("line {line}: unsupported directive `{n}`"))
                }
                Tok::Name(opcode) => self.instruction(body, opcode, None, line)?,
                other => return Err(format!("line {line}: unexpected {other:?}")),
            }
        }
    }

    /// `.reg .type %r<N>;` or `.reg .type %a, %b;`
    fn reg_decl(&mut self, body: &mut Body, line: u32) -> Result<(), String> {
        let tyname = self.name()?;
        // `.f16` / `.f16x2` registers hold bits (`.bf16` data lives in `.b16` / `.b32`)
        let ty = match tyname.as_str() {
            ".f16" => Some(Ty::B16),
            ".f16x2" => Some(Ty::B32),
            n => n.strip_prefix('.').and_then(Ty::parse),
        }
        .ok_or_else(|| format!("line {line}: unsupported register type `{tyname}`"))?;
        loop {
            let name = self.name()?;
            if self.eat_punct('<') {
                let n = self.int()?;
                self.expect_punct('>')?;
                for i in 0..n {
                    body.new_reg(format!("{name}{i}"), ty, line)?;
                }
            } else {
                body.new_reg(name, ty, line)?;
            }
            if self.eat_punct(';') {
                return Ok(());
            }
            self.expect_punct(',')?;
        }
    }

    fn instruction(
        &mut self,
        body: &mut Body,
        opcode: String,
        guard: Option<(Reg, bool)>,
        line: u32,
    ) -> Result<(), String> {
        let mut operands = Vec::new();
        if !self.eat_punct(';') {
            loop {
                operands.push(self.operand()?);
                if self.eat_punct(';') {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        let at = body.code.len();
        let op = decode(&opcode, &operands, &body.scope)
            .map_err(|e| format!("line {line}: `{opcode}`: {e}"))?;
        if let Op::Bra { .. } = op {
            match operands.first() {
                Some(Operand::Name(label)) => body.fixups.push((at, label.clone(), line)),
                _ => return Err(format!("line {line}: `{opcode}` needs a label")),
            }
        }
        body.code.push(Instr {
            guard: guard.map(|(reg, negated)| super::isa::PredSrc { reg, negated }),
            op,
            line,
        });
        Ok(())
    }

    fn operand(&mut self) -> Result<Operand, String> {
        let t = self.next()?;
        let line = t.line;
        Ok(match t.tok {
            Tok::Name(n) => {
                if self.eat_punct('|') {
                    Operand::Pair(n, self.name()?)
                } else {
                    Operand::Name(n)
                }
            }
            Tok::Int(v) => Operand::Lit(Lit::Int(v)),
            Tok::Float(v) => Operand::Lit(Lit::Float(v)),
            Tok::F32Bits(v) => Operand::Lit(Lit::F32Bits(v)),
            Tok::F64Bits(v) => Operand::Lit(Lit::F64Bits(v)),
            Tok::Punct('-') => match self.operand()? {
                Operand::Lit(Lit::Int(v)) => Operand::Lit(Lit::Int(v.wrapping_neg())),
                Operand::Lit(Lit::Float(v)) => Operand::Lit(Lit::Float(-v)),
                Operand::Lit(Lit::F32Bits(v)) => Operand::Lit(Lit::F32Bits(v ^ 0x8000_0000)),
                Operand::Lit(Lit::F64Bits(v)) => Operand::Lit(Lit::F64Bits(v ^ (1 << 63))),
                other => return Err(format!("line {line}: cannot negate {other:?}")),
            },
            Tok::Punct('!') => Operand::Not(Box::new(self.operand()?)),
            Tok::Punct('{') => {
                let mut items = vec![self.operand()?];
                while self.eat_punct(',') {
                    items.push(self.operand()?);
                }
                self.expect_punct('}')?;
                Operand::Vector(items)
            }
            Tok::Punct('[') => {
                let base = match self.peek() {
                    Some(Token {
                        tok: Tok::Name(_), ..
                    }) => Some(self.name()?),
                    _ => None,
                };
                let mut offset: i64 = 0;
                if base.is_none() {
                    offset = self.int()? as i64;
                }
                loop {
                    let sign: i64 = if self.eat_punct('+') {
                        if self.eat_punct('-') {
                            -1
                        } else {
                            1
                        }
                    } else if self.eat_punct('-') {
                        -1
                    } else {
                        break;
                    };
                    offset = offset.wrapping_add(sign.wrapping_mul(self.int()? as i64));
                }
                self.expect_punct(']')?;
                Operand::Address { base, offset }
            }
            other => return Err(format!("line {line}: unexpected {other:?} in operands")),
        })
    }
}

/// The kernel being built.
struct Body {
    scope: Scope,
    code: Vec<Instr>,
    labels: HashMap<String, u32>,
    /// (instruction, label, line) of branches to patch once all labels are known
    fixups: Vec<(usize, String, u32)>,
    nregs: u32,
    shared: u32,
    dyn_shared: Option<u32>,
    local: u32,
}

impl Body {
    fn new_reg(&mut self, name: String, ty: Ty, line: u32) -> Result<(), String> {
        let r = self.nregs;
        self.nregs += 1;
        self.scope.declare(name, Symbol::Reg(r, ty), line)
    }
    fn alloc_shared(
        &mut self,
        var: String,
        align: u32,
        size: u32,
        line: u32,
    ) -> Result<(), String> {
        if self.dyn_shared.is_some() {
            return Err(format!(
                "line {line}: static `.shared` `{var}` after `.extern .shared` is not supported"
            ));
        }
        let offset = self.shared.div_ceil(align) * align;
        self.shared = offset
            .checked_add(size)
            .ok_or_else(|| format!("line {line}: shared memory overflows"))?;
        self.scope.declare(var, Symbol::Shared(offset), line)
    }
    fn dyn_shared_var(&mut self, var: String, align: u32, line: u32) -> Result<(), String> {
        // every `.extern .shared` array starts at the same place: after the static ones
        let offset = self.shared.div_ceil(align.max(16)) * align.max(16);
        self.dyn_shared = Some(offset);
        self.scope.declare(var, Symbol::Shared(offset), line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
.version 7.8
.target sm_80
.address_size 64
.visible .entry k(
    .param .u64 p_out,
    .param .u32 p_n,
    .param .f32 p_s
)
.maxntid 64, 1, 1
{
    .reg .pred %p<2>;
    .reg .b32 %r<4>;
    .reg .f32 %f1, %f2;
    .reg .b64 %rd<3>;
    .shared .align 16 .b8 tile[100];
    .shared .f32 other[3];
    ld.param.u64 %rd0, [p_out];
    ld.param.u32 %r0, [p_n];
    mov.u32 %r1, %tid.x;
    setp.ge.u32 %p0, %r1, %r0;
    @%p0 bra DONE;
    mov.u32 %r2, other;
DONE:
    ret;
}
"#;

    #[test]
    fn parses_params_registers_shared_and_labels() {
        let m = parse_module(SMALL).unwrap();
        let k = &m.kernels["k"];
        let offsets: Vec<_> = k.params.iter().map(|p| (p.ty, p.offset)).collect();
        assert_eq!(offsets, vec![(Ty::U64, 0), (Ty::U32, 8), (Ty::F32, 12)]);
        assert_eq!(k.param_bytes, 16);
        assert_eq!(k.nregs, SPECIAL_REGS + 2 + 4 + 2 + 3);
        // tile at 0 (100 bytes), other aligned to 4 after it
        assert_eq!(k.static_shared, 112);
        assert_eq!(k.max_threads, Some(64));
        assert_eq!(k.code.len(), 7 + 1);
        assert_eq!(k.code[4].op, Op::Bra { target: 6 });
        // `other` is the 4-aligned shared address after `tile`; %r2 is the 5th declared register
        let other = super::super::isa::Src::Imm(100);
        assert_eq!(
            k.code[5].op,
            Op::Mov {
                d: SPECIAL_REGS + 4,
                a: other
            }
        );
        assert_eq!(k.code[4].line, 22);
        assert_eq!(k.line_text(22), "@%p0 bra DONE;");
    }

    #[test]
    fn errors_name_the_line() {
        let bad = SMALL.replace("ret;", "frobnicate.u32 %r1;");
        let e = parse_module(&bad).unwrap_err();
        assert!(e.contains("line 25") && e.contains("frobnicate"), "{e}");
        let bad = SMALL.replace("@%p0 bra DONE;", "@%p0 bra NOWHERE;");
        let e = parse_module(&bad).unwrap_err();
        assert!(e.contains("NOWHERE"), "{e}");
        let bad = SMALL.replace("%r1, %tid.x", "%r9, %tid.x");
        let e = parse_module(&bad).unwrap_err();
        assert!(e.contains("%r9"), "{e}");
    }
}
