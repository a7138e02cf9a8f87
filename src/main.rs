//! The gradscope binary: parse flags, run the library, map errors to exit codes.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use gradscope::backend::CpuBackend;
use gradscope::backend::Engine;
use gradscope::cli::{Cli, Command, DevicesArgs, MergeArgs, PlotArgs, ProbeArgs, SweepArgs};
use gradscope::export::{self, Format, RunInfo};
use gradscope::{Error, Result};

/// Mesa's Vulkan drivers (lavapipe included) print "error: XDG_RUNTIME_DIR is invalid or not
/// set in the environment" when they probe for a display, which a compute-only program never
/// uses. When the variable is unset, point it at the temporary directory so a successful run
/// prints no errors. Done first, before any thread exists (`set_var` is only sound then).
fn quiet_mesa() {
    if cfg!(target_os = "linux") && std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: called at the top of main, while the process has a single thread.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
}

/// glibc hands a freed heap top back to the kernel past a threshold that its first large
/// frees set: a deep CPU probe then returned and re-faulted its 8 MiB weight buffers at every
/// layer (1.8 M page faults and ~7 s of system time at depth 1,000, against 0.08 M with these
/// settings; BENCHMARKS.md, "products on the free cores"). Matrices up to 32 MiB (glibc's
/// largest mmap threshold) come from the heap, and up to 512 MiB of freed heap is kept.
fn keep_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// `--profile`: the GPU backend opened next prints its profile, as with GRADSCOPE_PROFILE=1
/// (the CPU backend has no device to profile).
fn request_profile(on: bool) {
    #[cfg(feature = "gpu")]
    gradscope::backend::gpu::set_profile(on);
    #[cfg(not(feature = "gpu"))]
    let _ = on;
}

fn main() -> ExitCode {
    quiet_mesa();
    keep_freed_heap();
    std::panic::set_hook(Box::new(|info| {
        let msg = info.payload().downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| info.payload().downcast_ref::<String>().cloned()).unwrap_or_default();
        // `gradscope probe … | head` closes stdout early: that is the reader's choice, not an error.
        if msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("gradscope: internal error: {msg}{at} (please report it)");
        std::process::exit(70);
    }));
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Probe(a) => probe(a),
        Command::Sweep(a) => sweep(a),
        Command::Merge(a) => merge(a),
        Command::Plot(a) => plot(a),
        Command::Devices(a) => devices(a),
        Command::Theory(a) => gradscope::theory::run_theory(&a),
        Command::Reproduce(a) => gradscope::theory::run_reproduce(&a),
        Command::Train(a) => gradscope::train::cli::run_train(&a),
        Command::Spectrum(a) => gradscope::spectrum::run_spectrum(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::CheckFailed(msg)) => {
            eprintln!("gradscope: {msg}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("gradscope: {e}");
            ExitCode::from(2)
        }
    }
}

fn probe(a: ProbeArgs) -> Result<()> {
    let (mut cfg, stored) = a.net.request().validate()?;
    let format = match &a.out {
        Some(p) => {
            let f = Format::from_path(p, "--out")?;
            export::check_writable(p, "--out")?;
            Some(f)
        }
        None => None,
    };
    if let Some(p) = &a.save_weights {
        if p.extension().and_then(|e| e.to_str()) != Some("npz") {
            return Err(Error::arg("--save-weights", format!("'{}' must end in .npz", p.display())));
        }
        export::check_writable(p, "--save-weights")?;
    }
    if let Some(p) = &a.plot {
        gradscope::plot::Format::from_path(p)?;
        export::check_writable(p, "--plot")?;
    }
    request_profile(a.profile);
    let (engine, why) = Engine::select(a.backend, a.adapter.clone())?;
    if a.profile && engine.name() != "gpu" {
        eprintln!("gradscope: --profile: the {} backend has no device to profile (it profiles --backend gpu)", engine.name());
    }
    if a.check && engine.name() != "gpu" {
        return Err(Error::arg("--check", "compares the GPU backend with the CPU reference; add --backend gpu"));
    }
    let t0 = Instant::now();
    let problem = cfg.problem(stored)?;
    let report = engine.probe(&problem)?;
    let seconds = t0.elapsed().as_secs_f64();
    let backend = engine.name();
    let w = &cfg.widths;
    let shape = if w.iter().all(|&n| n == w[0]) { format!("width {} × depth {}", w[0], w.len() - 1) } else { format!("widths {}", short_list(w)) };
    println!(
        "gradscope probe: {}, {shape}, init {}{}, cost {}, batch {}, seed {}",
        cfg.activation,
        cfg.init,
        match (cfg.sigma_w2, cfg.sigma_b2) {
            (Some(w), Some(b)) => format!(" (σ_w² = {w}, σ_b² = {b})"),
            (None, Some(b)) => format!(" (σ_b² = {b})"),
            _ => String::new(),
        },
        cfg.cost,
        cfg.batch,
        cfg.seed
    );
    if let (Some(r), Some(p)) = (&cfg.weights_read, &cfg.weights) {
        println!("{}", r.line(p));
    }
    println!("backend {backend} [{}] ({why}), {seconds:.2} s; values are 10^log10 (docs/MATH.md names)", report.device);
    print!("{}", export::table::render(&report, if a.all_layers { usize::MAX } else { 40 }));
    if let Some(l) = report.overflow_layer {
        println!("forward pass overflowed f64 at layer {l}: gradient fields are undefined (status overflow)");
    }
    println!("cost C = {}", gradscope::stats::sci(report.log10_cost));
    let mean_field = gradscope::probe::MeanFieldSummary::new(&problem, &report);
    println!("{}", mean_field.line());
    if let Some(why) = report.signal_unmeasured {
        println!("forward signal q, c: {why} (rerun with --backend cpu)");
    }
    println!("{}", mean_field.xi_line());
    let anatomy = a.anatomy.then(|| gradscope::theory::anatomy(&report, &problem.net));
    if let Some(rows) = &anatomy {
        let keep: Vec<usize> = export::table::rows_to_show(rows.len(), if a.all_layers { usize::MAX } else { 40 });
        let shown: Vec<_> = keep.iter().map(|&l| rows[l - 1].clone()).collect();
        println!("anatomy of the bound (log10; docs/THEORY.md §3):");
        print!("{}", gradscope::theory::anatomy_table(&shown));
    }
    if let Some(path) = &a.save_weights {
        let l = problem.net.depth();
        let bytes: u64 = (1..=l).map(|i| (problem.net.widths[i] * (problem.net.widths[i - 1] + 1)) as u64 * 8).sum();
        gradscope::backend::cpu::check_memory(2 * bytes, "--save-weights", "save a smaller network")?;
        let (w, b): (Vec<_>, Vec<_>) = (1..=l).map(|i| {
            let (w, b) = problem.net.layer(i);
            (w.into_owned(), b.into_owned())
        }).unzip();
        export::write_atomic(path, &gradscope::model::files::params_npz(&w, &b)?)?;
        println!("wrote {}", path.display());
    }
    if let (Some(path), Some(f)) = (&a.out, format) {
        let info = RunInfo { config: &cfg, version: env!("CARGO_PKG_VERSION"), seconds, mean_field: Some(mean_field.clone()), anatomy: anatomy.clone() };
        export::write_atomic(path, &f.render(&report, &info)?)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &a.plot {
        let title = format!("{}, {shape}, init {}, cost {}, seed {}", cfg.activation, cfg.init, cfg.cost, cfg.seed);
        // The mean-field prediction, where the theory covers this network (else left out).
        gradscope::plot::plot_profile(&report, mean_field.log10_grad_b_rms_predicted.as_deref(), &title, path)?;
        println!("wrote {}", path.display());
    }
    if a.check {
        let t1 = Instant::now();
        let cpu = CpuBackend::default().probe(&problem)?;
        let tol = gradscope::check::Tolerance::f32_vs_f64();
        let c = gradscope::check::compare(&report, &cpu, &tol);
        println!(
            "check against the f64 CPU reference ({:.2} s): tolerance |Δlog10| ≤ {:e} + {:e}·L decades (README, \"Tolerance\")",
            t1.elapsed().as_secs_f64(),
            tol.base,
            tol.per_layer
        );
        print!("{}", export::table::render_check(&c, &tol, if a.all_layers { usize::MAX } else { 40 }));
        println!("{}", c.summary(10));
        if !c.passed() {
            return Err(Error::CheckFailed(format!("GPU and CPU disagree beyond the tolerance ({} values)", c.mismatches.len())));
        }
    }
    Ok(())
}

fn devices(a: DevicesArgs) -> Result<()> {
    #[cfg(feature = "gpu")]
    {
        let rows = gradscope::backend::gpu::list_adapters();
        if a.json {
            println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| Error::Internal(e.to_string()))?);
            return Ok(());
        }
        if rows.is_empty() {
            println!("no GPU adapter found (WGPU_BACKEND={}); `--backend auto` uses the CPU backend", std::env::var("WGPU_BACKEND").unwrap_or_else(|_| "all".into()));
            return Ok(());
        }
        println!("{:<40} {:<8} {:<14} {:<28} {:>12} {:>12} {:>10}  {:<16}", "name", "backend", "type", "driver", "max binding", "max buffer", "max wg/dim", "matmul");
        for r in &rows {
            let driver = format!("{} {}", r.driver, r.driver_info);
            println!(
                "{:<40} {:<8} {:<14} {:<28} {:>9} MiB {:>9} MiB {:>10}  {:<16}{}",
                r.name,
                r.backend,
                r.device_type,
                driver.chars().take(28).collect::<String>(),
                r.max_storage_buffer_binding_size >> 20,
                r.max_buffer_size >> 20,
                r.max_compute_workgroups_per_dimension,
                r.matmul,
                if r.is_software { "  (software: auto picks the CPU backend over it)" } else { "" }
            );
        }
        Ok(())
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = a;
        Err(Error::Device("this gradscope was built without GPU support (cargo feature \"gpu\")".into()))
    }
}

fn short_list(w: &[usize]) -> String {
    if w.len() <= 8 {
        w.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")
    } else {
        format!("{},{},{},…,{} ({} layers)", w[0], w[1], w[2], w[w.len() - 1], w.len() - 1)
    }
}

fn sweep(a: SweepArgs) -> Result<()> {
    let mut file = a.file();
    if let Some(path) = &a.config {
        file = file.or(gradscope::sweep::SweepFile::read(path)?);
    }
    let out = file.out.clone().ok_or_else(|| Error::arg("--out", "missing: the folder to write the sweep into"))?;
    let shard = a.shard.as_deref().map(gradscope::sweep::parse_shard).transpose()?;
    let plan = file.plan()?;
    let groups = plan.groups().len();
    if !a.quiet {
        eprintln!(
            "gradscope sweep: {groups} configuration(s) × {} depth(s) ({}..{}), backend {}{}",
            plan.depths.len(),
            plan.depths[0],
            plan.depths.last().unwrap(),
            plan.backend,
            shard.map(|(k, n)| format!(", shard {k}/{n}")).unwrap_or_default()
        );
    }
    request_profile(a.profile);
    if a.profile && plan.backend == "cpu" {
        eprintln!("gradscope: --profile: the cpu backend has no device to profile (it profiles --backend gpu)");
    }
    let opts = gradscope::sweep::RunOptions { out: out.clone(), shard, progress: !a.quiet, adapter: a.adapter.clone() };
    let s = gradscope::sweep::run(&plan, &opts)?;
    println!(
        "{} point(s) in {}: {} configuration(s) run in {:.1} s, {} already done",
        s.points,
        out.display(),
        s.groups_run,
        s.seconds,
        s.groups_skipped
    );
    Ok(())
}

fn merge(a: MergeArgs) -> Result<()> {
    let n = gradscope::sweep::store::merge(&a.out, &a.shards)?;
    println!("{n} point(s) merged into {}", a.out.display());
    Ok(())
}

fn plot(a: PlotArgs) -> Result<()> {
    let size = gradscope::plot::parse_size(&a.size, "--size")?;
    let formats = a.format.iter().map(|f| gradscope::plot::Format::from_name(f, "--format")).collect::<Result<Vec<_>>>()?;
    let critical = gradscope::plot::mean_field_critical_sigma_w2;
    let written = gradscope::plot::plot_sweep_dir_sized(&a.dir, &critical, size, &formats)?;
    println!("wrote {} plot(s) into {}", written.len(), a.dir.join("plots").display());
    Ok(())
}
