//! Generated documents stay in step with the command line: the committed man page is what
//! `coldvault man` renders today.

#[test]
fn the_committed_man_page_is_current() {
    let rendered = coldvault::commands::completions::man_page().expect("man page renders");
    let committed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/coldvault.1"))
        .expect("docs/coldvault.1 exists");
    assert!(
        rendered == committed,
        "docs/coldvault.1 is stale: regenerate it with `cargo run -- man > docs/coldvault.1`"
    );
}

#[test]
fn completions_exist_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_coldvault"))
            .args(["completions", shell])
            .output()
            .expect("coldvault runs");
        assert!(output.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(
            script.contains("backup") && script.contains("all-versions"),
            "{shell}"
        );
    }
}
