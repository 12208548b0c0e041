//! Documentation generated from the clap definitions, so that it cannot drift from the parser:
//! the options and subcommands of the man page `man/exoip.8`, and the shell completions
//! (`exoip completions bash|zsh|fish`, checked in under `completions/`).
//!
//! The man page is the hand-written template `man/exoip.8.in` (name, description, modes,
//! failover rules, environment, examples, ...) with two marker lines replaced by what clap_mangen
//! renders from [`Cli::command`]. `tests/docs.rs` fails when a checked-in file differs from what
//! [`generated_files`] produces (`EXOIP_BLESS=1 cargo test --test docs` rewrites them).
//!
//! Both outputs present the Go exoip's two-letter flags by their descriptive long names
//! (`--address`, not `--xi`): the legacy `-xi` forms are rewritten before clap sees them, and
//! nobody should be offered `--xi` by a completion.

use std::io::{self, Write};

use clap::{Arg, Args, Command, CommandFactory, ValueEnum};

use crate::cli::Cli;

/// The hand-written part of the man page; the marker lines are replaced by generated roff.
pub const MAN_TEMPLATE: &str = include_str!("../man/exoip.8.in");
/// Replaced by the options of the agent (`-W` and its flags), one subsection per help heading.
pub const OPTIONS_MARKER: &str = r#".\" @GENERATED_OPTIONS@"#;
/// Replaced by the subcommands, with their options.
pub const SUBCOMMANDS_MARKER: &str = r#".\" @GENERATED_SUBCOMMANDS@"#;

/// Long names of the Go exoip's flags (`-xi` → `--xi`), each with a descriptive visible alias
/// that the documentation and the completions show instead.
pub const LEGACY_LONGS: &[&str] = &["xi", "xk", "xs", "xe"];

/// The help heading of the mode flags, which the template documents by hand (MODES).
const MODES_HEADING: &str = "Modes";

/// Shells `exoip completions` writes a script for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    pub const ALL: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

    /// Where the checked-in script lives, relative to the crate root; the name is the one the
    /// shell looks for in its completion directory.
    pub fn checked_in_path(self) -> &'static str {
        match self {
            Shell::Bash => "completions/exoip.bash",
            Shell::Zsh => "completions/_exoip",
            Shell::Fish => "completions/exoip.fish",
        }
    }

    fn generator(self) -> clap_complete::Shell {
        match self {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// `exoip completions SHELL`.
#[derive(Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Writes the completion script for `shell`.
pub fn write_completions(shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut cmd = presented_command();
    clap_complete::generate(shell.generator(), &mut cmd, "exoip", &mut buf);
    out.write_all(&buf)?;
    out.flush()
}

/// The completion script for `shell`, as text.
pub fn completions(shell: Shell) -> String {
    let mut buf = Vec::new();
    write_completions(shell, &mut buf).expect("writing to a Vec does not fail");
    String::from_utf8(buf).expect("clap_complete writes UTF-8")
}

/// The complete man page `exoip.8`.
pub fn man_page() -> String {
    let cmd = documented_command();
    let mut page = String::with_capacity(MAN_TEMPLATE.len() * 2);
    for line in MAN_TEMPLATE.lines() {
        if line == OPTIONS_MARKER {
            page.push_str(&agent_options(&cmd));
        } else if line == SUBCOMMANDS_MARKER {
            page.push_str(&subcommands(&cmd));
        } else {
            page.push_str(&line.replace("@VERSION@", env!("CARGO_PKG_VERSION")));
            page.push('\n');
        }
    }
    ascii_roff(&page)
}

/// Non-ASCII characters (an ellipsis or an arrow in a help text) as groff's `\[uXXXX]`, so the
/// page does not depend on the input encoding troff assumes (Latin-1 without preconv).
fn ascii_roff(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    for c in page.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out
}

/// Every generated file with its path relative to the crate root.
pub fn generated_files() -> Vec<(&'static str, String)> {
    let mut files = vec![("man/exoip.8", man_page())];
    for shell in Shell::ALL {
        files.push((shell.checked_in_path(), completions(shell)));
    }
    files
}

/// [`Cli::command`] as users should see it: the descriptive long names of the legacy flags
/// (the two-letter ones stay accepted, as hidden aliases).
pub fn presented_command() -> Command {
    fn present(cmd: Command) -> Command {
        cmd.mut_args(|arg| match arg.get_long() {
            Some(long) if LEGACY_LONGS.contains(&long) => {
                let legacy = long.to_string();
                let Some(name) = arg
                    .get_visible_aliases()
                    .and_then(|a| a.first().map(|s| s.to_string()))
                else {
                    return arg;
                };
                // `visible_alias(None)` clears every alias; the legacy name comes back hidden.
                arg.long(name).visible_alias(None).alias(legacy)
            }
            _ => arg,
        })
        .mut_subcommands(present)
    }
    without_hidden_subcommands(present(Cli::command()))
}

/// The top-level command rebuilt without its hidden subcommands (`lab`): clap_complete offers
/// hidden subcommands (zsh and fish list them) and clap has no way to remove one. The arguments,
/// groups and visible subcommands are carried over whole, with the top-level settings that shape
/// help and completions; a test checks that `--help` stays the same.
fn without_hidden_subcommands(cmd: Command) -> Command {
    let mut out = Command::new(cmd.get_name().to_string())
        .args(cmd.get_arguments().cloned())
        .groups(cmd.get_groups().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
        .args_conflicts_with_subcommands(cmd.is_args_conflicts_with_subcommands_set())
        .disable_help_subcommand(cmd.is_disable_help_subcommand_set())
        .subcommand_required(cmd.is_subcommand_required_set());
    if let Some(version) = cmd.get_version() {
        out = out.version(version.to_string());
    }
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(about) = cmd.get_long_about() {
        out = out.long_about(about.clone());
    }
    out
}

/// [`presented_command`] with the defaults shown in the man page. The agent's flags have no
/// clap defaults (the configuration applies them after merging flags, environment and file),
/// so they are taken from the constants the configuration uses.
pub fn documented_command() -> Command {
    let defaults = documented_defaults();
    presented_command().mut_args(
        |arg| match defaults.iter().find(|(id, _)| arg.get_id() == *id) {
            Some((_, value)) => arg.default_value(value.clone()),
            None => arg,
        },
    )
}

/// `(argument id, default as the user would write it)` for the agent's flags.
pub fn documented_defaults() -> Vec<(&'static str, String)> {
    use crate::{config, health, hooks, status, wire};
    let d = |d: std::time::Duration| humantime::format_duration(d).to_string();
    vec![
        ("priority", config::DEFAULT_PRIORITY.to_string()),
        ("bind", format!(":{}", wire::DEFAULT_PORT)),
        ("dead_ratio", config::DEFAULT_DEAD_RATIO.to_string()),
        ("interval", d(config::DEFAULT_INTERVAL)),
        ("provider", "exoscale".to_string()),
        ("zone", config::DEFAULT_ZONE.to_string()),
        ("metadata_url", config::DEFAULT_METADATA_URL.to_string()),
        ("api_timeout", d(config::DEFAULT_API_TIMEOUT)),
        ("group", config::DEFAULT_GROUP.to_string()),
        ("max_clock_skew", d(config::DEFAULT_MAX_CLOCK_SKEW)),
        ("reconcile_interval", d(config::DEFAULT_RECONCILE)),
        ("peer_refresh", d(config::DEFAULT_PEER_REFRESH)),
        ("track_interval", d(health::DEFAULT_INTERVAL)),
        (
            "track_timeout",
            format!(
                "{} (scripts: {})",
                d(health::DEFAULT_TIMEOUT),
                d(health::DEFAULT_SCRIPT_TIMEOUT)
            ),
        ),
        ("track_fall", health::DEFAULT_FALL.to_string()),
        ("track_rise", health::DEFAULT_RISE.to_string()),
        ("hook_timeout", d(hooks::DEFAULT_HOOK_TIMEOUT)),
        ("state_dir", config::DEFAULT_STATE_DIR.to_string()),
        ("status_socket", status::DEFAULT_SOCKET.to_string()),
        ("openstack_mode", "floating-ip".to_string()),
        ("log_format", "text".to_string()),
    ]
}

/// The agent's options but the modes (documented by hand in MODES): the ones without a help
/// heading first, then one subsection per heading, in the order of the definitions.
fn agent_options(cmd: &Command) -> String {
    let options = cmd.clone().mut_args(|a| {
        if a.get_help_heading() == Some(MODES_HEADING) {
            a.hide(true)
        } else {
            a
        }
    });
    // clap_mangen renders `.SH OPTIONS` and one `.SH` per heading; the template has the
    // OPTIONS header and its introduction, so the headings become subsections.
    demote_sections(&render(|w| {
        clap_mangen::Man::new(options).render_options_section(w)
    }))
}

/// One subsection per visible subcommand: how to call it, what it does, its options (for
/// `check`, which takes the agent's: a reference to OPTIONS).
fn subcommands(cmd: &Command) -> String {
    let agent_ids: Vec<&str> = cmd.get_arguments().map(|a| a.get_id().as_str()).collect();
    let mut out = String::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        let own: Vec<&Arg> = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !is_builtin(a))
            .collect();
        let takes_agent_options = agent_ids
            .iter()
            .filter(|id| !["help", "version"].contains(id))
            .all(|id| sub.get_arguments().any(|a| a.get_id() == *id));
        out.push_str(&format!(".SS \"exoip {name}\"\n"));
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            out.push_str(&roff_text(&about.to_string()));
        }
        if takes_agent_options {
            out.push_str(&format!(
                ".PP\nTakes the agent's options (see\n.BR OPTIONS ),\nso that \\fBexoip {} \\-W\\fR ... works as it is.\n",
                roff_escape(name)
            ));
        } else if !own.is_empty() {
            let options = sub.clone().disable_help_flag(true);
            let rendered = render(|w| clap_mangen::Man::new(options).render_options_section(w));
            out.push_str(&strip_sections(&rendered));
        }
    }
    out
}

/// `--help` and `--version`, which every command has.
fn is_builtin(arg: &Arg) -> bool {
    matches!(arg.get_id().as_str(), "help" | "version")
}

fn render(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
    let mut buf = Vec::new();
    f(&mut buf).expect("writing to a Vec does not fail");
    String::from_utf8(buf).expect("clap_mangen writes UTF-8")
}

/// `.SH OPTIONS` dropped (the template has it), every other `.SH` made a `.SS`.
fn demote_sections(roff: &str) -> String {
    let mut out = String::with_capacity(roff.len());
    for line in roff.lines() {
        if line == ".SH OPTIONS" {
            continue;
        }
        match line.strip_prefix(".SH ") {
            Some(heading) => out.push_str(&format!(".SS {heading}\n")),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Section headers dropped, for options listed inside a subsection.
fn strip_sections(roff: &str) -> String {
    roff.lines()
        .filter(|l| !l.starts_with(".SH "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Plain text as roff: escaped, each paragraph of the help text its own `.PP`.
fn roff_text(text: &str) -> String {
    let mut out = String::new();
    for paragraph in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
        out.push_str(".PP\n");
        for line in paragraph.lines() {
            out.push_str(&roff_escape(line.trim()));
            out.push('\n');
        }
    }
    out
}

/// Escapes backslashes and hyphens, and keeps a leading `.` or `'` from being read as a
/// request.
fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_defaults_name_existing_arguments() {
        let cmd = Cli::command();
        for (id, _) in documented_defaults() {
            assert!(
                cmd.get_arguments().any(|a| a.get_id() == id),
                "documented_defaults names `{id}`, which the CLI no longer has"
            );
        }
    }

    #[test]
    fn legacy_flags_are_presented_by_their_descriptive_names() {
        for long in LEGACY_LONGS {
            let arg = Cli::command()
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .cloned()
                .unwrap_or_else(|| panic!("--{long} (legacy -{long}) is gone from the CLI"));
            let alias = arg.get_visible_aliases().unwrap_or_default()[0].to_string();
            let presented = presented_command();
            let shown = presented
                .get_arguments()
                .find(|a| a.get_id() == arg.get_id())
                .unwrap();
            assert_eq!(shown.get_long(), Some(alias.as_str()));
            assert!(shown.get_visible_aliases().unwrap_or_default().is_empty());
        }
        // Still the same parser: both forms are accepted.
        let m = presented_command()
            .try_get_matches_from(["exoip", "--xi", "203.0.113.10", "--address=203.0.113.11"])
            .unwrap();
        assert_eq!(m.get_many::<String>("addresses").unwrap().count(), 2);
    }

    #[test]
    fn presented_command_has_the_same_help_without_hidden_subcommands() {
        let mut presented = presented_command();
        assert!(presented.get_subcommands().all(|s| !s.is_hide_set()));
        assert!(presented
            .get_subcommands()
            .any(|s| s.get_name() == "status"));
        // Same help but for the legacy names, which are shown by their aliases.
        let original = Cli::command()
            .render_long_help()
            .to_string()
            .replace("--xi <IP>", "--address <IP>")
            .replace("--xk <KEY>", "--api-key <KEY>")
            .replace("--xs <SECRET>", "--api-secret <SECRET>")
            .replace("--xe <URL>", "--api-endpoint <URL>");
        let shown = presented.render_long_help().to_string();
        let strip_aliases = |s: &str| {
            s.lines()
                .filter(|l| !l.trim_start().starts_with("[alias"))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        };
        assert_eq!(strip_aliases(&shown), strip_aliases(&original));
    }

    #[test]
    fn roff_escaping() {
        assert_eq!(roff_escape("a-b \\ c"), "a\\-b \\e c");
        assert_eq!(roff_escape(".x"), "\\&.x");
        assert_eq!(roff_text("one\n\ntwo"), ".PP\none\n.PP\ntwo\n");
        assert_eq!(ascii_roff("a…b → c"), "a\\[u2026]b \\[u2192] c");
    }
}
