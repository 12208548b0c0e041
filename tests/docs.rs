//! The generated documentation: the checked-in man page and completions are what the clap
//! definitions produce today (`EXOIP_BLESS=1 cargo test --test docs` rewrites them), the man page
//! is valid roff that documents every visible flag and nothing hidden, and the completions work.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::CommandFactory;
use exoip::cli::Cli;
use exoip::docgen::{self, Shell};

const BLESS: &str = "EXOIP_BLESS";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn checked_in_files_are_up_to_date() {
    let bless = std::env::var_os(BLESS).is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (rel, generated) in docgen::generated_files() {
        let path = root().join(rel);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == generated {
            continue;
        }
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &generated).unwrap();
            eprintln!("rewrote {rel}");
            continue;
        }
        let line = current
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| current.lines().count().min(generated.lines().count()));
        stale.push(format!(
            "{rel}: differs from line {}: checked in {:?}, generated {:?}",
            line + 1,
            current.lines().nth(line).unwrap_or("<end of file>"),
            generated.lines().nth(line).unwrap_or("<end of file>"),
        ));
    }
    assert!(
        stale.is_empty(),
        "stale generated documentation (the clap definitions or man/exoip.8.in changed):\n  {}\n\
         run `EXOIP_BLESS=1 cargo test --test docs` to update, and review the diff",
        stale.join("\n  ")
    );
}

/// The marker lines are replaced, the version is filled in, and the page reads as one page.
#[test]
fn man_page_is_assembled() {
    let page = docgen::man_page();
    assert!(!page.contains("@GENERATED"), "a marker was left");
    assert!(!page.contains("@VERSION@"));
    assert!(page.starts_with(".TH EXOIP 8 "));
    assert!(page.is_ascii(), "non-ASCII must be escaped for troff");
    assert!(page.contains(&format!("\"exoip {}\"", env!("CARGO_PKG_VERSION"))));
    assert_eq!(page.matches(".SH OPTIONS\n").count(), 1);
    assert_eq!(page.matches(".SH SUBCOMMANDS\n").count(), 1);
    // Hand-written prose stays.
    for section in [
        ".SH NAME",
        ".SH DESCRIPTION",
        ".SH MODES",
        ".SH FAILOVER RULES",
        ".SH SIGNALS",
        ".SH EXIT STATUS",
        ".SH ENVIRONMENT",
        ".SH SYSTEMD",
        ".SH FILES",
        ".SH EXAMPLE",
        ".SH SEE ALSO",
    ] {
        assert!(page.contains(section), "{section} is missing");
    }
    // The generated options come with their defaults and variables.
    assert!(page.contains("[default: 1s]"), "interval default");
    assert!(
        page.contains("\\fBIF_ADDRESS\\fR"),
        "environment of --address"
    );
}

/// Every flag a user can give appears (by its presented long name), nothing hidden does.
#[test]
fn man_page_documents_every_visible_flag_and_nothing_hidden() {
    let page = docgen::man_page();
    let presented = docgen::presented_command();
    let mut missing = Vec::new();
    let mut commands = vec![(String::from("exoip"), presented.clone())];
    for sub in presented.get_subcommands() {
        commands.push((format!("exoip {}", sub.get_name()), sub.clone()));
    }
    for (name, cmd) in &commands {
        let hidden_command = cmd.is_hide_set();
        let sub = name.strip_prefix("exoip ").unwrap_or("");
        if !sub.is_empty() {
            let heading = format!(".SS \"exoip {sub}\"");
            if hidden_command {
                assert!(!page.contains(&heading), "hidden `{name}` is documented");
                continue;
            }
            assert!(page.contains(&heading), "`{name}` is not documented");
        }
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
            if arg.is_hide_set() {
                assert!(
                    !page.contains(&format!("\\fB{roff}\\fR")),
                    "hidden --{long} ({name}) is documented"
                );
            } else if !page.contains(&roff) {
                missing.push(format!("{name} --{long}"));
            }
        }
    }
    assert!(missing.is_empty(), "undocumented flags: {missing:?}");
    // The Go exoip's two-letter names are explained once, not listed as options.
    assert!(page.contains("\\fB\\-\\-address\\fR"));
    assert!(!page.contains("\\fB\\-\\-xi\\fR"));
}

/// groff finds nothing to warn about (`-ww`: all warnings). Skipped without groff
/// (`apt-get install groff-base`).
#[test]
fn man_page_is_clean_roff() {
    if !have("groff") {
        eprintln!("SKIP: groff not installed (apt-get install groff-base)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exoip.8");
    std::fs::write(&path, docgen::man_page()).unwrap();
    let out = Command::new("groff")
        .args(["-man", "-ww", "-z", "-rCHECKSTYLE=3"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "groff -man -ww -z: {}\n{stderr}",
        out.status
    );
    // And it renders to text with the generated parts in it.
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-P-cbou"])
        .arg(&path)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--track-process <NAME>"), "{text}");
    assert!(text.contains("exoip completions"), "{text}");
}

/// `exoip completions SHELL` prints exactly the checked-in script.
#[test]
fn completions_subcommand_prints_the_scripts() {
    for shell in Shell::ALL {
        let name = format!("{shell:?}").to_lowercase();
        let out = Command::new(env!("CARGO_BIN_EXE_exoip"))
            .args(["completions", &name])
            .output()
            .unwrap();
        assert!(out.status.success(), "exoip completions {name}: {out:?}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            docgen::completions(shell),
            "{name}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_exoip"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn completions_offer_long_forms_and_no_hidden_subcommand() {
    for shell in Shell::ALL {
        let script = docgen::completions(shell);
        for word in ["address", "api-key", "api-secret-file", "track-process"] {
            assert!(script.contains(word), "{shell:?}: no {word}");
        }
        // `lab` is hidden: only the test beds use it.
        for offer in ["exoip,lab)", "'lab:", "-a \"lab\""] {
            assert!(!script.contains(offer), "{shell:?} offers `lab`");
        }
        assert!(script.contains("status"), "{shell:?}: no subcommands");
        assert!(!script.contains("--xi"), "{shell:?} offers --xi");
    }
}

/// Runs the bash completion function as bash would for the words typed so far.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_LINE='{}'\nCOMP_POINT=${{#COMP_LINE}}\n\
         _exoip exoip '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words.len() - 1,
        words.join(" "),
        words[words.len() - 1],
        words.get(words.len().wrapping_sub(2)).unwrap_or(&""),
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_completes() {
    if !have("bash") {
        eprintln!("SKIP: bash not installed");
        return;
    }
    let script = root().join(Shell::Bash.checked_in_path());
    let got = bash_complete(&script, &["exoip", "--addr"]);
    assert_eq!(got, ["--address"]);
    let got = bash_complete(&script, &["exoip", "sta"]);
    assert_eq!(got, ["status"]);
    let got = bash_complete(&script, &["exoip", "completions", ""]);
    assert_eq!(got, ["-h", "--help", "bash", "zsh", "fish"]);
    // The hidden `lab` is not offered.
    let got = bash_complete(&script, &["exoip", "l"]);
    assert!(got.is_empty(), "{got:?}");
    let got = bash_complete(&script, &["exoip", "--log-format", ""]);
    assert_eq!(got, ["text", "json"]);
}

/// The scripts parse in their shells, where installed.
#[test]
fn completion_scripts_parse() {
    for (shell, program) in [
        (Shell::Bash, "bash"),
        (Shell::Zsh, "zsh"),
        (Shell::Fish, "fish"),
    ] {
        if !have(program) {
            eprintln!("SKIP: {program} not installed");
            continue;
        }
        let out = Command::new(program)
            .arg("-n")
            .arg(root().join(shell.checked_in_path()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{program} -n: {out:?}");
    }
}

/// `--help` and the man page come from the same definitions: every long flag of `--help` is in
/// the page.
#[test]
fn help_and_man_page_agree() {
    let help = Cli::command().render_long_help().to_string();
    let page = docgen::man_page();
    for word in help.split_whitespace() {
        let Some(long) = word.strip_prefix("--") else {
            continue;
        };
        let long = long.trim_end_matches([',', '.', ')', ':', ']', '`']);
        let long = long.split(['=', '<', '[']).next().unwrap();
        if long.is_empty() || docgen::LEGACY_LONGS.contains(&long) {
            continue;
        }
        assert!(
            page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
            "--{long} is in --help but not in the man page"
        );
    }
}

/// `man/exoip.toml.5`: its KEYS section is what the clap definitions produce today
/// (`EXOIP_BLESS=1` rewrites it), it documents every key the file accepts and nothing else as
/// a key, every agent flag is a key (but the modes, `-c` and the secrets themselves), and it is
/// clean roff.
#[test]
fn config_file_man_page_is_up_to_date_and_complete() {
    use exoip::config_file::{self, MAN_KEYS_BEGIN, MAN_KEYS_END};
    let path = root().join("man/exoip.toml.5");
    let page = std::fs::read_to_string(&path).unwrap();
    let begin = page.find(MAN_KEYS_BEGIN).expect("begin marker") + MAN_KEYS_BEGIN.len() + 1;
    let end = page.find(MAN_KEYS_END).expect("end marker");
    let generated = config_file::man_keys();
    if page[begin..end] != generated {
        let bless = std::env::var_os(BLESS).is_some_and(|v| v == "1");
        assert!(
            bless,
            "man/exoip.toml.5: the KEYS section is stale (the clap definitions changed): run \
             `EXOIP_BLESS=1 cargo test --test docs` and review the diff"
        );
        let updated = format!("{}{generated}{}", &page[..begin], &page[end..]);
        std::fs::write(&path, updated).unwrap();
        eprintln!("rewrote man/exoip.toml.5");
    }
    let page = std::fs::read_to_string(&path).unwrap();
    let keys = config_file::keys();
    let roff = |k: &str| format!("\\fB{}\\fR", k.replace('-', "\\-"));
    for key in &keys {
        assert!(page.contains(&roff(key)), "key {key} is not documented");
    }
    // Every key the KEYS section lists is one the file accepts.
    let section = &page[begin..page.find(MAN_KEYS_END).unwrap()];
    for line in section.lines().filter(|l| l.starts_with("\\fB")) {
        for item in line.split(", ") {
            let Some(key) = item
                .strip_prefix("\\fB")
                .and_then(|k| k.split("\\fR").next())
            else {
                continue;
            };
            let key = key.replace("\\-", "-");
            assert!(keys.contains(&key), "{key} is documented but is no key");
        }
    }
    // Every agent flag is a key, but the modes, -c and a secret itself (refused by design).
    let presented = docgen::presented_command();
    for arg in presented.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let exempt = [
            "help",
            "version",
            "watchdog",
            "associate",
            "dissociate",
            "validate",
            "config",
        ]
        .contains(&long)
            || config_file::SECRETS.iter().any(|s| s.name == long);
        assert!(
            exempt || keys.iter().any(|k| k == long),
            "--{long} is no key of the configuration file"
        );
    }
    if have("groff") {
        let out = Command::new("groff")
            .args(["-man", "-ww", "-z", "-rCHECKSTYLE=3"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "groff -man -ww -z man/exoip.toml.5: {}\n{stderr}",
            out.status
        );
    }
}
