//! `lightvm`: the command line. Commands only parse, validate and call the library
//! crates; no VM logic lives here.

mod cli;
mod commands;
mod exit_code;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() {
                exit_code::LIGHTVM_ERROR
            } else {
                0
            };
            // Printing help or a usage error to the terminal; nothing to do if that fails.
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    match commands::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("lightvm: {}", one_line(&error));
            ExitCode::from(exit_code::LIGHTVM_ERROR)
        }
    }
}

/// The error and its causes on one line, each cause once: library errors already
/// quote their source in their message, so a cause whose text is already there is
/// not repeated.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_already_quoted_are_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let quoted = anyhow::Error::new(io).context("cannot read image x: entity not found");
        assert_eq!(one_line(&quoted), "cannot read image x: entity not found");
        let nested = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&nested), "outer: inner");
    }
}
