//! The repository stands on its own: no tracked file and no `--help` points outside it, every
//! relative Markdown link resolves inside it, every `*.md` path the sources or `--help` name
//! exists, and the licence, citation and definition files are there and packaged.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use pulldown_cmark::{BrokenLink, Event, LinkType, Options, Parser, Tag, TagEnd};

/// The sibling folder the project's private notes live in; spelled in two pieces so that this
/// file does not match itself.
const OUTSIDE: &str = concat!("..", "/shared");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Tracked files, relative to `root`: `git ls-files` in a clone; in a crate tarball (no git),
/// every file outside `target/` and hidden folders.
fn tracked(root: &Path) -> Vec<PathBuf> {
    if let Ok(o) = Command::new("git").arg("-C").arg(root).args(["ls-files", "-z"]).output() {
        if o.status.success() && !o.stdout.is_empty() {
            return o
                .stdout
                .split(|&b| b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
                // A file deleted in the worktree but not yet in the index is not the repository's.
                .filter(|p| root.join(p).is_file())
                .collect();
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(root.join(&dir)).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = dir.join(&name);
            if name.starts_with('.') || rel == Path::new("target") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(rel);
            } else {
                out.push(rel);
            }
        }
    }
    out
}

/// `base/rel` with `.` and `..` applied lexically; None when it climbs out of the repository.
fn resolve(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut parts: Vec<Component> = base.components().collect();
    for c in Path::new(rel).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => parts.clear(),
            c => parts.push(c),
        }
    }
    Some(parts.iter().collect())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_outside(name: &str, text: &str, problems: &mut Vec<String>) {
    for (i, line) in text.lines().enumerate() {
        if line.contains(OUTSIDE) {
            problems.push(format!("{name}:{}: refers to {OUTSIDE}, outside the repository: {}", i + 1, line.trim()));
        }
    }
}

/// The anchors GitHub gives a Markdown file's headings: the heading's text, lower-cased,
/// with everything but letters, digits, `_`, `-` and spaces removed and spaces turned into
/// `-`; a repeated slug gets `-1`, `-2`, … (plus explicit `id="…"`/`name="…"` in HTML).
fn anchors(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut heading: Option<String> = None;
    for event in Parser::new_ext(text, Options::all()) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let h = heading.take().unwrap_or_default();
                let base: String = h
                    .trim()
                    .to_lowercase()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '))
                    .map(|c| if c == ' ' { '-' } else { c })
                    .collect();
                let mut slug = base.clone();
                let mut k = 0;
                while out.contains(&slug) {
                    k += 1;
                    slug = format!("{base}-{k}");
                }
                out.push(slug);
            }
            Event::Html(h) | Event::InlineHtml(h) => {
                for key in ["id=\"", "name=\""] {
                    for (i, _) in h.match_indices(key) {
                        let rest = &h[i + key.len()..];
                        out.extend(rest.split('"').next().map(String::from));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Every link and image of a Markdown file, as GitHub renders it (links inside code are
/// text, not links): a relative target must name an existing file or folder inside the
/// repository, a `#fragment` into a Markdown file one of its headings; a reference link
/// needs its definition.
fn check_markdown(root: &Path, rel: &Path, text: &str, problems: &mut Vec<String>) {
    let name = rel.display().to_string();
    check_outside(&name, text, problems);
    let mut undefined: Vec<(usize, String)> = Vec::new();
    let callback = |b: BrokenLink| {
        // `[text][ref]` and `[ref][]` with no definition; a bare `[x]` is prose.
        if matches!(b.link_type, LinkType::Reference | LinkType::Collapsed) {
            undefined.push((b.span.start, b.reference.to_string()));
        }
        None
    };
    let parser = Parser::new_with_broken_link_callback(text, Options::all(), Some(callback));
    for (event, range) in parser.into_offset_iter() {
        let dest = match event {
            Event::Start(Tag::Link { dest_url, .. }) | Event::Start(Tag::Image { dest_url, .. }) => dest_url,
            _ => continue,
        };
        let at = format!("{name}:{}", line_of(text, range.start));
        let d = dest.trim();
        if d.is_empty() || d.contains("://") || d.starts_with("mailto:") {
            continue;
        }
        let (path, fragment) = match d.split_once('#') {
            Some((p, f)) => (p, Some(percent_decode(f))),
            None => (d, None),
        };
        let path = percent_decode(path.split('?').next().unwrap_or(""));
        let target = if path.is_empty() {
            rel.to_path_buf()
        } else {
            let base = if path.starts_with('/') { PathBuf::new() } else { rel.parent().unwrap_or(Path::new("")).to_path_buf() };
            match resolve(&base, path.trim_start_matches('/')) {
                None => {
                    problems.push(format!("{at}: link '{d}' points outside the repository"));
                    continue;
                }
                Some(p) if !root.join(&p).exists() => {
                    problems.push(format!("{at}: link '{d}' does not resolve ({} does not exist)", p.display()));
                    continue;
                }
                Some(p) => p,
            }
        };
        if let Some(f) = fragment.filter(|f| !f.is_empty()) {
            if target.extension().is_some_and(|e| e == "md") {
                let body = std::fs::read_to_string(root.join(&target)).unwrap_or_default();
                if !anchors(&body).contains(&f.to_lowercase()) {
                    problems.push(format!("{at}: link '{d}': {} has no heading with anchor #{f}", target.display()));
                }
            }
        }
    }
    for (start, r) in undefined {
        problems.push(format!("{name}:{}: reference link [{r}] has no definition", line_of(text, start)));
    }
}

/// Plain text (sources, `--help`): no reference outside the repository, and every `*.md`
/// path it names exists, from the repository root or from the file's own folder (URLs and
/// patterns like `*.md` excepted).
fn check_text(root: &Path, name: &str, dir: &Path, text: &str, problems: &mut Vec<String>) {
    check_outside(name, text, problems);
    let is_path = |c: char| c.is_ascii_alphanumeric() || "_./-".contains(c);
    for (i, line) in text.lines().enumerate() {
        for (end, _) in line.match_indices(".md") {
            let after = line[end + 3..].chars().next();
            if after.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // .mdx, .md_file: not a Markdown path
            }
            let start = line[..end].rfind(|c: char| !is_path(c)).map_or(0, |s| s + line[s..].chars().next().unwrap().len_utf8());
            let token = &line[start..end + 3];
            let stem = token.trim_end_matches(".md").trim_start_matches(['.', '/']);
            if stem.is_empty() || token.starts_with("//") {
                continue;
            }
            let found = [PathBuf::new(), dir.to_path_buf()]
                .iter()
                .any(|b| resolve(b, token).is_some_and(|p| root.join(p).is_file()));
            if !found {
                problems.push(format!("{name}:{}: names {token}, which is not in the repository", i + 1));
            }
        }
    }
}

/// Every problem in the tracked files of `root` (this test file excepted: it spells bad links
/// on purpose).
fn scan_files(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for rel in tracked(root) {
        if rel == Path::new("tests/links.rs") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(root.join(&rel)) else {
            continue; // binary (images, fonts)
        };
        if rel.extension().is_some_and(|e| e == "md") {
            check_markdown(root, &rel, &text, &mut problems);
        } else {
            let dir = rel.parent().unwrap_or(Path::new("")).to_path_buf();
            check_text(root, &rel.display().to_string(), &dir, &text, &mut problems);
        }
    }
    problems
}

fn help(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_gradscope")).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap();
    assert!(o.status.success(), "gradscope {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// The subcommand names of a clap `--help` page (its "Commands:" section), `help` excepted.
fn subcommands(page: &str) -> Vec<String> {
    page.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn no_tracked_file_links_outside_the_repository_or_to_a_missing_file() {
    let root = root();
    let files = tracked(&root);
    assert!(files.iter().any(|f| f == Path::new("README.md")), "found no README.md among {} files", files.len());
    let problems = scan_files(&root);
    assert!(problems.is_empty(), "{} broken reference(s):\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn no_help_page_refers_outside_the_repository() {
    let root = root();
    let mut problems = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    let mut seen = Vec::new();
    while let Some(cmd) = todo.pop() {
        let mut args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        args.push("--help");
        let page = help(&args);
        let name = format!("gradscope {}", args.join(" "));
        check_text(&root, &name, Path::new(""), &page, &mut problems);
        for sub in subcommands(&page) {
            let mut next = cmd.clone();
            next.push(sub);
            todo.push(next);
        }
        seen.push(cmd.join(" "));
    }
    // Parsing the pages must have found the subcommands, or this test would check one page.
    for want in ["probe", "sweep", "theory", "reproduce"] {
        assert!(seen.iter().any(|s| s == want), "no `{want} --help` checked; saw {seen:?}");
    }
    assert!(problems.is_empty(), "{} broken reference(s):\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn licences_citation_and_definitions_are_tracked_and_packaged() {
    let root = root();
    let files = tracked(&root);
    let needed = ["LICENSE-MIT", "LICENSE-APACHE", "CITATION.cff", "docs/MATH.md", "docs/DERIVATION.md"];
    for f in needed {
        assert!(files.iter().any(|p| p == Path::new(f)), "{f} is not tracked");
    }
    // Cargo.toml's licence is "MIT OR Apache-2.0": the files must be those licences' texts.
    let mit = std::fs::read_to_string(root.join("LICENSE-MIT")).unwrap();
    assert!(mit.starts_with("MIT License") && mit.contains("Permission is hereby granted, free of charge"));
    let apache = std::fs::read_to_string(root.join("LICENSE-APACHE")).unwrap();
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
    assert!(apache.contains("END OF TERMS AND CONDITIONS"));
    // The citation's version follows the crate's.
    let cff = std::fs::read_to_string(root.join("CITATION.cff")).unwrap();
    let version = cff.lines().find_map(|l| l.strip_prefix("version:")).map(|v| v.trim().trim_matches('"'));
    assert_eq!(version, Some(env!("CARGO_PKG_VERSION")), "CITATION.cff's version differs from Cargo.toml's");
    for key in ["cff-version: 1.2.0", "message:", "title:", "authors:", "references:"] {
        assert!(cff.lines().any(|l| l.starts_with(key)), "CITATION.cff lacks `{key}`");
    }

    // Run from an unpacked .crate, the walk above has already listed the package's files
    // (and `cargo package` refuses a tree holding Cargo.toml.orig).
    if root.join("Cargo.toml.orig").exists() {
        eprintln!("unpacked crate: its files are the package's; cargo package --list not run");
        return;
    }
    // What a published crate would hold (no network: --offline; no build: --list).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(cargo)
        .current_dir(&root)
        .args(["package", "--list", "--allow-dirty", "--offline", "--quiet"])
        .output()
        .unwrap();
    assert!(o.status.success(), "cargo package --list failed: {}", String::from_utf8_lossy(&o.stderr));
    let listed = String::from_utf8_lossy(&o.stdout);
    for f in needed {
        assert!(listed.lines().any(|l| l.trim() == f), "cargo package --list lacks {f}:\n{listed}");
    }
}

/// The checks themselves catch what they are meant to, on a planted repository.
#[test]
fn planted_bad_links_are_caught_and_good_ones_pass() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write = |p: &str, s: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    write(
        "docs/MATH.md",
        "# Defs\n\n[back](../README.md) [self](#defs) [up](/README.md#r) [dup](#defs-1)\n\n\
         ## The `q_star` of σ′, γ ≈ 1\n\n# Defs\n\n[s](#the-q_star-of-σ-γ--1) bad 7: [no](#nope)\n",
    );
    write(
        "README.md",
        &format!(
            "# R\n\n\
             good: [defs](docs/MATH.md#defs), [folder](docs/), ![img](docs/MATH.md), <https://example.org/x.md>, \
             [web](https://example.org/a.md), [anchor](#r), [spaced](docs/MATH%2Emd)\n\n\
             `[in code](missing-in-code.md)`\n\n```text\n[in a block](missing-in-block.md)\n```\n\n\
             bad 1: [gone](docs/GONE.md)\n\n\
             bad 2: [escape](../elsewhere/README.md)\n\n\
             bad 3: see {OUTSIDE}/MATH.md\n\n\
             bad 4: [undefined][nowhere]\n\n\
             prose in brackets [784, 30] is not a link\n"
        ),
    );
    write(
        "src/lib.rs",
        "//! Names from docs/MATH.md, see README.md and https://example.org/NOTES.md; any *.md file.\n\
         //! bad 5: MATH.md\n//! bad 6: docs/THEORY.md\n",
    );
    let problems = scan_files(root);
    let has = |needle: &str| problems.iter().filter(|p| p.contains(needle)).count();
    assert_eq!(has("README.md:11: link 'docs/GONE.md' does not resolve"), 1, "{problems:#?}");
    assert_eq!(has("'../elsewhere/README.md' points outside"), 1, "{problems:#?}");
    assert_eq!(has("README.md:15: refers to"), 1, "{problems:#?}");
    assert_eq!(has("[nowhere] has no definition"), 1, "{problems:#?}");
    assert_eq!(has("src/lib.rs:2: names MATH.md"), 1, "{problems:#?}");
    assert_eq!(has("src/lib.rs:3: names docs/THEORY.md"), 1, "{problems:#?}");
    assert_eq!(has("docs/MATH.md:9: link '#nope': docs/MATH.md has no heading"), 1, "{problems:#?}");
    assert_eq!(problems.len(), 7, "only the seven planted faults: {problems:#?}");

    // Fixed, the same tree passes.
    write("docs/GONE.md", "");
    write("docs/THEORY.md", "");
    write("MATH.md", "");
    let math = std::fs::read_to_string(root.join("docs/MATH.md")).unwrap();
    write("docs/MATH.md", &math.replace("[no](#nope)", ""));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    write(
        "README.md",
        &readme
            .replace("[escape](../elsewhere/README.md)", "")
            .replace(&format!("see {OUTSIDE}/MATH.md"), "")
            .replace("[undefined][nowhere]", "[defined][d]\n\n[d]: docs/MATH.md"),
    );
    let problems = scan_files(root);
    assert!(problems.is_empty(), "{problems:#?}");
}
