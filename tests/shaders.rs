//! Every WGSL module parses and validates with naga (the compiler inside wgpu), without a GPU.

use gradscope::backend::shaders::modules;

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
        if let Err(e) = validator.validate(&module) {
            failures.push(format!("{}: validation error:\n{}", m.label, e.emit_to_string(&m.source)));
            continue;
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
