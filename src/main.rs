//! The `lintel` binary: see `lintel --help`.

/// mimalloc: many small, short-lived allocations per request (JSON documents, rows).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lintel::cli::main()
}
