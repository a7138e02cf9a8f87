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
