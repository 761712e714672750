use std::process::ExitCode;

fn main() -> ExitCode {
    vsr::cli::main()
}
