//! The repository's documentation holds: every relative link in its
//! Markdown files resolves inside the repository (a file, and the heading
//! an anchor names), and docs/api.md lists every operation of the three
//! services' OpenAPI documents.

use std::{
    fs,
    path::{Path, PathBuf},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// Markdown files of the repository, outside build output and tool caches.
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable folder").flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.')
                && !matches!(name.as_str(), "target" | "node_modules" | "data")
            {
                markdown_files(&path, out);
            }
        } else if name.ends_with(".md") {
            out.push(path);
        }
    }
}

/// The `(target)` of every `[text](target)` link, code spans and fenced
/// blocks left out.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop code spans: a link inside backticks is not a link.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].trim().to_string());
            rest = &after[end..];
        }
    }
    found
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces
/// to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

#[test]
fn every_relative_link_resolves_inside_the_repository() {
    let root = root();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    assert!(files.len() >= 4, "found {files:?}");
    let mut broken = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let resolved = target.canonicalize();
            let ok = match &resolved {
                Ok(t) if t.starts_with(&root) => {
                    anchor.is_empty()
                        || t.is_dir()
                        || anchors(&fs::read_to_string(t).unwrap_or_default())
                            .iter()
                            .any(|a| a == anchor)
                }
                _ => false,
            };
            if !ok {
                broken.push(format!(
                    "{}: {link}",
                    file.strip_prefix(&root).unwrap().display()
                ));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_api_doc_lists_every_operation() {
    let api = fs::read_to_string(root().join("docs/api.md")).unwrap();
    let mut missing = Vec::new();
    for doc in [
        coupon_service::http::openapi(),
        timesale_service::http::openapi(),
        point_service::http::openapi(),
    ] {
        let json = serde_json::to_value(&doc).unwrap();
        for (path, item) in json["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let entry = format!("`{} {path}", method.to_uppercase());
                if !api.contains(&entry) {
                    missing.push(entry);
                }
            }
        }
    }
    assert!(missing.is_empty(), "not in docs/api.md: {missing:?}");
}

#[test]
fn links_are_found_outside_code() {
    let text = "see [a](docs/a.md) and `[b](nope)`\n```\n[c](nope)\n```\n[d](#x)";
    assert_eq!(links(text), vec!["docs/a.md", "#x"]);
    assert_eq!(
        slug("The fault model: `just faults`"),
        "the-fault-model-just-faults"
    );
}
