use super::settings::parse_duration;
use super::*;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use tracing::Level;

fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
}

#[test]
fn server_defaults() {
    let config = ServerConfig::from_lookup(lookup(&[])).unwrap();
    assert_eq!(config.port, 12345);
    assert_eq!(config.agencies.get(), 5);
    assert_eq!(config.logging_level, Level::INFO);
    assert_eq!(config.bets_file, PathBuf::from("./bets.csv"));
    assert!(config.fsync);
    assert!(config.expects(5) && !config.expects(0) && !config.expects(6));
    assert_eq!((config.max_bets_per_agency, config.min_free_bytes), (10_000_000, 64 << 20));
    let config = ServerConfig::from_lookup(lookup(&[
        ("LOTTERY_MAX_BETS_PER_AGENCY", "250"),
        ("LOTTERY_MIN_FREE_BYTES", "0"),
    ]))
    .unwrap();
    assert_eq!((config.max_bets_per_agency, config.min_free_bytes), (250, 0));
}

#[test]
fn metrics_agency_labels_default_and_bounds() {
    let config = ServerConfig::from_lookup(lookup(&[])).unwrap();
    assert_eq!(config.metrics_agency_labels, 1000);
    for (value, expected) in [("0", 0), ("100000", 100_000)] {
        let config =
            ServerConfig::from_lookup(lookup(&[("METRICS_AGENCY_LABELS", value)])).unwrap();
        assert_eq!(config.metrics_agency_labels, expected);
    }
    for bad in ["100001", "-1", "many"] {
        let e = ServerConfig::from_lookup(lookup(&[("METRICS_AGENCY_LABELS", bad)])).unwrap_err();
        let e = e.to_string();
        assert!(e.contains(&format!("METRICS_AGENCY_LABELS=\"{bad}\"")), "{e}");
        assert!(e.contains("from 0 (no agency label) to 100000"), "{e}");
    }
}

#[test]
fn server_values_and_errors_name_the_variable() {
    let config = ServerConfig::from_lookup(lookup(&[
        ("SERVER_PORT", "0"),
        ("LOGGING_LEVEL", "debug"),
        ("LOTTERY_AGENCIES", "20"),
        ("SERVER_IP", "127.0.0.1"),
    ]))
    .unwrap();
    assert_eq!((config.port, config.agencies.get()), (0, 20));
    assert_eq!(config.logging_level, Level::DEBUG);

    for (var, value) in [
        ("SERVER_PORT", "70000"),
        ("SERVER_PORT", "abc"),
        ("LOTTERY_AGENCIES", "0"),
        ("LOTTERY_AGENCIES", "100001"),
        ("LOGGING_LEVEL", "LOUD"),
        ("SERVER_IP", "no-such-host.invalid"),
        ("LOTTERY_BATCH_MAX_BETS", "0"),
        ("LOTTERY_FSYNC", "maybe"),
        ("LOTTERY_MAX_CONNECTIONS", "0"),
        ("LOTTERY_MAX_CONNECTIONS", "1"),
        ("LOTTERY_MAX_PENDING_HELLOS", "0"),
        ("LOTTERY_MAX_PENDING_HELLOS", "1024"),
        ("LOTTERY_MAX_FRAME_BYTES", "100"),
        ("LOTTERY_HELLO_TIMEOUT", "0s"),
        ("LOTTERY_READ_TIMEOUT", "soon"),
        ("LOTTERY_MAX_BETS_PER_AGENCY", "0"),
        ("LOTTERY_MAX_BETS_PER_AGENCY", "-1"),
        ("LOTTERY_MIN_FREE_BYTES", "64MiB"),
    ] {
        let err = ServerConfig::from_lookup(lookup(&[(var, value)])).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with(&format!("{var}={value:?} is invalid: expected ")), "{text}");
    }
}

#[test]
fn server_ip_takes_an_address_or_a_host_name() {
    let ip = |value: &str| ServerConfig::from_lookup(lookup(&[("SERVER_IP", value)]));
    assert_eq!(ip("10.1.2.3").unwrap().ip, IpAddr::from([10, 1, 2, 3]));
    assert_eq!(ip("::1").unwrap().ip, "::1".parse::<IpAddr>().unwrap());
    // The course's `SERVER_IP = server` is a host name: it is resolved, IPv4 first.
    assert_eq!(ip("localhost").unwrap().ip, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(ip(" localhost ").unwrap().ip, IpAddr::from([127, 0, 0, 1]));
    // `.invalid` never resolves (RFC 2606).
    let text = ip("no-such-host.invalid").unwrap_err().to_string();
    assert!(
        text.starts_with("SERVER_IP=\"no-such-host.invalid\" is invalid: expected an IP address or a host name that resolves"),
        "{text}"
    );
    assert!(text.contains("cannot resolve \"no-such-host.invalid\""), "{text}");
}

#[test]
fn empty_variables_leave_the_file_in_charge() {
    // Compose passes `VAR: ${VAR:-}` as an empty value when `.env` leaves it empty.
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("config.ini");
    std::fs::write(
        &ini,
        "[DEFAULT]\nSERVER_PORT = 4444\nSERVER_IP = localhost\nSERVER_LISTEN_BACKLOG = 8\nLOGGING_LEVEL = DEBUG\n",
    )
    .unwrap();
    let path = ini.display().to_string();
    let env = |name: &str| match name {
        "LOTTERY_CONFIG_FILE" => Some(path.clone()),
        "SERVER_PORT" | "SERVER_IP" | "SERVER_LISTEN_BACKLOG" | "LOGGING_LEVEL" => {
            Some(String::new())
        }
        _ => None,
    };
    let config = ServerConfig::load(["lottery-server"], env).unwrap();
    assert_eq!(config.port, 4444);
    assert_eq!(config.ip, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(config.listen_backlog, 8);
    assert_eq!(config.logging_level, Level::DEBUG);

    let yaml = dir.path().join("config.yaml");
    std::fs::write(
        &yaml,
        "server:\n  address: \"server:12345\"\nloop:\n  amount: 5\n  period: 150ms\nlog:\n  level: DEBUG\nbatch:\n  maxAmount: 10\n",
    )
    .unwrap();
    let path = yaml.display().to_string();
    let env = |name: &str| match name {
        "CLI_CONFIG_FILE" => Some(path.clone()),
        "CLI_ID" => Some("3".to_owned()),
        "CLI_SERVER_ADDRESS"
        | "CLI_BATCH_MAXAMOUNT"
        | "CLI_LOG_LEVEL"
        | "CLI_LOOP_PERIOD"
        | "CLI_LOOP_AMOUNT" => Some(String::new()),
        _ => None,
    };
    let config = ClientConfig::load(["lottery-client"], env).unwrap();
    assert_eq!(config.server_address(), "server:12345");
    assert_eq!(config.batch_max_amount.get(), 10);
    assert_eq!(config.log_level, Level::DEBUG);
    assert_eq!(config.loop_period, Duration::from_millis(150));
    assert_eq!(config.loop_amount, 5);
}

#[test]
fn loop_period_is_a_pause_that_may_be_zero() {
    let period = |value: &str| {
        ClientConfig::from_lookup(lookup(&[("CLI_ID", "1"), ("CLI_LOOP_PERIOD", value)]))
    };
    assert_eq!(period("").unwrap().loop_period, Duration::ZERO, "unset: no pause");
    assert_eq!(period("0").unwrap().loop_period, Duration::ZERO);
    assert_eq!(period("150ms").unwrap().loop_period, Duration::from_millis(150));
    assert_eq!(period("5s").unwrap().loop_period, Duration::from_secs(5));
    let text = period("soon").unwrap_err().to_string();
    assert!(text.starts_with("CLI_LOOP_PERIOD=\"soon\" is invalid: expected a duration"), "{text}");
    let text = ClientConfig::from_lookup(lookup(&[("CLI_ID", "1"), ("CLI_LOOP_AMOUNT", "-1")]))
        .unwrap_err()
        .to_string();
    assert!(text.starts_with("CLI_LOOP_AMOUNT=\"-1\" is invalid"), "{text}");
}

#[test]
fn client_needs_an_id_and_reads_its_file_by_default() {
    let err = ClientConfig::from_lookup(lookup(&[])).unwrap_err();
    assert!(matches!(err, ConfigError::Missing { var: "CLI_ID", .. }));
    let config = ClientConfig::from_lookup(lookup(&[("CLI_ID", "3")])).unwrap();
    assert_eq!(config.server_address(), "server:12345");
    assert_eq!(config.batch_max_amount.get(), 150);
    assert_eq!(config.source, BetSource::File("/data/agency-3.csv".into()));
    assert_eq!(config.connect_timeout, Duration::from_secs(30));
    assert_eq!(config.read_timeout, DEFAULT_CLIENT_READ_TIMEOUT);
    assert_eq!((config.loop_period, config.loop_amount), (Duration::ZERO, 0), "no pacing");
}

#[test]
fn server_address_takes_a_list_of_centrals_in_failover_order() {
    let addresses = |value: &str| {
        ClientConfig::from_lookup(lookup(&[("CLI_ID", "1"), ("CLI_SERVER_ADDRESS", value)]))
            .map(|config| config.server_addresses)
    };
    let list = addresses("central1:12345, central2:12345 ,10.0.0.3:1").unwrap();
    let entries: Vec<&str> = list.iter().collect();
    assert_eq!(entries, ["central1:12345", "central2:12345", "10.0.0.3:1"]);
    assert_eq!((list.len(), list.first()), (3, "central1:12345"));
    assert_eq!(list.to_string(), "central1:12345,central2:12345,10.0.0.3:1", "as logged");
    let single = addresses(" server:1 ").unwrap();
    assert_eq!((single.len(), single.to_string()), (1, "server:1".to_owned()));
    assert_eq!(addresses("[::1]:80,a:1").unwrap().first(), "[::1]:80");
    let config = ClientConfig::from_lookup(lookup(&[("CLI_ID", "1")])).unwrap();
    assert_eq!(config.server_addresses.to_string(), "server:12345", "the default: one");

    // config.yaml's `server.address` takes the list as one value, quoted or not.
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("config.yaml");
    std::fs::write(&yaml, "id: 2\nserver:\n  address: central1:12345, central2:12345\n").unwrap();
    let path = yaml.display().to_string();
    let env = |name: &str| (name == "CLI_CONFIG_FILE").then(|| path.clone());
    let config = ClientConfig::load(["lottery-client"], env).unwrap();
    assert_eq!(config.server_addresses.to_string(), "central1:12345,central2:12345");
}

#[test]
fn a_bad_address_list_names_the_entry_at_fault() {
    let error = |value: &str| {
        ClientConfig::from_lookup(lookup(&[("CLI_ID", "1"), ("CLI_SERVER_ADDRESS", value)]))
            .unwrap_err()
            .to_string()
    };
    let list = "expected host:port, such as server:12345, or several separated by commas;";
    for (value, fault) in [
        ("a:1,,b:2", "entry 2 is empty"),
        ("a:1,b:2,", "entry 3 is empty"),
        (",a:1", "entry 1 is empty"),
        ("a:1,b", r#"entry "b" is not host:port"#),
        ("a:1, b:port", r#"entry "b:port" is not host:port"#),
        ("a:1,:2", r#"entry ":2" is not host:port"#),
        ("a:1,b:+2", r#"entry "b:+2" is not host:port"#),
        ("a:1,a:1", r#"entry "a:1" is listed twice"#),
        ("A:1, b:2, a:01", r#"entry "a:01" is listed twice"#),
    ] {
        let text = error(value);
        let whole = format!("CLI_SERVER_ADDRESS={value:?} is invalid: {list} {fault}");
        assert_eq!(text, whole);
    }
    // One address keeps the error it always had.
    let text = error("server");
    assert_eq!(
        text,
        r#"CLI_SERVER_ADDRESS="server" is invalid: expected host:port, such as server:12345"#
    );
}

#[test]
fn client_errors_name_the_variable() {
    for (var, value) in [
        ("CLI_ID", "0"),
        ("CLI_SERVER_ADDRESS", "server"),
        ("CLI_SERVER_ADDRESS", "server:port"),
        ("CLI_BATCH_MAXAMOUNT", "0"),
        ("CLI_LOG_LEVEL", "x"),
        ("CLI_CONNECT_TIMEOUT", "soon"),
        ("CLI_READ_TIMEOUT", "0s"),
        ("CLI_ID", "+1"),
        ("CLI_SERVER_ADDRESS", "server:+80"),
        ("CLI_BATCH_MAXAMOUNT", "+5"),
        ("CLI_BATCH_WINDOW", "+2"),
    ] {
        let vars = [("CLI_ID", "1"), (var, value)];
        let vars = if var == "CLI_ID" { &vars[1..] } else { &vars[..] };
        let err = ClientConfig::from_lookup(lookup(vars)).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with(&format!("{var}={value:?} is invalid")), "{text}");
    }
}

#[test]
fn client_read_timeout_has_a_flag_a_variable_and_a_yaml_key() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("agency.yaml");
    std::fs::write(&yaml, "id: 1\nread:\n  timeout: 4s\n").unwrap();
    let file = yaml.display().to_string();
    let env = |name: &str| (name == "CLI_CONFIG_FILE").then(|| file.clone());
    let config = ClientConfig::load(["lottery-client"], env).unwrap();
    assert_eq!(config.read_timeout, Duration::from_secs(4), "file");
    let env = |name: &str| match name {
        "CLI_CONFIG_FILE" => Some(file.clone()),
        "CLI_READ_TIMEOUT" => Some("2500ms".to_owned()),
        _ => None,
    };
    let config = ClientConfig::load(["lottery-client"], env).unwrap();
    assert_eq!(config.read_timeout, Duration::from_millis(2500), "environment");
    let config = ClientConfig::load(["lottery-client", "--read-timeout", "1s"], env).unwrap();
    assert_eq!(config.read_timeout, Duration::from_secs(1), "flag");
}

#[test]
fn single_bet_mode_needs_all_five_variables() {
    let full = [
        ("CLI_ID", "2"),
        ("NOMBRE", "Ana María"),
        ("APELLIDO", "Núñez"),
        ("DOCUMENTO", "30904465"),
        ("NACIMIENTO", "1999-03-17"),
        ("NUMERO", "7574"),
    ];
    let config = ClientConfig::from_lookup(lookup(&full)).unwrap();
    let BetSource::Single(bet) = config.source else { panic!("single bet mode") };
    assert_eq!((bet.agency.get(), bet.number.get()), (2, 7574));

    let err = ClientConfig::from_lookup(lookup(&full[..5])).unwrap_err();
    assert!(matches!(err, ConfigError::Missing { var: "NUMERO", .. }), "{err}");
    let mut bad = full;
    bad[5] = ("NUMERO", "10000");
    let err = ClientConfig::from_lookup(lookup(&bad)).unwrap_err();
    assert!(err.to_string().starts_with("NUMERO=\"10000\" is invalid"), "{err}");
}

#[test]
fn agency_tokens() {
    let text = "# agency:token\n1:s3cret\n\n 2 : other-token \n";
    let tokens = AgencyTokens::parse(text, 5).unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(tokens.check(1, Some("s3cret")));
    assert!(tokens.check(2, Some("other-token")));
    assert!(!tokens.check(1, Some("other-token")), "another agency's token");
    assert!(!tokens.check(1, Some("s3cre")));
    assert!(!tokens.check(1, None));
    assert!(!tokens.check(3, Some("s3cret")), "no line, no valid token");
    assert!(!format!("{tokens:?}").contains("s3cret"), "never printed");
    for (text, line, reason) in [
        ("1:a\n1:b\n", 2, "twice"),
        ("1:a\nx\n", 2, "agency:token"),
        ("9:a\n", 1, "not in 1..=5"),
        ("1: \n", 1, "empty"),
        ("1:a b\n", 1, "spaces"),
    ] {
        let (at, why) = AgencyTokens::parse(text, 5).unwrap_err();
        assert_eq!(at, line, "{text:?}");
        assert!(why.contains(reason), "{why}");
    }
    let err = ServerConfig::from_lookup(lookup(&[("LOTTERY_AGENCY_TOKENS_FILE", "/nonexistent")]))
        .unwrap_err();
    assert!(
        err.to_string().starts_with("LOTTERY_AGENCY_TOKENS_FILE: cannot read /nonexistent"),
        "{err}"
    );
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("central.ini");
    std::fs::write(
        &ini,
        "[DEFAULT]\nSERVER_PORT = 1111\nSERVER_LISTEN_BACKLOG = 7\nlogging_level = DEBUG\n",
    )
    .unwrap();
    let env_vars = [
        ("LOTTERY_CONFIG_FILE", ini.display().to_string()),
        ("SERVER_PORT", "2222".to_owned()),
        ("LOGGING_LEVEL", "WARN".to_owned()),
    ];
    let env = |name: &str| env_vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    let config = ServerConfig::load(["lottery-server", "--port", "3333"], env).unwrap();
    assert_eq!(config.port, 3333, "flag");
    assert_eq!(config.logging_level, Level::WARN, "environment over file");
    assert_eq!(config.listen_backlog, 7, "file over default");
    assert_eq!(config.agencies.get(), 5, "default");
    let config = ServerConfig::load(["lottery-server"], env).unwrap();
    assert_eq!(config.port, 2222, "environment over file");

    let yaml = dir.path().join("agency.yaml");
    std::fs::write(
        &yaml,
        "id: 4\nserver:\n  address: \"file:1\"\nbatch:\n  maxAmount: 50\nloop:\n  amount: 5\n",
    )
    .unwrap();
    let env_vars =
        [("CLI_CONFIG_FILE", yaml.display().to_string()), ("CLI_BATCH_MAXAMOUNT", "60".to_owned())];
    let env = |name: &str| env_vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    let config =
        ClientConfig::load(["lottery-client", "--server-address", "flag:2", "--check"], env)
            .unwrap();
    assert_eq!(config.id.get(), 4, "file");
    assert_eq!(config.server_address(), "flag:2", "flag");
    assert_eq!(config.batch_max_amount.get(), 60, "environment");
    assert_eq!(config.batch_window.get(), 8, "default");
    assert!(config.check);
}

#[test]
fn a_malformed_or_unknown_file_setting_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("bad.ini");
    std::fs::write(&ini, "[DEFAULT]\nSERVER_PORT = 1\nthis is not a setting\n").unwrap();
    let path = ini.display().to_string();
    let env = |name: &str| (name == "LOTTERY_CONFIG_FILE").then(|| path.clone());
    let err = ServerConfig::load(["lottery-server"], env).unwrap_err().to_string();
    assert!(err.contains("bad.ini, line 3: expected key = value"), "{err}");

    std::fs::write(&ini, "[DEFAULT]\nSERVER_PORT = 1\nSERVER_PROT = 2\n").unwrap();
    let err = ServerConfig::load(["lottery-server"], env).unwrap_err().to_string();
    assert!(err.contains("line 3: unknown key \"SERVER_PROT\""), "{err}");

    std::fs::write(&ini, "[DEFAULT]\nSERVER_PORT = 1\n; again\nserver_port = 2\n").unwrap();
    let err = ServerConfig::load(["lottery-server"], env).unwrap_err().to_string();
    assert!(
        err.contains("bad.ini, line 4: duplicate key \"server_port\": already set on line 2"),
        "{err}"
    );

    std::fs::write(&ini, "[DEFAULT]\nSERVER_PORT = lots\n").unwrap();
    let err = ServerConfig::load(["lottery-server"], env).unwrap_err().to_string();
    assert!(
        err.starts_with("SERVER_PORT=\"lots\" is invalid"),
        "a bad value names its setting: {err}"
    );

    let err = ServerConfig::load(["lottery-server", "--config", "/nonexistent.ini"], |_| None);
    assert!(matches!(err, Err(ConfigError::Unreadable { .. })), "{err:?}");
}

#[test]
fn help_and_version_are_usage_with_exit_code_zero() {
    let Err(ConfigError::Usage { message, exit_code: 0 }) =
        ServerConfig::load(["lottery-server", "--help"], |_| None)
    else {
        panic!("--help")
    };
    for option in SERVER_OPTIONS {
        assert!(message.contains(&format!("--{}", option.flag)), "{}", option.flag);
        assert!(message.contains(&format!("[env: {}]", option.env)), "{}", option.env);
    }
    let Err(ConfigError::Usage { message, exit_code: 0 }) =
        ClientConfig::load(["lottery-client", "--version"], |_| None)
    else {
        panic!("--version")
    };
    assert!(message.contains(env!("CARGO_PKG_VERSION")));
    let Err(ConfigError::Usage { exit_code: 2, .. }) =
        ClientConfig::load(["lottery-client", "--nope"], |_| None)
    else {
        panic!("a bad flag")
    };
}

/// `--help` of `program`, as `load` returns it.
fn help_of(program: &str) -> String {
    let loaded = if program == "lottery-server" {
        ServerConfig::load([program, "--help"], |_| None).map(drop)
    } else {
        ClientConfig::load([program, "--help"], |_| None).map(drop)
    };
    let Err(ConfigError::Usage { message, exit_code: 0 }) = loaded else {
        panic!("{program} --help")
    };
    message
}

#[test]
fn help_names_each_value_groups_settings_under_headings_and_fits_80_columns() {
    for (program, options) in
        [("lottery-server", SERVER_OPTIONS), ("lottery-client", CLIENT_OPTIONS)]
    {
        let help = help_of(program);
        for line in help.lines() {
            assert!(line.chars().count() <= 80, "{program}: {line:?} is wider than 80 columns");
        }
        assert!(!help.contains("<VALUE>"), "{help}");
        for option in options {
            assert!(super::options::HEADINGS.contains(&option.heading), "{}", option.flag);
            assert!(!option.value.is_empty(), "--{} names its value", option.flag);
            assert!(help.contains(&format!("--{} <{}>", option.flag, option.value)), "{help}");
            assert!(help.contains(&format!("\n{}:\n", option.heading)), "{help}");
        }
    }
    let help = help_of("lottery-server");
    for value in ["<PORT>", "<DURATION>", "<PATH>"] {
        assert!(help.contains(value), "{value} in {help}");
    }
    assert!(help.contains("\nCommands:\n  export "), "{help}");
    let usages = [
        "export [--agency <K>] <OUTPUT> [OPTIONS]",
        "verify [BETS_FILE] [OPTIONS]",
        "healthcheck [OPTIONS]",
    ];
    for usage in usages {
        assert!(help.contains(&format!("lottery-server {usage}\n")), "{usage} in {help}");
    }
    assert!(help_of("lottery-client").contains("--check "));
}

/// The binary runs a subcommand only as the first argument; after a setting it is refused, not
/// ignored (which would start the central).
#[test]
fn a_subcommand_after_a_setting_is_a_usage_error() {
    let err = ServerConfig::load(["lottery-server", "--port", "1", "healthcheck"], |_| None);
    let Err(ConfigError::Usage { message, exit_code: 2 }) = err else { panic!("{err:?}") };
    assert!(message.contains("healthcheck must be the first argument"), "{message}");
    let err = ServerConfig::load(["lottery-server", "exprot"], |_| None);
    let Err(ConfigError::Usage { message, exit_code: 2 }) = err else { panic!("{err:?}") };
    assert!(message.contains("'export'"), "a typo is answered with the subcommand: {message}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("2h"), None);
    assert_eq!(parse_duration("s"), None);
}

#[test]
fn the_batch_window_is_at_most_what_the_central_reads_ahead() {
    use crate::protocol::MAX_BATCHES_IN_FLIGHT;
    let most = MAX_BATCHES_IN_FLIGHT.to_string();
    let config = ClientConfig::from_lookup(lookup(&[("CLI_ID", "1"), ("CLI_BATCH_WINDOW", &most)]));
    assert_eq!(config.unwrap().batch_window.get(), MAX_BATCHES_IN_FLIGHT);
    let over = (MAX_BATCHES_IN_FLIGHT + 1).to_string();
    let err = ClientConfig::from_lookup(lookup(&[("CLI_ID", "1"), ("CLI_BATCH_WINDOW", &over)]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("CLI_BATCH_WINDOW=\"{over}\" is invalid: expected a whole number from 1 to {most}")
    );
}

/// The library's own defaults (for callers without a configuration) are the table's.
#[test]
fn default_constants_are_the_tables() {
    let server = ServerConfig::from_lookup(lookup(&[])).unwrap();
    let store = crate::storage::StoreOptions::default();
    assert_eq!(server.max_bets_per_agency, store.max_bets_per_agency);
    assert_eq!(server.min_free_bytes, store.min_free_bytes);
    assert_eq!(server.fsync, store.sync);
    let client = ClientConfig::from_lookup(lookup(&[("CLI_ID", "1")])).unwrap();
    assert_eq!(client.read_timeout, DEFAULT_CLIENT_READ_TIMEOUT);
}

/// Every default the table gives as a value is one its setting accepts.
#[test]
fn every_literal_default_parses() {
    for option in SERVER_OPTIONS.iter().chain(CLIENT_OPTIONS).filter(|o| o.literal) {
        let set = [("CLI_ID", "1"), (option.env, option.default)];
        let unset = [("CLI_ID", "1")];
        if SERVER_OPTIONS.iter().any(|o| o.env == option.env) {
            let explicit = ServerConfig::from_lookup(lookup(&set)).unwrap();
            assert_eq!(
                explicit,
                ServerConfig::from_lookup(lookup(&unset)).unwrap(),
                "{}",
                option.env
            );
        } else {
            let explicit = ClientConfig::from_lookup(lookup(&set)).unwrap();
            assert_eq!(
                explicit,
                ClientConfig::from_lookup(lookup(&unset)).unwrap(),
                "{}",
                option.env
            );
        }
    }
}

/// Every form of connection string the driver accepts with a password in it: the password
/// (`hunter2 swordfish`, or `hunter2`) appears neither in the URL's `Display`/`Debug` (the
/// `action: database` line, every database error) nor in a configuration error.
#[test]
fn the_database_password_never_shows_in_any_form_the_driver_accepts() {
    let valid = [
        ("host=db user=u password = hunter2 dbname=x", "hunter2"),
        ("host=db password='hunter2 swordfish' dbname=x", "hunter2 swordfish"),
        ("host=db password='hunter2 \\'swordfish' dbname=x", "hunter2 'swordfish"),
        ("host=db password=hunter2\\ swordfish dbname=x", "hunter2 swordfish"),
        ("host=db\tpassword=hunter2\tdbname=x", "hunter2"),
        ("postgresql://u:hunter2@db/x", "hunter2"),
        ("postgresql://u@db/x?pass%77ord=hunter2&connect_timeout=5", "hunter2"),
        ("postgres://u@db/x?password=hunter2%20swordfish", "hunter2 swordfish"),
    ];
    for (url, password) in valid {
        let parsed: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(password.as_bytes()), "{url}");
        let config = ServerConfig::from_lookup(lookup(&[("LOTTERY_DATABASE_URL", url)])).unwrap();
        let url_shown = config.database_url.unwrap();
        for shown in [url_shown.to_string(), format!("{url_shown:?}")] {
            for word in ["hunter2", "swordfish", "%20"] {
                assert!(!shown.contains(word), "{url} shows {shown}");
            }
            assert!(shown.contains("***"), "{url} shows {shown}");
        }
    }
    let invalid = [
        "host=db password=hunter2 swordfish dbname",
        "host=db password=hunter2 fi sh=x",
        "host=db password='hunter2 swordfish",
        "host=db password=hunter2 mack=erel",
    ];
    for url in invalid {
        assert!(url.parse::<tokio_postgres::Config>().is_err(), "{url}");
        let error =
            ServerConfig::from_lookup(lookup(&[("LOTTERY_DATABASE_URL", url)])).unwrap_err();
        let shown = error.to_string();
        for word in ["hunter2", "swordfish", "fish", "mack", "erel", "`f`", "`s`"] {
            assert!(!shown.contains(word), "{url} shows {shown}");
        }
        assert!(shown.contains("LOTTERY_DATABASE_URL"), "{shown}");
    }
}

#[test]
fn a_rejected_value_is_echoed_once_cut_to_a_readable_length() {
    // 50 MB of digits: one 100 MB log line before.
    let huge = "7".repeat(50_000_000);
    let long_host = format!("{}.invalid", "h".repeat(1_000_000));
    let long_list = format!("a:1,{}", "b".repeat(1_000_000));
    for (var, value) in [
        ("LOTTERY_AGENCIES", huge.as_str()),
        ("SERVER_PORT", huge.as_str()),
        ("SERVER_IP", long_host.as_str()),
    ] {
        let err = ServerConfig::from_lookup(lookup(&[(var, value)])).unwrap_err().to_string();
        assert!(err.len() < 2 * MAX_ECHO_BYTES + 400, "{var}: {} bytes", err.len());
        assert!(err.starts_with(&format!("{var}=\"{}", &value[..10])), "{err}");
        let cut = value.len() - MAX_ECHO_BYTES;
        assert!(err.contains(&format!("… ({cut} more bytes cut)")), "{var}: {err}");
    }
    let vars = [("CLI_ID", "1"), ("CLI_SERVER_ADDRESS", long_list.as_str())];
    let err = ClientConfig::from_lookup(lookup(&vars)).unwrap_err().to_string();
    assert!(err.len() < 3 * MAX_ECHO_BYTES + 400, "{} bytes: {}", err.len(), &err[..400]);
    // Short values are shown whole, as before.
    let err = ServerConfig::from_lookup(lookup(&[("SERVER_PORT", "abc")])).unwrap_err();
    assert!(err.to_string().starts_with("SERVER_PORT=\"abc\" is invalid"), "{err}");
}

#[test]
fn the_database_url_comes_from_the_variable_or_a_file_never_both() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("database-url");
    std::fs::write(&file, "postgresql://lottery:hunter2@db:5432/lottery?sslmode=verify-full\n")
        .unwrap();
    let path = file.to_str().unwrap();
    let config = ServerConfig::from_lookup(lookup(&[("LOTTERY_DATABASE_URL_FILE", path)])).unwrap();
    let url = config.database_url.unwrap();
    assert_eq!(url.expose(), "postgresql://lottery:hunter2@db:5432/lottery?sslmode=verify-full");
    assert_eq!(url.split_tls().unwrap().1.mode, crate::config::SslMode::VerifyFull);
    let both = [("LOTTERY_DATABASE_URL", "host=db"), ("LOTTERY_DATABASE_URL_FILE", path)];
    let e = ServerConfig::from_lookup(lookup(&both)).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "LOTTERY_DATABASE_URL_FILE={path:?} is invalid: expected LOTTERY_DATABASE_URL unset"
        )),
        "{e}"
    );
    // What the file holds is checked as the variable is, and named by the file's variable.
    std::fs::write(&file, "postgresql://lottery:hunter2@db/x?sslmode=verify").unwrap();
    let e = ServerConfig::from_lookup(lookup(&[("LOTTERY_DATABASE_URL_FILE", path)]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "LOTTERY_DATABASE_URL_FILE={path:?} is invalid: expected a file holding a PostgreSQL"
        )),
        "{e}"
    );
    assert!(e.contains("(sslmode=\"verify\" is invalid: expected disable, prefer"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    let e = ServerConfig::from_lookup(lookup(&[("LOTTERY_DATABASE_URL_FILE", missing)]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&format!("LOTTERY_DATABASE_URL_FILE: cannot read {missing}:")), "{e}");
    // The TLS parameters the driver does not know pass in the variable too.
    let url = "host=db sslmode=verify-ca sslrootcert=/etc/ssl/db.pem";
    let config = ServerConfig::from_lookup(lookup(&[("LOTTERY_DATABASE_URL", url)])).unwrap();
    assert_eq!(config.database_url.unwrap().expose(), url);
}

#[test]
fn http_addr_takes_over_from_its_older_name_metrics_addr() {
    let config = ServerConfig::from_lookup(lookup(&[])).unwrap();
    assert_eq!((config.http_addr, config.deprecated.len()), (None, 0));
    let config = ServerConfig::from_lookup(lookup(&[("HTTP_ADDR", "127.0.0.1:8080")])).unwrap();
    assert_eq!(config.http_addr, Some("127.0.0.1:8080".parse().unwrap()));
    assert!(config.deprecated.is_empty());
    // The older name still works, and is reported for the binary's warning.
    let config = ServerConfig::from_lookup(lookup(&[("METRICS_ADDR", "0.0.0.0:9100")])).unwrap();
    assert_eq!(config.http_addr, Some("0.0.0.0:9100".parse().unwrap()));
    assert_eq!(config.deprecated, [("METRICS_ADDR", "HTTP_ADDR")]);
    // Both: the current name wins, the older one is still reported.
    let both = [("METRICS_ADDR", "0.0.0.0:9100"), ("HTTP_ADDR", "127.0.0.1:0")];
    let config = ServerConfig::from_lookup(lookup(&both)).unwrap();
    assert_eq!(config.http_addr, Some("127.0.0.1:0".parse().unwrap()));
    assert_eq!(config.deprecated.len(), 1);
    // A bad value names the variable it came from.
    let error = ServerConfig::from_lookup(lookup(&[("METRICS_ADDR", "9100")])).unwrap_err();
    assert!(error.to_string().contains("METRICS_ADDR"), "{error}");
    let error = ServerConfig::from_lookup(lookup(&[("HTTP_ADDR", "nowhere")])).unwrap_err();
    assert!(error.to_string().contains("HTTP_ADDR"), "{error}");
}
