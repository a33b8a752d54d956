//! PTX tokens: names (opcodes with their dotted modifiers, directives, registers, labels),
//! numbers, strings and punctuation, each with its 1-based source line.

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// Opcodes (`ld.global.v4.f32`), directives (`.reg`), registers (`%r1`, `%tid.x`),
    /// labels and symbols (`$L__BB0_2`, `smem`).
    Name(String),
    Int(u64),
    /// A decimal float literal (`1.5`, `7.8`).
    Float(f64),
    /// `0fXXXXXXXX`: exact f32 bits.
    F32Bits(u32),
    /// `0dXXXXXXXXXXXXXXXX`: exact f64 bits.
    F64Bits(u64),
    Str(String),
    Punct(char),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub line: u32,
}

fn name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, '_' | '$' | '%' | '.')
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.')
}

/// Split PTX text into tokens. Comments (`//`, `/* */`) are dropped.
pub fn lex(src: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1u32;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                if chars[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
            if i >= chars.len() {
                return Err(format!("line {line}: unterminated /* comment"));
            }
            i += 2;
        } else if c == '"' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != '"' && chars[i] != '\n' {
                i += 1;
            }
            if chars.get(i) != Some(&'"') {
                return Err(format!("line {line}: unterminated string"));
            }
            out.push(Token {
                tok: Tok::Str(chars[start..i].iter().collect()),
                line,
            });
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                // an exponent sign: 1e-3
                i += 1;
                if i < chars.len()
                    && matches!(chars[i], '+' | '-')
                    && matches!(chars[i - 1], 'e' | 'E')
                    && !is_hex_prefixed(&chars[start..i])
                {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().collect();
            let tok = number(&text).ok_or_else(|| format!("line {line}: bad number `{text}`"))?;
            out.push(Token { tok, line });
        } else if name_start(c) {
            let start = i;
            i += 1;
            while i < chars.len() {
                if name_char(chars[i]) {
                    i += 1;
                } else if chars[i] == ':' && chars.get(i + 1) == Some(&':') {
                    // scoped modifiers such as `.L2::128B`; a single `:` ends a label
                    i += 2;
                } else {
                    break;
                }
            }
            out.push(Token {
                tok: Tok::Name(chars[start..i].iter().collect()),
                line,
            });
        } else if "{}[]();,:+-<>|!@=".contains(c) {
            out.push(Token {
                tok: Tok::Punct(c),
                line,
            });
            i += 1;
        } else {
            return Err(format!("line {line}: unexpected character `{c}`"));
        }
    }
    Ok(out)
}

fn is_hex_prefixed(s: &[char]) -> bool {
    s.len() >= 2 && s[0] == '0' && matches!(s[1], 'x' | 'X' | 'f' | 'F' | 'd' | 'D')
}

/// Integer (decimal, `0x` hex, `0b` binary, leading-0 octal, optional `U` suffix) or float
/// (`0f`/`0d` hex bits, or decimal) literal.
fn number(text: &str) -> Option<Tok> {
    let lower = text.to_ascii_lowercase();
    if let Some(hex) = lower.strip_prefix("0f") {
        if hex.len() == 8 {
            return u32::from_str_radix(hex, 16).ok().map(Tok::F32Bits);
        }
    }
    if let Some(hex) = lower.strip_prefix("0d") {
        if hex.len() == 16 {
            return u64::from_str_radix(hex, 16).ok().map(Tok::F64Bits);
        }
    }
    let int = lower.strip_suffix('u').unwrap_or(&lower);
    if let Some(hex) = int.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok().map(Tok::Int);
    }
    if let Some(bin) = int.strip_prefix("0b") {
        return u64::from_str_radix(bin, 2).ok().map(Tok::Int);
    }
    if int.chars().all(|c| c.is_ascii_digit()) {
        if int.len() > 1 && int.starts_with('0') {
            return u64::from_str_radix(&int[1..], 8).ok().map(Tok::Int);
        }
        return int.parse().ok().map(Tok::Int);
    }
    lower.parse::<f64>().ok().map(Tok::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn numbers_in_every_form() {
        assert_eq!(
            toks("12 0x1F 0b101 017 7U 0f3F800000 0d3FF0000000000000 1.5 1e-3"),
            vec![
                Tok::Int(12),
                Tok::Int(31),
                Tok::Int(5),
                Tok::Int(15),
                Tok::Int(7),
                Tok::F32Bits(0x3F80_0000),
                Tok::F64Bits(0x3FF0_0000_0000_0000),
                Tok::Float(1.5),
                Tok::Float(1e-3),
            ]
        );
    }

    #[test]
    fn names_comments_and_lines() {
        let t =
            lex("ld.global.L2::128B.f32 %f1, [%rd2+-4]; // x\n/* a\n b */ $L1: %tid.x").unwrap();
        let names: Vec<_> = t.iter().map(|t| (t.tok.clone(), t.line)).collect();
        assert_eq!(names[0], (Tok::Name("ld.global.L2::128B.f32".into()), 1));
        assert_eq!(names[5], (Tok::Punct('+'), 1));
        assert_eq!(names[6], (Tok::Punct('-'), 1));
        assert_eq!(names[10], (Tok::Name("$L1".into()), 3));
        assert_eq!(names[11], (Tok::Punct(':'), 3));
        assert_eq!(names[12], (Tok::Name("%tid.x".into()), 3));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(lex("add.f32 %f1, %f2, #3;").is_err());
        assert!(lex("/* open").is_err());
        assert!(lex("0xZZ").is_err());
    }
}
