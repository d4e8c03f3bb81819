//! `kubectl-fluo`: fluoctl as a kubectl plugin (`kubectl fluo status`); the same code.

fn main() -> std::process::ExitCode {
    fluoctl::main_as("kubectl fluo")
}
