//! `cargo xtask docs [--check]`: the book's generated pages, the man pages
//! and completions, the book itself, and its links.
//!
//! Generated so they cannot drift from the code:
//! - the field references, from `schema/event.schema.json`,
//!   `doctor.schema.json` and `preflight.schema.json` (read here);
//! - the option tables, the man pages and the metric list, from the
//!   tracer itself (`tracer manual --out DIR`, a hidden subcommand: clap's
//!   `Command` and the metric families the code registers);
//! - shell completions (`tracer completions SHELL`).
//!
//! Without `--check` it rewrites what differs (idempotent: a second run
//! changes nothing); with it, it fails naming each page that is out of
//! date. Either way it renders every man page with groff, builds the book
//! with mdbook and checks that every internal link and anchor resolves.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::{output, run};

/// The mdbook that builds the book, installed without default features
/// (no serve, watch or search: the install takes a fraction of the time).
/// 0.5.4 builds with rustc 1.88 and later.
const MDBOOK_VERSION: &str = "0.5.4";

/// Where each schema's reference page goes, and its title.
const SCHEMAS: [(&str, &str, &str); 3] = [
    (
        "schema/event.schema.json",
        "docs/src/reference/fields.md",
        "Event fields",
    ),
    (
        "schema/doctor.schema.json",
        "docs/src/reference/doctor.md",
        "Doctor report fields",
    ),
    (
        "schema/preflight.schema.json",
        "docs/src/reference/preflight.md",
        "Preflight report fields",
    ),
];

pub fn docs(root: &Path, check: bool) -> Result<()> {
    let tracer = root.join("target/release/tracer");
    let generated = root.join("target/docs-gen");
    if generated.exists() {
        std::fs::remove_dir_all(&generated)
            .with_context(|| format!("cannot remove {}", generated.display()))?;
    }
    run(Command::new(&tracer)
        .arg("manual")
        .arg("--out")
        .arg(&generated))?;

    // The checked-in pages: what they should hold.
    let mut pages: Vec<(PathBuf, String)> = Vec::new();
    for (name, page) in [("options.md", "options.md"), ("metrics.md", "metrics.md")] {
        let path = generated.join(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        pages.push((root.join("docs/src/reference").join(page), text));
    }
    for (schema, page, title) in SCHEMAS {
        let path = root.join(schema);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        pages.push((root.join(page), schema_page(&value, schema, title)));
    }
    let mut stale = Vec::new();
    for (path, want) in &pages {
        let have = std::fs::read_to_string(path).unwrap_or_default();
        if have == *want {
            continue;
        }
        if check {
            stale.push(
                path.strip_prefix(root)
                    .unwrap_or(path)
                    .display()
                    .to_string(),
            );
        } else {
            eprintln!("xtask: writing {}", path.display());
            std::fs::write(path, want)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    if !stale.is_empty() {
        bail!(
            "generated pages out of date (the code or a schema changed): {}; run `cargo xtask docs` and commit them",
            stale.join(", ")
        );
    }

    man_pages(root, &generated)?;
    completions(root, &tracer)?;
    book(root)
}

/// target/man/: tracer.1 and one page per subcommand, each rendered by
/// groff to prove it is a man page with a NAME section.
fn man_pages(root: &Path, generated: &Path) -> Result<()> {
    let man = root.join("target/man");
    if man.exists() {
        std::fs::remove_dir_all(&man)
            .with_context(|| format!("cannot remove {}", man.display()))?;
    }
    std::fs::create_dir_all(&man).with_context(|| format!("cannot create {}", man.display()))?;
    let mut names = Vec::new();
    let from = generated.join("man");
    for entry in
        std::fs::read_dir(&from).with_context(|| format!("cannot list {}", from.display()))?
    {
        let entry = entry?;
        let to = man.join(entry.file_name());
        std::fs::copy(entry.path(), &to)
            .with_context(|| format!("cannot copy to {}", to.display()))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    if !names.iter().any(|n| n == "tracer.1") {
        bail!("no tracer.1 among the man pages: {names:?}");
    }
    for name in &names {
        let rendered = output(
            Command::new("groff")
                .args(["-man", "-Tutf8", "-ww"])
                .arg(man.join(name)),
        )
        .with_context(|| format!("groff cannot render {name}"))?;
        // grotty embolds by overstriking (`N\x08N`): drop each backspace
        // and the character it strikes over to read the text.
        let mut text = String::with_capacity(rendered.len());
        for c in rendered.chars() {
            if c == '\x08' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        if !text.contains("\nNAME\n") {
            bail!("{name} renders without a NAME section");
        }
    }
    eprintln!(
        "xtask: {} man pages in {}: {}",
        names.len(),
        man.display(),
        names.join(" ")
    );
    Ok(())
}

fn completions(root: &Path, tracer: &Path) -> Result<()> {
    let dir = root.join("target/completions");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (shell, file) in [
        ("bash", "tracer.bash"),
        ("zsh", "_tracer"),
        ("fish", "tracer.fish"),
    ] {
        let script = output(Command::new(tracer).args(["completions", shell]))?;
        let path = dir.join(file);
        std::fs::write(&path, script + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Install the pinned mdbook when it is missing or another version.
pub fn mdbook() -> Result<()> {
    let have = Command::new("mdbook")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if have.as_deref() == Some(&format!("mdbook v{MDBOOK_VERSION}")) {
        return Ok(());
    }
    eprintln!("xtask: installing mdbook {MDBOOK_VERSION} (no default features)");
    run(Command::new("cargo").args([
        "install",
        "mdbook",
        "--locked",
        "--version",
        MDBOOK_VERSION,
        "--no-default-features",
    ]))
}

/// `mdbook build docs`, then every link of the HTML it wrote and of the
/// README.
fn book(root: &Path) -> Result<()> {
    mdbook()?;
    let started = std::time::Instant::now();
    let built = Command::new("mdbook")
        .arg("build")
        .arg(root.join("docs"))
        .output()
        .context("cannot start mdbook")?;
    let log = String::from_utf8_lossy(&built.stderr);
    if !built.status.success() {
        bail!("mdbook build docs failed: {}\n{log}", built.status);
    }
    // A warning is a page that renders wrong (an unclosed `<tag>` in a
    // table, say): fail on it like on a broken link.
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    if !warnings.is_empty() {
        bail!("mdbook warned:\n{log}");
    }
    eprintln!(
        "xtask: book built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let broken = check_links(root)?;
    if !broken.is_empty() {
        bail!(
            "{} broken link(s):\n  {}",
            broken.len(),
            broken.join("\n  ")
        );
    }
    Ok(())
}

/// The `id`s of an HTML file, and its `href`s.
fn scan_html(text: &str) -> (BTreeSet<String>, Vec<String>) {
    let attribute = |name: &str| -> Vec<String> {
        let needle = format!(" {name}=\"");
        let mut found = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find(&needle) {
            rest = &rest[at + needle.len()..];
            if let Some(end) = rest.find('"') {
                found.push(unescape(&rest[..end]));
                rest = &rest[end..];
            }
        }
        found
    };
    (attribute("id").into_iter().collect(), attribute("href"))
}

fn unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

/// A link that leaves the book and the repository (a web page, or a file
/// beside the repository) is not ours to check.
fn external(href: &str) -> bool {
    href.contains("://") || href.starts_with("mailto:") || href.starts_with("javascript:")
}

/// Every broken internal link: of the built book (to a page, a file of
/// the repository, or an anchor of a page), and of README.md (to a file,
/// or to a book page's anchor, resolved in the built HTML).
pub fn check_links(root: &Path) -> Result<Vec<String>> {
    let book = root.join("docs/book");
    let mut html = Vec::new();
    collect(&book, "html", &mut html)?;
    let mut ids: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    let mut hrefs: Vec<(PathBuf, Vec<String>)> = Vec::new();
    for file in &html {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let (found, links) = scan_html(&text);
        ids.insert(normal(file), found);
        hrefs.push((file.clone(), links));
    }
    let mut broken = Vec::new();
    let check = |from: &Path, href: &str, what: &str, broken: &mut Vec<String>| {
        if external(href) || href.is_empty() {
            return;
        }
        let (path, anchor) = match href.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (href, None),
        };
        let path = path.split('?').next().unwrap_or(path);
        let target = if path.is_empty() {
            from.to_path_buf()
        } else {
            normal(&from.parent().unwrap_or(root).join(percent_decode(path)))
        };
        // A book page named by its source: README links to docs/src/x.md
        // (mdbook makes a chapter's README.md its index.html).
        let target = match target.strip_prefix(root.join("docs/src")) {
            // The table of contents is no page; the file itself reads as
            // one on a forge.
            Ok(rel) if rel == Path::new("SUMMARY.md") => target,
            Ok(rel) if rel.file_name().is_some_and(|n| n == "README.md") => {
                book.join(rel).with_file_name("index.html")
            }
            Ok(rel) if rel.extension().is_some_and(|e| e == "md") => {
                book.join(rel).with_extension("html")
            }
            _ => target,
        };
        if !target.starts_with(root) {
            return;
        }
        if !target.exists() {
            broken.push(format!("{what}: {href} (no {})", target.display()));
            return;
        }
        if let Some(anchor) = anchor.filter(|a| !a.is_empty()) {
            match ids.get(&target) {
                Some(found) if found.contains(&percent_decode(anchor)) => {}
                Some(_) => broken.push(format!(
                    "{what}: {href} (no id {anchor:?} in {})",
                    target.display()
                )),
                // An anchor into a file that is not a page (a schema):
                // nothing to check it against.
                None if target.extension().is_some_and(|e| e == "html") => {
                    broken.push(format!("{what}: {href} (not a page of the book)"))
                }
                None => {}
            }
        }
    };
    for (file, links) in &hrefs {
        let what = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for href in links {
            check(file, href, &what, &mut broken);
        }
    }
    let readme = root.join("README.md");
    let text = std::fs::read_to_string(&readme)
        .with_context(|| format!("cannot read {}", readme.display()))?;
    for event in pulldown_cmark::Parser::new(&text) {
        if let pulldown_cmark::Event::Start(pulldown_cmark::Tag::Link { dest_url, .. }) = event {
            check(&readme, &dest_url, "README.md", &mut broken);
        }
    }
    broken.sort();
    broken.dedup();
    Ok(broken)
}

fn collect(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, ext, out)?;
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    Ok(())
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A schema as Markdown: per record kind (the `oneOf` of the event schema)
/// or for the one report, a table of every field by dotted path.
pub fn schema_page(schema: &Value, source: &str, title: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- Generated by `cargo xtask docs` from {source}; do not edit. -->\n\n# {title}\n"
    );
    if let Some(t) = schema.get("title").and_then(Value::as_str) {
        let _ = writeln!(out, "Schema: [`{source}`](../../../{source}) ({t}).\n");
    }
    if let Some(d) = schema.get("description").and_then(Value::as_str) {
        let _ = writeln!(out, "{}\n", escape_html(d.trim()));
    }
    out.push_str(
        "A field marked **required** is in every record of its kind; `[]` marks an array's \
         elements. The schema forbids fields it does not list.\n",
    );
    let kinds: Vec<&Value> = schema
        .get("oneOf")
        .and_then(Value::as_array)
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    if kinds.is_empty() {
        out.push('\n');
        table(schema, schema, &mut out);
    } else {
        for kind in kinds {
            let (name, def) = resolve(schema, kind);
            let action = def
                .pointer("/properties/event/properties/action")
                .map(|a| describe_type(schema, a))
                .unwrap_or_default();
            let _ = writeln!(out, "\n## `{}` records\n", name.unwrap_or("other"));
            if !action.is_empty() {
                let _ = writeln!(out, "`event.action`: {action}.\n");
            }
            if let Some(d) = def.get("description").and_then(Value::as_str) {
                let _ = writeln!(out, "{}\n", escape_html(d.trim()));
            }
            table(schema, def, &mut out);
        }
    }
    out
}

/// Follow a local `$ref`; the name of the definition, if any.
fn resolve<'a>(schema: &'a Value, node: &'a Value) -> (Option<&'a str>, &'a Value) {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next();
            let target = r
                .strip_prefix('#')
                .and_then(|p| schema.pointer(p))
                .unwrap_or(node);
            (name, target)
        }
        None => (None, node),
    }
}

fn table(schema: &Value, node: &Value, out: &mut String) {
    out.push_str("| field | type | meaning |\n|---|---|---|\n");
    let mut seen = Vec::new();
    rows(schema, node, "", out, &mut seen);
}

/// One row per property, depth first; a `$ref`'s fields are written under
/// the referring path (each definition once per path, so a cycle ends).
fn rows(schema: &Value, node: &Value, prefix: &str, out: &mut String, seen: &mut Vec<String>) {
    let (name, node) = resolve(schema, node);
    if let Some(name) = name {
        if seen.iter().any(|s| s == name) {
            return;
        }
        seen.push(name.to_string());
    }
    let required: Vec<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (key, prop) in props {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            let (_, target) = resolve(schema, prop);
            let mut meaning = description(prop)
                .or_else(|| description(target))
                .unwrap_or_default();
            if required.contains(&key.as_str()) {
                meaning = if meaning.is_empty() {
                    "**required**".to_string()
                } else {
                    format!("**required**. {meaning}")
                };
            }
            let _ = writeln!(
                out,
                "| `{path}` | {} | {} |",
                cell(&describe_type(schema, prop)),
                cell(&meaning)
            );
            rows(schema, prop, &path, out, seen);
            if let Some(items) = target.get("items") {
                rows(schema, items, &format!("{path}[]"), out, seen);
            }
            for key in ["oneOf", "anyOf"] {
                for alt in target
                    .get(key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    rows(schema, alt, &path, out, seen);
                }
            }
        }
    }
    if name.is_some() {
        seen.pop();
    }
}

fn description(node: &Value) -> Option<String> {
    node.get("description")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// `string`, `integer ≥ 0`, `"a"`, `"a" \| "b"`, `array of string`,
/// `object`, or the alternatives of a `oneOf`.
fn describe_type(schema: &Value, node: &Value) -> String {
    let (_, node) = resolve(schema, node);
    if let Some(c) = node.get("const") {
        return format!("`{c}`");
    }
    if let Some(e) = node.get("enum").and_then(Value::as_array) {
        return e
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ");
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = node.get(key).and_then(Value::as_array) {
            let mut kinds: Vec<String> = alts.iter().map(|a| describe_type(schema, a)).collect();
            kinds.dedup();
            return kinds.join(" or ");
        }
    }
    let base = match node.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => String::new(),
    };
    let mut text = if base == "array" {
        match node.get("items") {
            Some(items) => format!("array of {}", describe_type(schema, items)),
            None => base,
        }
    } else {
        base
    };
    if let Some(f) = node.get("format").and_then(Value::as_str) {
        let _ = write!(text, " ({f})");
    }
    if let Some(m) = node.get("minimum") {
        let _ = write!(text, " ≥ {m}");
    }
    if let Some(m) = node.get("maximum") {
        let _ = write!(text, " ≤ {m}");
    }
    text
}

fn cell(text: &str) -> String {
    escape_html(
        &text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace('|', "\\|"),
    )
}

/// `<` and `>` outside code spans as entities: `/proc/<pid>/environ` in a
/// description is text, not an HTML tag.
fn escape_html(text: &str) -> String {
    text.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 0 {
                part.replace('<', "&lt;").replace('>', "&gt;")
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_rows_follow_refs_items_and_requirements() {
        let schema: Value = serde_json::json!({
            "title": "t",
            "type": "object",
            "required": ["a"],
            "properties": {
                "a": {"type": "string", "description": "the | a"},
                "list": {"type": "array", "items": {"$ref": "#/$defs/item"}},
            },
            "$defs": {"item": {"type": "object", "properties": {
                "n": {"type": "integer", "minimum": 0},
                "again": {"$ref": "#/$defs/item"}
            }}}
        });
        let page = schema_page(&schema, "schema/x.json", "X");
        assert!(
            page.contains("| `a` | string | **required**. the \\| a |"),
            "{page}"
        );
        assert!(page.contains("| `list[].n` | integer ≥ 0 |"), "{page}");
        assert_eq!(
            escape_html("/proc/<pid> `<pid>`"),
            "/proc/&lt;pid&gt; `<pid>`"
        );
        // A self-reference is listed once, not followed for ever.
        assert!(page.contains("| `list[].again` |"), "{page}");
        assert!(!page.contains("list[].again.n"), "{page}");
    }

    #[test]
    fn html_ids_and_links_are_read() {
        let (ids, hrefs) = scan_html(
            r##"<h2 id="a-b"><a class="header" href="#a-b">x</a></h2><a href="p.html#q&amp;r">"##,
        );
        assert!(ids.contains("a-b"));
        assert_eq!(hrefs, ["#a-b", "p.html#q&r"]);
        assert_eq!(percent_decode("a%20b%zz"), "a b%zz");
        assert_eq!(
            normal(Path::new("/r/docs/book/../../schema/x")),
            Path::new("/r/schema/x")
        );
    }

    #[test]
    fn broken_links_and_anchors_are_found() {
        let root = std::env::temp_dir().join(format!("xtask-links-{}", std::process::id()));
        let book = root.join("docs/book");
        std::fs::create_dir_all(book.join("sub")).expect("mkdir");
        std::fs::write(
            book.join("a.html"),
            r##"<h1 id="x">A</h1><a href="#x">ok</a><a href="sub/index.html#z">ok</a>
            <a href="gone.html">missing page</a><a href="a.html#y">missing anchor</a>
            <a href="https://example.org/nowhere">external</a>"##,
        )
        .expect("write");
        std::fs::write(book.join("sub/index.html"), r#"<h2 id="z">Z</h2>"#).expect("write");
        std::fs::write(
            root.join("README.md"),
            "[a](docs/src/a.md#x) [sub](docs/src/sub/README.md#z) [bad](docs/src/a.md#nope) [file](NOFILE.md)\n",
        )
        .expect("write");
        let broken = check_links(&root).expect("check");
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(broken.len(), 4, "{broken:#?}");
        for (what, needle) in [
            ("docs/book/a.html", "gone.html"),
            ("docs/book/a.html", "a.html#y"),
            ("README.md", "docs/src/a.md#nope"),
            ("README.md", "NOFILE.md"),
        ] {
            assert!(
                broken
                    .iter()
                    .any(|b| b.starts_with(what) && b.contains(needle)),
                "{needle} not reported: {broken:#?}"
            );
        }
    }
}
