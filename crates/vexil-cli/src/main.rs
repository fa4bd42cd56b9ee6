//! The `vexil` binary: parses the command line and maps the outcome to an exit code; the work
//! is in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with 2.
    let cli = vexil_cli::cli::Cli::parse();
    match vexil_cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `vexil flag list | head`: the reader went away; nothing is wrong.
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
