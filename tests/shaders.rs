//! Every WGSL module parses and validates with naga (the compiler inside wgpu), without a GPU;
//! modules with override constants also validate with them resolved as the host sets them.

use gradscope::backend::shaders::{modules, Tiling};

#[test]
fn every_shader_parses_and_validates_with_naga() {
    let mut failures = Vec::new();
    for m in modules() {
        let module = match naga::front::wgsl::parse_str(&m.source) {
            Ok(module) => module,
            Err(e) => {
                failures.push(format!("{}: parse error:\n{}", m.label, e.emit_to_string(&m.source)));
                continue;
            }
        };
        let mut validator = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty());
        let info = match validator.validate(&module) {
            Ok(info) => info,
            Err(e) => {
                failures.push(format!("{}: validation error:\n{}", m.label, e.emit_to_string(&m.source)));
                continue;
            }
        };
        // What wgpu does at pipeline creation: substitute the overrides, then revalidate (with
        // every override-sized array and workgroup size now concrete). Defaults first, then
        // every tiling the host may choose.
        if !module.overrides.is_empty() {
            let mut sets = vec![naga::back::PipelineConstants::default()];
            if m.label == "matmul" {
                sets.extend(Tiling::CANDIDATES.iter().map(|t| t.constants().iter().map(|&(k, v)| (k.to_string(), v)).collect()));
            }
            for constants in &sets {
                if let Err(e) = naga::back::pipeline_constants::process_overrides(&module, &info, None, constants) {
                    failures.push(format!("{}: with overrides {constants:?}: {e}", m.label));
                }
            }
            eprintln!("{}: {} override sets ok", m.label, sets.len());
        }
        for ep in m.entry_points {
            if !module.entry_points.iter().any(|e| e.name == *ep) {
                failures.push(format!("{}: entry point {ep} missing", m.label));
            }
        }
        eprintln!("{}: ok ({} entry points)", m.label, module.entry_points.len());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A shader comment that points into the Rust source names a file that exists, and each
/// name it quotes in backticks ("see src/…rs, `name`") is defined there, so the WGSL's
/// pointers do not go stale when code moves.
#[test]
fn shader_comments_point_at_code_that_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failures = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("shaders")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| l.trim_start().starts_with("//")) {
            let Some(at) = line.find("src/") else { continue };
            let file: String = line[at..].chars().take_while(|c| c.is_alphanumeric() || "/_.".contains(*c)).collect();
            let file = file.trim_end_matches('.');
            let names: Vec<&str> = line.split('`').skip(1).step_by(2).collect();
            let Ok(code) = std::fs::read_to_string(root.join(file)) else {
                failures.push(format!("{}:{}: {file} does not exist", path.display(), n + 1));
                continue;
            };
            for name in names {
                seen += 1;
                if !code.contains(&format!("fn {name}")) && !code.contains(&format!("const {name}")) && !code.contains(&format!("struct {name}")) {
                    failures.push(format!("{}:{}: {file} defines no `{name}`", path.display(), n + 1));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(seen >= 2, "the shaders point at {seen} names; expected at least common.wgsl's and pointwise.wgsl's");
}

/// Each family's parameter block has one layout on both sides: the Rust struct
/// (src/backend/gpu/params.rs) and the WGSL struct of the same name in its module, as naga
/// lays it out, have the same size, the same fields in the same order at the same offsets,
/// of the same scalar types; each module's slot is 256 bytes (the host's `PARAM_SLOT`) and
/// binding 0 is an array of those slots. A field added, dropped, reordered or retyped on one
/// side only fails here instead of silently reading the wrong word on the device.
#[cfg(feature = "gpu")]
#[test]
fn parameter_blocks_match_their_wgsl_structs() {
    use gradscope::backend::gpu::{params, PARAM_SLOT};
    use naga::{Scalar, ScalarKind, TypeInner};
    let mods = modules();
    let layouts = params::layouts();
    let mut failures = Vec::new();
    for m in &mods {
        let module = naga::front::wgsl::parse_str(&m.source).expect("parses (the test above says why not)");
        let find = |name: &str| module.types.iter().find(|(_, t)| t.name.as_deref() == Some(name)).map(|(h, t)| (h, t.clone()));
        let lay: Vec<_> = layouts.iter().filter(|l| l.module == m.label).collect();
        assert_eq!(lay.len(), 1, "{}: one parameter block per module", m.label);
        let lay = lay[0];
        let Some((handle, ty)) = find(lay.wgsl_name) else {
            failures.push(format!("{}: no struct {}", m.label, lay.wgsl_name));
            continue;
        };
        let TypeInner::Struct { members, span } = &ty.inner else { panic!("{} is not a struct", lay.wgsl_name) };
        if *span as usize != lay.size {
            failures.push(format!("{}: {} is {span} bytes in WGSL, {} in Rust", m.label, lay.wgsl_name, lay.size));
        }
        let wgsl: Vec<(String, usize, &str)> = members
            .iter()
            .map(|mb| {
                let ty = match module.types[mb.ty].inner {
                    TypeInner::Scalar(Scalar { kind: ScalarKind::Uint, width: 4 }) => "u32",
                    TypeInner::Scalar(Scalar { kind: ScalarKind::Sint, width: 4 }) => "i32",
                    TypeInner::Scalar(Scalar { kind: ScalarKind::Float, width: 4 }) => "f32",
                    _ => "other",
                };
                (mb.name.clone().unwrap_or_default(), mb.offset as usize, ty)
            })
            .collect();
        let rust: Vec<(String, usize, &str)> = lay.fields.iter().map(|f| (f.name.to_string(), f.offset, f.ty)).collect();
        if wgsl != rust {
            failures.push(format!("{}: {} differs\n  WGSL: {wgsl:?}\n  Rust: {rust:?}", m.label, lay.wgsl_name));
        }
        // The slot wraps the block at 256 bytes, and binding 0 is an array of slots.
        match find("Slot").map(|(_, t)| t.inner) {
            Some(TypeInner::Struct { members, span }) if span as u64 == PARAM_SLOT && members.len() == 1 && members[0].ty == handle => {}
            other => failures.push(format!("{}: Slot should be {{ @size({PARAM_SLOT}) p: {} }}, is {other:?}", m.label, lay.wgsl_name)),
        }
        let ps = module.global_variables.iter().find(|(_, g)| g.binding.as_ref().is_some_and(|b| b.group == 0 && b.binding == 0));
        match ps.map(|(_, g)| &module.types[g.ty].inner) {
            Some(TypeInner::Array { base, stride, .. }) if module.types[*base].name.as_deref() == Some("Slot") && *stride as u64 == PARAM_SLOT => {}
            other => failures.push(format!("{}: binding 0 should be array<Slot> with stride {PARAM_SLOT}, is {other:?}", m.label)),
        }
        // The FLAG_* bits the host sets are the ones the module tests.
        for (name, bits) in params::FLAGS {
            let c = module.constants.iter().find(|(_, c)| c.name.as_deref() == Some(name)).map(|(_, c)| c.init);
            let value = c.and_then(|h| match module.global_expressions[h] {
                naga::Expression::Literal(naga::Literal::U32(v)) => Some(v),
                _ => None,
            });
            if value != Some(bits) {
                failures.push(format!("{}: {name} is {value:?} in WGSL, {bits} in Rust", m.label));
            }
        }
    }
    assert_eq!(layouts.len(), mods.len(), "one parameter block per module: {:?}", layouts.iter().map(|l| l.wgsl_name).collect::<Vec<_>>());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
