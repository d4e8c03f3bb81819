//! Fuzzing `update-operator`'s command line in-process (`operator::cli::parse`,
//! what `main` runs): every flag with arbitrary values, FLUO's single-dash and
//! our double-dash spellings. Nothing panics, and a rejected value is an error
//! naming its flag. `PROPTEST_CASES` raises the number of cases (docs/fuzzing.md).

use clap::CommandFactory;
use operator::cli::{Args, CliError, parse};
use proptest::prelude::*;

/// Every long flag that takes a value (from clap's own definition, so a new
/// flag is fuzzed too), except `--help`/`--version`.
fn flags() -> Vec<String> {
    Args::command()
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !["help", "version"].contains(l))
        .map(str::to_string)
        .collect()
}

/// Values near valid ones for some flag, and garbage.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        2 => prop::sample::select(vec![
            "", " ", "0", "-1", "1", "25%", "0%", "101%", "4294967296", "true", "false", "TRUE",
            "1h30m", "-5m", "0s", "99999999999999999999h", "Mon 14:00", "Funday 10:00", "24:00",
            "Mon-Fri 02:00-05:00", "22:00-02:00;", "Europe/Berlin", "Mars/Olympus", "a=b,c!=d",
            "key in (a,b", "example.com/hook,,x", "http://", "127.0.0.1:8080", ":0", "[::1]:99999",
            "(", "*", "json", "text", "--help", "-", "=",
        ]).prop_map(str::to_string),
        1 => "[ -~]{0,30}",
        1 => (any::<char>(), 0usize..20_000).prop_map(|(c, n)| c.to_string().repeat(n)),
    ]
}

fn render(e: &CliError) -> String {
    match e {
        CliError::Clap(e) => e.to_string(),
        CliError::Flag(e) => e.to_string(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000.max(ProptestConfig::default().cases),
        ..ProptestConfig::default()
    })]

    /// One flag with any value: accepted, or an error naming that flag.
    #[test]
    fn one_flag_any_value(flag in prop::sample::select(flags()), v in value(), go_style in any::<bool>()) {
        let dashes = if go_style { "-" } else { "--" };
        let arg = format!("{dashes}{flag}={v}");
        let args = ["update-operator", "--namespace=reboot-coordinator", arg.as_str()];
        if let Err(e) = parse(args) {
            let msg = render(&e);
            prop_assert!(msg.contains(&format!("--{flag}")), "{arg:?}: {msg}");
        }
    }

    /// Several flags with any values: never a panic, and an error names one of them.
    #[test]
    fn many_flags_any_values(pairs in prop::collection::vec((prop::sample::select(flags()), value()), 1..6)) {
        let mut args = vec!["update-operator".to_string(), "--namespace=reboot-coordinator".to_string()];
        args.extend(pairs.iter().map(|(f, v)| format!("--{f}={v}")));
        if let Err(e) = parse(&args) {
            let msg = render(&e);
            prop_assert!(pairs.iter().any(|(f, _)| msg.contains(&format!("--{f}"))), "{args:?}: {msg}");
        }
    }
}
