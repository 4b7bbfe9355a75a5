//! Command-line syntax errors from clap, printed without the private keys they may quote.
//!
//! clap echoes what it could not place in full ("unexpected argument '…' found", "invalid
//! value '…'", and a tip repeating it), so a private key pasted as a stray argument
//! (`backup -r age1… AGE-SECRET-KEY-1…`) would land on stderr and in CI logs. Before such an
//! error is printed, every argument that [`looks_like_private_key`] and every word of the
//! message that does is replaced by `[redacted]`. The rest of clap's text (usage line, tip,
//! `--help` pointer) and its exit code (2) stay as they are.

use std::ffi::OsString;

use crate::archive::keys::looks_like_private_key;

/// What replaces a private key in a printed error.
pub const REDACTED: &str = "[redacted]";

/// Prints clap's error (help and version on stdout, errors on stderr), with every private
/// key replaced by [`REDACTED`], and returns clap's exit code (2 for a usage error, 0 for
/// `--help` and `--version`). `args` is the process's argv.
pub fn report(err: clap::Error, args: &[OsString]) -> u8 {
    let code = u8::try_from(err.exit_code()).unwrap_or(2);
    match redact(&err.render().to_string(), args) {
        // Nothing to hide: clap prints as it always does (colour, stream). A closed stdout
        // under `--help | head` is ignored by clap, not a panic.
        None => {
            let _ = err.print();
        }
        // Plain text: styling codes could split a key and hide it from the check.
        Some(text) if err.use_stderr() => eprint!("{text}"),
        Some(text) => {
            use std::io::Write;
            let _ = crate::output::stdout::report().write_all(text.as_bytes());
        }
    }
    code
}

/// `rendered` with private keys replaced by [`REDACTED`], or `None` when it quotes none and
/// no argument holds one. Whole arguments are replaced first (longest first, so one that
/// contains another goes whole), then the value of an `--option=KEY`, then any word of the
/// text that still looks like a key, then any line that still does.
pub fn redact(rendered: &str, args: &[OsString]) -> Option<String> {
    let mut flagged: Vec<String> = Vec::new();
    for arg in args {
        let arg = arg.to_string_lossy();
        if looks_like_private_key(&arg) {
            flagged.push(arg.to_string());
        }
        // `--option=KEY`: clap may quote the value alone.
        if let Some((_, value)) = arg.split_once('=')
            && looks_like_private_key(value)
        {
            flagged.push(value.to_owned());
        }
    }
    if flagged.is_empty() && !looks_like_private_key(rendered) {
        return None;
    }
    flagged.sort_by_key(|a| std::cmp::Reverse(a.len()));
    let mut text = rendered.to_owned();
    for key in flagged.iter().filter(|k| !k.is_empty()) {
        text = text.replace(key.as_str(), REDACTED);
    }
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if !looks_like_private_key(line) {
            out.push_str(line);
            continue;
        }
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '=' | '`'))
            .filter(|w| looks_like_private_key(w))
            .collect();
        let mut line = line.to_owned();
        for word in words {
            line = line.replace(word, REDACTED);
        }
        if looks_like_private_key(&line) {
            line = format!("{REDACTED}\n");
        }
        out.push_str(&line);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const CANARY: &str =
        "AGE-SECRET-KEY-1CANARYQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn rendered(args: &[OsString]) -> String {
        match crate::cli::Cli::try_parse_from(args) {
            Ok(_) => String::new(),
            Err(err) => err.render().to_string(),
        }
    }

    #[test]
    fn a_stray_key_is_redacted_and_the_rest_kept() {
        let args = argv(&["coldvault", "backup", "--vault", "v", "-r", "age1x", CANARY]);
        let text = rendered(&args);
        assert!(text.contains(CANARY), "clap quotes it: {text}");
        let shown = redact(&text, &args).unwrap_or_default();
        assert!(!shown.contains("CANARY"), "{shown}");
        assert!(
            shown.contains("unexpected argument '[redacted]' found"),
            "{shown}"
        );
        assert!(shown.contains("Usage: coldvault backup"), "{shown}");
        assert!(shown.contains("--help"), "{shown}");
    }

    #[test]
    fn a_key_as_an_option_value_is_redacted() {
        let lower = CANARY.to_ascii_lowercase();
        let attempts = [
            argv(&["coldvault", "inspect", "a", "--nope", CANARY]),
            argv(&["coldvault", "inspect", "a", &format!("--nope={CANARY}")]),
            argv(&["coldvault", "extract", "a", "--format", &lower, "-o", "x"]),
            argv(&["coldvault", &format!("x {CANARY} y")]),
        ];
        for args in attempts {
            let text = rendered(&args);
            // `None`: clap's text quotes no key, and is printed as it is.
            let shown = redact(&text, &args).unwrap_or_else(|| text.clone());
            assert!(!shown.to_ascii_uppercase().contains("CANARY"), "{shown}");
            assert!(shown.starts_with("error: "), "{shown}");
        }
    }

    #[test]
    fn an_error_without_keys_is_left_alone() {
        let args = argv(&["coldvault", "inspect", "a", "--nope"]);
        assert_eq!(redact(&rendered(&args), &args), None);
    }
}
