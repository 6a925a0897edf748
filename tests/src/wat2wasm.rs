//! WebAssembly text to binary, for plugins (docs/plugins.md): reads a `.wat`
//! file (or `-` for standard input) and writes the module to standard output.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: wat2wasm FILE.wat > FILE.wasm   (FILE `-`: standard input)");
        return ExitCode::FAILURE;
    };
    let mut text = String::new();
    let read = if path == "-" {
        std::io::stdin().read_to_string(&mut text).map(drop)
    } else {
        std::fs::read_to_string(&path).map(|t| text = t)
    };
    if let Err(error) = read {
        eprintln!("{path}: {error}");
        return ExitCode::FAILURE;
    }
    match wat::parse_str(&text) {
        Ok(module) => match std::io::stdout().write_all(&module) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("writing the module: {error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("{path}: {error}");
            ExitCode::FAILURE
        }
    }
}
