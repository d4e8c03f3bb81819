//! `fluoctl`: the command line for people (see the library for the code).

fn main() -> std::process::ExitCode {
    fluoctl::main_as("fluoctl")
}
