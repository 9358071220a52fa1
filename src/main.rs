//! The `lintel` binary: see `lintel --help`.
fn main() -> std::process::ExitCode {
    lintel::cli::main()
}
