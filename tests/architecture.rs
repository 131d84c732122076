//! The code's shape, checked: dependencies between the top-level modules point one way
//! (docs/ARCHITECTURE.md), no source file is over 400 lines without saying why at its top, and
//! no function is over 80 lines. Reads the sources; starts nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each layer and the layers it may use (besides itself).
const LAYERS: &[(&str, &[&str])] = &[
    ("protocol", &[]),
    ("policy", &[]),
    ("logging", &[]),
    ("metrics", &["protocol"]),
    ("config", &["protocol", "policy"]),
    (
        "backend",
        &["protocol", "policy", "metrics", "logging", "config"],
    ),
    (
        "session",
        &[
            "protocol", "policy", "metrics", "logging", "config", "backend",
        ],
    ),
    (
        "cluster",
        &[
            "protocol", "policy", "metrics", "logging", "config", "backend", "session",
        ],
    ),
    (
        "callback",
        &[
            "protocol", "policy", "metrics", "logging", "config", "session", "cluster",
        ],
    ),
    (
        "publish",
        &[
            "protocol", "policy", "metrics", "logging", "config", "session", "cluster",
        ],
    ),
    (
        "server",
        &[
            "protocol", "policy", "metrics", "logging", "config", "backend", "session", "cluster",
            "callback", "publish",
        ],
    ),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> Vec<PathBuf> {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    files.sort();
    files
}

/// The top-level module a source file belongs to (`src/session/handshake.rs` -> `session`).
fn layer_of(path: &Path) -> Option<String> {
    let rel = path
        .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
        .ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

#[test]
fn dependencies_between_layers_point_one_way() {
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut violations = Vec::new();
    for path in src() {
        let Some(layer) = layer_of(&path) else {
            continue;
        };
        let Some(may_use) = allowed.get(layer.as_str()) else {
            continue; // lib.rs, main.rs, shutdown.rs, fuzzing.rs: the top
        };
        let text = std::fs::read_to_string(&path).expect("read source");
        for (i, line) in text.lines().enumerate() {
            for used in line.split("crate::").skip(1) {
                let name: String = used
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name != layer
                    && allowed.contains_key(name.as_str())
                    && !may_use.contains(&name.as_str())
                {
                    violations.push(format!("{}:{}: {layer} uses {name}", path.display(), i + 1));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn long_files_say_why_and_functions_stay_short() {
    let mut problems = Vec::new();
    for path in src() {
        let text = std::fs::read_to_string(&path).expect("read source");
        let lines: Vec<&str> = text.lines().collect();
        let code_lines = lines
            .iter()
            .position(|l| l.starts_with("#[cfg(test)]"))
            .unwrap_or(lines.len());
        let head: String = lines
            .iter()
            .take_while(|l| l.starts_with("//!"))
            .copied()
            .collect();
        if code_lines > 400 && !head.contains("Longer than 400 lines on purpose") {
            problems.push(format!(
                "{}: {code_lines} lines without a reason at its top",
                path.display()
            ));
        }
        let mut i = 0;
        while i < code_lines {
            let trimmed = lines[i].trim_start();
            let is_fn = [
                "fn ",
                "pub fn ",
                "pub(crate) fn ",
                "async fn ",
                "pub async fn ",
                "pub(crate) async fn ",
            ]
            .iter()
            .any(|p| trimmed.starts_with(p));
            if is_fn && !trimmed.ends_with(';') {
                let indent = lines[i].len() - trimmed.len();
                let closing = " ".repeat(indent) + "}";
                let end = (i + 1..lines.len())
                    .find(|&j| lines[j] == closing)
                    .unwrap_or(i);
                if end - i + 1 > 80 {
                    problems.push(format!(
                        "{}:{}: a function of {} lines",
                        path.display(),
                        i + 1,
                        end - i + 1
                    ));
                }
                i = end;
            }
            i += 1;
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
