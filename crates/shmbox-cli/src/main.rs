//! `shmbox`: the command-line tool for shmbox regions.
//!
//! `main` parses the command line, dispatches to one module of
//! [`command`] per subcommand, and turns a [`Failure`] into a message on
//! stderr and an exit status (see [`exit`]).

mod cli;
mod command;
mod output;

use clap::Parser;
use std::process::ExitCode;

/// Exit statuses, as documented in `shmbox --help`.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// An error: region not found, corrupt, permission denied, peer left...
    pub const ERROR: u8 = 1;
    /// Bad arguments (clap uses the same status for its own usage errors).
    pub const USAGE: u8 = 2;
    /// `recv` timed out before any message arrived.
    pub const TIMEOUT: u8 = 3;
}

/// Why a command failed: the message for stderr and the exit status.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    /// A runtime error (status 1).
    pub fn error(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: exit::ERROR,
        }
    }

    /// A usage error (status 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: exit::USAGE,
        }
    }

    /// A timeout with nothing done (status 3).
    pub fn timeout(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: exit::TIMEOUT,
        }
    }

    /// The reader went away (`shmbox ls | head -1`): stop quietly.
    fn is_broken_pipe(&self) -> bool {
        self.code == exit::OK && self.message.is_empty()
    }
}

/// Output errors: a closed pipe ends the command quietly, anything else is
/// an error.
impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure {
                message: String::new(),
                code: exit::OK,
            }
        } else {
            Failure::error(format!("writing output failed: {e}"))
        }
    }
}

pub type Result<T = ()> = std::result::Result<T, Failure>;

fn main() -> ExitCode {
    // The benchmark harness re-runs this executable as its peer process.
    shmbox_bench::peer_main_if_requested();

    let cli = cli::Cli::parse();
    match command::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) if f.is_broken_pipe() => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", printable(&f.message));
            ExitCode::from(f.code)
        }
    }
}

/// `text` with every control character but the line break escaped: names
/// from the command line or a region end up in messages, and must not
/// send escape sequences to the terminal.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' => "\n".to_string(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_escapes_control_characters_but_line_breaks() {
        assert_eq!(
            super::printable("region 'a\u{1b}[31m'\nhint: b\t"),
            "region 'a\\u{1b}[31m'\nhint: b\\t"
        );
    }
}
