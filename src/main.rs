//! The `exoip` binary: parse the command line, run the chosen mode, map errors to exit codes.

use std::process::ExitCode;

use clap::FromArgMatches;
use exoip::cli::{normalize_legacy_args, Cli, Command};
use exoip::config_file::ArgsError;

fn main() -> ExitCode {
    let args = normalize_legacy_args(std::env::args_os());
    // The configuration file (-c) is merged here, under the flags and the environment, so that
    // every mode and `exoip check` see one set of settings.
    let (matches, sources) = match exoip::config_file::parse_args(args) {
        Ok(parsed) => parsed,
        Err(ArgsError::Usage(e)) => return clap_error(e),
        Err(ArgsError::Config(e)) => {
            eprintln!("exoip: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return clap_error(e),
    };
    match &mut cli.command {
        None => cli.agent.sources = sources,
        Some(Command::Check(args)) => args.sources = sources,
        Some(_) => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("exoip: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match cli.command {
        Some(Command::Sim(args)) => {
            exoip::agent::init_logging(None, false);
            runtime
                .block_on(exoip_providers::sim::cli::run(args))
                .map_err(|e| anyhow::anyhow!("{e}"))
        }
        Some(Command::Demo(args)) => runtime.block_on(exoip::lab::run_demo(args)),
        Some(Command::Status(args)) => runtime.block_on(exoip::status::run_status(args)),
        Some(Command::Release(args)) => {
            runtime.block_on(exoip::status::run_control("release", args))
        }
        Some(Command::Resume(args)) => runtime.block_on(exoip::status::run_control("resume", args)),
        Some(Command::Promote(args)) => {
            runtime.block_on(exoip::status::run_control("promote", args))
        }
        Some(Command::Check(args)) => {
            let sub = matches.subcommand_matches("check").unwrap_or(&matches);
            return exoip::agent::check_main(*args, sub, runtime);
        }
        Some(Command::Completions(args)) => {
            exoip::docgen::write_completions(args.shell, &mut std::io::stdout()).map_err(Into::into)
        }
        Some(Command::Lab { command }) => runtime.block_on(exoip::lab::run_lab(command)),
        None => return exoip::agent::main(cli.agent, &matches, runtime),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("exoip: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Help and version go to stdout with status 0; usage errors are one line on stderr, status 2.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("exoip: {}", first.trim_start_matches("error: "));
            ExitCode::from(2)
        }
    }
}
