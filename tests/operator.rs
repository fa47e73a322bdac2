//! What an operator sees and touches: --help/--version, --check, configuration files, progress
//! lines, the draw's summary, and the metrics endpoint.

mod common;

use common::{AgencyData, CLIENT_BIN, Process, SERVER_BIN, assert_grader_line, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn help_and_version_describe_every_setting() {
    let (code, lines) = Process::start_with_args(SERVER_BIN, &[], ["--help"]).finish().await;
    assert_eq!(code, Some(0));
    let help = lines.join("\n");
    for setting in lottery::config::SERVER_OPTIONS {
        assert!(help.contains(&format!("--{}", setting.flag)), "{help}");
        assert!(help.contains(&format!("[env: {}]", setting.env)), "{help}");
    }
    assert!(
        help.contains("Precedence: flag > environment variable > configuration file > default")
    );
    for command in ["export [--agency <K>] <OUTPUT>", "verify [BETS_FILE]", "healthcheck"] {
        assert!(help.contains(command), "{command} in {help}");
    }
    let (code, client_lines) = Process::start_with_args(CLIENT_BIN, &[], ["--help"]).finish().await;
    assert_eq!(code, Some(0));
    for line in lines.iter().chain(&client_lines) {
        assert!(line.chars().count() <= 80, "{line:?} is wider than 80 columns");
    }
    let (code, lines) = Process::start_with_args(CLIENT_BIN, &[], ["--version"]).finish().await;
    assert_eq!(code, Some(0));
    assert_eq!(lines, [format!("lottery-client {}", env!("CARGO_PKG_VERSION"))]);
    let (code, _) = Process::start_with_args(CLIENT_BIN, &[], ["--no-such-flag"]).finish().await;
    assert_eq!(code, Some(2));
}

#[tokio::test]
async fn check_reports_the_bad_rows_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agency-3.csv");
    std::fs::write(
        &path,
        "Ana,Paz,1,2000-01-01,1\nAna,Paz,x,2000-01-01,2\nAna,Paz,3,2000-01-01,3\n,Paz,4,2000-01-01,4\nAna,Paz\n",
    )
    .unwrap();
    let env = [("CLI_ID", "3".to_owned())];
    let args = ["--check", "--data-file", path.to_str().unwrap()];
    let (code, lines) = Process::start_with_args(CLIENT_BIN, &env, args).finish().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    let bad: Vec<&String> =
        lines.iter().filter(|l| l.contains("action: check | result: fail")).collect();
    assert!(bad[0].contains("| line: 2 | error: invalid document \"x\""), "{bad:#?}");
    assert!(bad[1].contains("| line: 4 | error: invalid first_name \"\""), "{bad:#?}");
    assert!(bad[2].contains("| line: 5 | error: invalid row \"2 fields\""), "{bad:#?}");
    assert!(bad[3].ends_with("| rows: 5 | bad_rows: 3 | shown: 3"), "{bad:#?}");
    lines.iter().filter(|l| l.contains("action: ")).for_each(|l| assert_grader_line(l));

    let good = AgencyData::generate(dir.path(), 3, 500);
    let args = ["--check", "--data-file", good.path.to_str().unwrap()];
    let (code, lines) = Process::start_with_args(CLIENT_BIN, &env, args).finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let ok = format!("action: check | result: success | file: {} | rows: 500", good.path.display());
    assert!(lines.iter().any(|l| l.ends_with(&ok)), "{lines:#?}");
}

#[tokio::test]
async fn config_files_progress_summary_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("config.ini");
    let bets_file = dir.path().join("bets.csv");
    std::fs::write(
        &ini,
        format!(
            "[DEFAULT]\nSERVER_IP = 127.0.0.1\nSERVER_PORT = 0\nLOTTERY_AGENCIES = 2\nBETS_FILE = {}\nHTTP_ADDR = 127.0.0.1:0\n",
            bets_file.display()
        ),
    )
    .unwrap();
    let mut server = Process::start_with_args(SERVER_BIN, &[], ["--config", ini.to_str().unwrap()]);
    let line = server.wait_for_line("action: listen | result: success").await;
    let address = line.rsplit("address: ").next().unwrap().trim().to_owned();
    let line = server.wait_for_line("action: metrics | result: success").await;
    let metrics_address =
        line.split(" | ").find_map(|f| f.strip_prefix("address: ")).unwrap().to_owned();

    let data: Vec<AgencyData> =
        (1..=2).map(|a| AgencyData::generate(dir.path(), a, 3000)).collect();
    let mut clients = Vec::new();
    for agency in &data {
        // The original exercise's config.yaml layout, with the address and id in it (no
        // pacing: loop.period is honoured, see tests/course_workflow.rs).
        let yaml = dir.path().join(format!("agency-{}.yaml", agency.agency));
        std::fs::write(
            &yaml,
            format!(
                "id: {}\nserver:\n  address: \"{address}\"\nloop:\n  amount: 5\n  period: 0\nbatch:\n  maxAmount: 100\nlog:\n  level: info\n",
                agency.agency
            ),
        )
        .unwrap();
        let env = [("CLI_CONFIG_FILE", yaml.display().to_string())];
        let args = ["--data-file", agency.path.to_str().unwrap()];
        clients.push(Process::start_with_args(CLIENT_BIN, &env, args));
    }
    for (client, agency) in clients.into_iter().zip(&data) {
        let (code, lines) = client.finish().await;
        assert_eq!(code, Some(0), "{lines:#?}");
        let progress: Vec<(u64, u64, u64)> = lines
            .iter()
            .filter(|l| l.contains("action: upload | result: in_progress"))
            .map(|l| {
                assert_grader_line(l);
                let field = |name: &str| -> u64 {
                    l.split(" | ")
                        .find_map(|f| f.strip_prefix(&format!("{name}: ")))
                        .unwrap()
                        .parse()
                        .unwrap()
                };
                (field("sent"), field("acked"), field("total"))
            })
            .collect();
        assert!(progress.len() >= 10, "a line per tenth at least: {progress:?}");
        for (sent, acked, total) in &progress {
            assert!(acked <= sent && sent <= total && *total == 3000, "{progress:?}");
        }
        assert_eq!(progress.last().unwrap().1, 3000);
        let winners = format!("cant_ganadores: {}", agency.winners().len());
        assert!(lines.iter().any(|l| l.ends_with(&winners)), "{lines:#?}");
    }
    let summary = server.wait_for_line("action: resumen_total | result: success").await;
    assert!(summary.contains("| agencias: 2 | apuestas: 6000 | lotes: 60 |"), "{summary}");
    let one = server.wait_for_line("action: resumen | result: success | agency: 1").await;
    let expected = format!("| apuestas: 3000 | lotes: 30 | ganadores: {}", data[0].winners().len());
    assert!(one.ends_with(&expected), "{one}");

    let mut stream = tokio::net::TcpStream::connect(&metrics_address).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut response = String::new();
    within("metrics", stream.read_to_string(&mut response)).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    for expected in [
        "lottery_bets_stored_total{agency=\"1\"} 3000",
        "lottery_bets_stored_total{agency=\"2\"} 3000",
        "lottery_batches_total{agency=\"2\",result=\"stored\"} 30",
        "lottery_agencies_ready 2",
        "lottery_draw_done 1",
        "lottery_batch_ack_seconds_count 60",
        "lottery_commit_seconds_bucket",
    ] {
        assert!(response.contains(expected), "{expected} in {response}");
    }
    server.signal("TERM");
    assert_eq!(server.finish().await.0, Some(0));
}

#[test]
fn the_operations_doc_documents_every_setting() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let options = lottery::config::SERVER_OPTIONS.iter().chain(lottery::config::CLIENT_OPTIONS);
    for setting in options {
        assert!(doc.contains(&format!("`--{}`", setting.flag)), "--{}", setting.flag);
        assert!(doc.contains(&format!("`{}`", setting.env)), "{}", setting.env);
        if let Some(key) = setting.file_key {
            assert!(doc.contains(&format!("`{key}`")), "{key}");
        }
    }
}
