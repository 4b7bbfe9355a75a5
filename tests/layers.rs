//! The walls between the library's layers (`docs/ARCHITECTURE.md`, "What each layer may
//! import"), checked on the sources: `src/cli/` is clap alone and names nothing of
//! `src/commands/`, so the command line can be read (and one day split off) without the code
//! that runs it; `src/engine/` names neither clap, nor the output, nor the commands, so the
//! verbs run the same under any front end. A line that breaks a wall fails the test with its
//! file and line; comments are not code and are left out.

use std::path::{Path, PathBuf};

/// What a folder of the crate must not name, and why.
struct Wall {
    folder: &'static str,
    forbidden: &'static [&'static str],
    why: &'static str,
}

const WALLS: &[Wall] = &[
    Wall {
        folder: "src/cli",
        forbidden: &["crate::commands", "super::commands", "coldvault::commands"],
        why: "cli holds clap structures only; commands import cli, never the other way",
    },
    Wall {
        folder: "src/engine",
        forbidden: &[
            "use clap",
            "clap::",
            "crate::output",
            "crate::commands",
            "crate::cli",
        ],
        why: "the engine has no command line and no printing",
    },
    Wall {
        folder: "src/archive",
        forbidden: &["crate::vault", "kv::client", "KvClient", "crate::commands"],
        why: "the archive is the format: it knows the KV model, never a server or its client",
    },
];

/// Every `.rs` file under `dir`, sorted so failures read the same on every machine.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The lines of `text` that name one of `forbidden` outside a comment, as `line: text`.
fn breaches(text: &str, forbidden: &[&str]) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = line.trim_start();
            !code.starts_with("//") && forbidden.iter().any(|word| code.contains(word))
        })
        .map(|(index, line)| format!("{}: {}", index + 1, line.trim()))
        .collect()
}

#[test]
fn the_scan_finds_a_breach_and_ignores_comments() {
    let text = "//! Resolved in `crate::commands`.\nuse crate::commands::backup;\n";
    assert_eq!(
        breaches(text, WALLS[0].forbidden),
        ["2: use crate::commands::backup;"]
    );
    assert_eq!(
        breaches("    clap::Args\n", WALLS[1].forbidden),
        ["1: clap::Args"]
    );
}

#[test]
fn layers_keep_their_walls() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for wall in WALLS {
        let files = rust_files(&root.join(wall.folder));
        assert!(!files.is_empty(), "{}: no Rust files", wall.folder);
        for file in files {
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for breach in breaches(&text, wall.forbidden) {
                let name = file.strip_prefix(root).unwrap_or(&file).display();
                found.push(format!("{name}:{breach}  ({})", wall.why));
            }
        }
    }
    assert!(
        found.is_empty(),
        "layer walls broken:\n{}",
        found.join("\n")
    );
}
