//! A parser for the `.entry` signatures of PTX text (`.visible .entry NAME( .param .TY NAME,
//! ... )`, the form kernels/README.md allows) and the comparison with the ABI's entries.

use bella::backend::ptx::abi::Entry;

/// One `.entry` of a file: its name and `(ptx type, name)` parameters in order.
#[derive(Debug, PartialEq)]
pub struct Signature {
    pub name: String,
    pub params: Vec<(String, String)>,
}

/// Every `.entry` of `src` (comments stripped first).
pub fn parse(src: &str) -> Vec<Signature> {
    let text: String = src
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(".entry") {
        rest = &rest[at + ".entry".len()..];
        let open = rest.find('(').expect("`(` after .entry");
        let close = rest.find(')').expect("`)` closing the parameter list");
        let name = rest[..open].trim().to_string();
        let params = rest[open + 1..close]
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                let words: Vec<&str> = p.split_whitespace().collect();
                assert!(
                    words.len() == 3 && words[0] == ".param" && words[1].starts_with('.'),
                    "{name}: unexpected parameter `{p}`"
                );
                (words[1][1..].to_string(), words[2].to_string())
            })
            .collect();
        out.push(Signature { name, params });
        rest = &rest[close..];
    }
    out
}

/// How `entries` (the ABI) differ from the `.entry` signatures of `sources` (file name,
/// text): missing or extra entries, wrong files, parameter lists that are not the same
/// names and types in the same order. Empty when they agree.
pub fn mismatches(entries: &[Entry], sources: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for (file, src) in sources {
        for sig in parse(src) {
            seen.push(sig.name.clone());
            let Some(e) = entries.iter().find(|e| e.name == sig.name) else {
                problems.push(format!("{file}: `{}` is not in the ABI", sig.name));
                continue;
            };
            if &e.file != file {
                problems.push(format!("`{}`: in {file}, the ABI says {}", e.name, e.file));
            }
            let abi: Vec<(String, String)> = e
                .params
                .iter()
                .map(|p| (p.ty.ptx().to_string(), p.name.clone()))
                .collect();
            if abi != sig.params {
                problems.push(format!(
                    "`{}`: the PTX takes {:?}, the ABI lists {:?}",
                    e.name, sig.params, abi
                ));
            }
        }
    }
    for e in entries {
        if !seen.contains(&e.name) {
            problems.push(format!(
                "`{}` is in the ABI but in no kernels/*.ptx",
                e.name
            ));
        }
    }
    problems
}
