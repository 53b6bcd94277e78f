//! The `srlm` binary: parse arguments, run the command, map errors to exit codes.
fn main() -> std::process::ExitCode {
    srlm::cli::main()
}
