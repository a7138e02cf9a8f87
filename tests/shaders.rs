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
