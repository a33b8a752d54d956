//! `shaders/abi.json` against a WGSL text, independently of the host: naga parses and
//! validates the text, and each `@compute` entry's workgroup size, used globals (naga's
//! `GlobalUse` per entry point: binding, variable, declared access, element type) and
//! parameter struct (name, size, members with types and offsets) are compared with the ABI.

use bella::backend::wgpu::abi::{Access, Entry, ParamsIn, Scalar};
use naga::{AddressSpace, Module, ScalarKind, StorageAccess, TypeInner, VectorSize};

/// What differs between the ABI entries listed for `file` and the WGSL text `source` (empty:
/// they agree).
pub fn disagreements(file: &str, source: &str, entries: &[Entry]) -> Vec<String> {
    let module = match naga::front::wgsl::parse_str(source) {
        Ok(m) => m,
        Err(e) => return vec![format!("{file}: does not parse: {e}")],
    };
    let flags = naga::valid::ValidationFlags::all();
    // `f16` (matmul_f16.wgsl, `enable f16;`); the other files use no capability.
    let caps = naga::valid::Capabilities::SHADER_FLOAT16;
    let info = match naga::valid::Validator::new(flags, caps).validate(&module) {
        Ok(i) => i,
        Err(e) => return vec![format!("{file}: does not validate: {e}")],
    };
    let listed: Vec<&Entry> = entries.iter().filter(|e| e.file == file).collect();
    let mut problems = Vec::new();
    for (i, ep) in module.entry_points.iter().enumerate() {
        if ep.stage != naga::ShaderStage::Compute {
            continue;
        }
        let Some(entry) = listed.iter().find(|e| e.name == ep.name) else {
            problems.push(format!("{file}: entry `{}` is not in the ABI", ep.name));
            continue;
        };
        if ep.workgroup_size != entry.workgroup_size {
            problems.push(format!(
                "{}: workgroup size {:?}, the ABI says {:?}",
                ep.name, ep.workgroup_size, entry.workgroup_size
            ));
        }
        let uses = info.get_entry_point(i);
        let mut used: Vec<String> = module
            .global_variables
            .iter()
            .filter(|(h, g)| g.binding.is_some() && !uses[*h].is_empty())
            .map(|(_, g)| describe_global(&module, g))
            .collect();
        used.sort();
        let mut expected = expected_globals(entry);
        expected.sort();
        if used != expected {
            problems.push(format!(
                "{}: uses the globals {used:?}, the ABI lists {expected:?}",
                ep.name
            ));
        }
        // Every read-write binding is written somewhere in the entry.
        for (h, g) in module.global_variables.iter() {
            let read_write = matches!(g.space, AddressSpace::Storage { access } if access.contains(StorageAccess::STORE));
            if read_write && !uses[h].is_empty() && !uses[h].contains(naga::valid::GlobalUse::WRITE)
            {
                problems.push(format!(
                    "{}: `{}` is read_write but never written",
                    ep.name,
                    g.name.as_deref().unwrap_or("?")
                ));
            }
        }
        if let Some(p) = struct_disagreement(&module, entry) {
            problems.push(format!("{}: {p}", ep.name));
        }
    }
    for e in &listed {
        if !module.entry_points.iter().any(|ep| ep.name == e.name) {
            problems.push(format!(
                "{file}: the ABI's entry `{}` is not in the shader",
                e.name
            ));
        }
    }
    problems
}

/// `binding N var space elem` for a bound global, as naga sees it.
fn describe_global(module: &Module, g: &naga::GlobalVariable) -> String {
    let binding = g.binding.as_ref().map_or(u32::MAX, |b| b.binding);
    let group = g.binding.as_ref().map_or(u32::MAX, |b| b.group);
    let space = match g.space {
        AddressSpace::Uniform => "uniform".to_string(),
        AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => {
            "storage read_write".to_string()
        }
        AddressSpace::Storage { .. } => "storage read".to_string(),
        other => format!("{other:?}"),
    };
    let ty = &module.types[g.ty];
    let elem = match ty.inner {
        TypeInner::Array { base, .. } => type_name(module, base),
        _ => format!("struct {}", ty.name.as_deref().unwrap_or("?")),
    };
    let name = g.name.as_deref().unwrap_or("?");
    format!("group {group} binding {binding} {name}: {space} {elem}")
}

/// The same descriptions from the ABI entry (the params at binding 0, then the arrays).
fn expected_globals(entry: &Entry) -> Vec<String> {
    let p = &entry.params;
    let space = match p.params_in {
        ParamsIn::Uniform => "uniform",
        ParamsIn::Storage => "storage read",
    };
    let mut out = vec![format!(
        "group 0 binding {} {}: {space} struct {}",
        p.binding, p.var, p.struct_name
    )];
    for b in &entry.bindings {
        let access = match b.access {
            Access::Read => "read",
            Access::ReadWrite => "read_write",
        };
        out.push(format!(
            "group 0 binding {} {}: storage {access} {}",
            b.binding, b.var, b.elem
        ));
    }
    out
}

fn type_name(module: &Module, ty: naga::Handle<naga::Type>) -> String {
    let scalar = |s: naga::Scalar| match (s.kind, s.width) {
        (ScalarKind::Float, 4) => "f32".to_string(),
        (ScalarKind::Float, 2) => "f16".to_string(),
        (ScalarKind::Uint, 4) => "u32".to_string(),
        (ScalarKind::Sint, 4) => "i32".to_string(),
        other => format!("{other:?}"),
    };
    match module.types[ty].inner {
        TypeInner::Scalar(s) => scalar(s),
        TypeInner::Vector { size, scalar: s } => {
            let n = match size {
                VectorSize::Bi => 2,
                VectorSize::Tri => 3,
                VectorSize::Quad => 4,
            };
            format!("vec{n}<{}>", scalar(s))
        }
        ref other => format!("{other:?}"),
    }
}

/// How the entry's parameter struct differs from the ABI's (name, size, members), if it does.
fn struct_disagreement(module: &Module, entry: &Entry) -> Option<String> {
    let p = &entry.params;
    let global = module
        .global_variables
        .iter()
        .find(|(_, g)| g.name.as_deref() == Some(p.var.as_str()))?
        .1;
    let ty = &module.types[global.ty];
    let TypeInner::Struct { ref members, span } = ty.inner else {
        return Some(format!("`{}` is not a struct", p.var));
    };
    let got: Vec<String> = members
        .iter()
        .map(|m| {
            let name = m.name.as_deref().unwrap_or("?");
            format!("{name}: {} @ {}", type_name(module, m.ty), m.offset)
        })
        .collect();
    let want: Vec<String> = p
        .fields
        .iter()
        .map(|f| {
            let ty = match f.ty {
                Scalar::U32 => "u32",
                Scalar::F32 => "f32",
            };
            format!("{}: {ty} @ {}", f.name, f.offset)
        })
        .collect();
    let name = ty.name.as_deref().unwrap_or("?");
    if name != p.struct_name || span != p.size || got != want {
        return Some(format!(
            "struct {name} ({span} bytes) {got:?}, the ABI says {} ({} bytes) {want:?}",
            p.struct_name, p.size
        ));
    }
    None
}
