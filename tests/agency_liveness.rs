//! An agency never hangs and never gives up on a live central: every wait on the central has a
//! deadline (`CLI_READ_TIMEOUT`), a broken or stalled connection is resumed, and waiting for the
//! draw survives central restarts. Fake centrals in this file stand for the hostile or broken
//! ones (accepts and never answers, welcomes and never acknowledges, never reads, drops SYNs,
//! frozen); the restart case uses the real `lottery-server`.

mod common;

use std::time::Duration;

use common::proxy::Proxy;
use common::{AgencyData, CLIENT_BIN, Process, line_with, start_server_with, within};
use futures::{SinkExt, StreamExt};
use lottery::client::{self, ClientError};
use lottery::protocol::{ClientMessage, ErrorCode, PROTOCOL_VERSION, ServerCodec, ServerMessage};
use lottery::{AgencyId, Connection};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// The agency's settings for a fake central at `address`: short deadlines, so each case takes
/// seconds. What the cases assert does not depend on them: the fakes never answer at all.
fn agency_env(address: &str, data: &AgencyData) -> Vec<(&'static str, String)> {
    vec![
        ("CLI_ID", data.agency.to_string()),
        ("CLI_SERVER_ADDRESS", address.to_owned()),
        ("CLI_DATA_FILE", data.path.display().to_string()),
        ("CLI_CONNECT_TIMEOUT", "2s".to_owned()),
        ("CLI_READ_TIMEOUT", "300ms".to_owned()),
        ("CLI_BATCH_MAXAMOUNT", "50".to_owned()),
    ]
}

/// A listener on 127.0.0.1:0 that hands every accepted connection to `serve` (in its own task)
/// and reports each one's number (1, 2, …) on the returned channel as it is accepted.
async fn fake_central<F, Fut>(serve: F) -> (String, mpsc::UnboundedReceiver<usize>)
where
    F: Fn(usize, Framed<TcpStream, ServerCodec>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (accepted, connections) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut count = 0;
        while let Ok((stream, _)) = listener.accept().await {
            // As the real central does. Nagle's algorithm would hold a small reply until the
            // agency's kernel acknowledges the one before, on a timer of its own: on paused time
            // the agency's deadline would pass first.
            stream.set_nodelay(true).unwrap();
            count += 1;
            let _ = accepted.send(count);
            tokio::spawn(serve(count, Framed::new(stream, ServerCodec::new())));
        }
    });
    (address, connections)
}

/// Reads the agency's `Hello` and answers `Welcome` for a fresh agency.
async fn welcome(frames: &mut Framed<TcpStream, ServerCodec>, next_seq: u64, stored_bets: u64) {
    let hello = frames.next().await;
    assert!(matches!(hello, Some(Ok(ClientMessage::Hello { .. }))), "{hello:?}");
    let welcome = ServerMessage::Welcome { version: PROTOCOL_VERSION, next_seq, stored_bets };
    frames.send(welcome).await.unwrap();
}

/// Holds a connection open, never reading from it (the fake's task lives as long as the test).
async fn hold(frames: Framed<TcpStream, ServerCodec>) {
    let _open = frames;
    std::future::pending::<()>().await;
}

/// The agency's last failure line, checked against the graders' shape.
fn failure(lines: &[String]) -> &str {
    let line = lines.iter().rev().find(|l| l.contains("result: fail")).expect("a failure line");
    common::assert_grader_line(line);
    line
}

#[tokio::test]
async fn a_central_that_accepts_and_never_answers_is_retried_then_given_up_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = AgencyData::generate(dir.path(), 1, 120);
    let (address, mut connections) = fake_central(|_, frames| hold(frames)).await;
    let agency = Process::start(CLIENT_BIN, &agency_env(&address, &data));

    assert_eq!(within("first connection", connections.recv()).await, Some(1));
    assert_eq!(within("the agency reconnects", connections.recv()).await, Some(2));
    let (code, lines) = agency.finish().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    let retry = line_with(&lines, "action: connect | result: in_progress");
    assert!(retry.contains("the central did not answer Hello within 300"), "{retry}");
    let failure = failure(&lines);
    assert!(failure.contains("action: connect | result: fail"), "{failure}");
    assert!(failure.contains("cannot reach the central"), "{failure}");
    assert!(failure.contains("did not answer Hello"), "{failure}");
}

#[tokio::test]
async fn a_central_that_welcomes_and_never_acknowledges_is_left_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let data = AgencyData::generate(dir.path(), 1, 120);
    let (batches_tx, mut batches) = mpsc::unbounded_channel();
    let (address, mut connections) = fake_central(move |connection, mut frames| {
        let batches = batches_tx.clone();
        async move {
            welcome(&mut frames, 1, 0).await;
            // Reads everything, acknowledges nothing.
            while let Some(Ok(message)) = frames.next().await {
                if let ClientMessage::Batch { seq, .. } = message {
                    let _ = batches.send((connection, seq));
                }
            }
        }
    })
    .await;
    let agency = Process::start(CLIENT_BIN, &agency_env(&address, &data));

    assert_eq!(within("first connection", connections.recv()).await, Some(1));
    assert_eq!(within("batch 1", batches.recv()).await, Some((1, 1)));
    assert_eq!(within("the agency reconnects", connections.recv()).await, Some(2));
    // The new connection resumes from its Welcome: batch 1 again.
    let resent = loop {
        match within("batch 1 again", batches.recv()).await {
            Some((2, seq)) => break seq,
            Some(_) => continue,
            None => panic!("the fake stopped"),
        }
    };
    assert_eq!(resent, 1);
    let (code, lines) = agency.finish().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    let reconnect = line_with(&lines, "action: reconnect | result: in_progress");
    assert!(reconnect.contains("did not acknowledge batch 1 within 300"), "{reconnect}");
    let failure = failure(&lines);
    assert!(failure.contains("action: connect | result: fail"), "{failure}");
    assert!(
        failure.contains("no progress for") || failure.contains("cannot reach the central"),
        "{failure}"
    );
}

/// On tokio's paused time (as every in-process case here that waits out a deadline): the clock
/// moves only when every task waits, so the deadline passes at once, and only once the socket
/// buffers are full.
/// A central that acknowledged batches 1 and 2, then (its database failed over to a standby
/// that had not received them) welcomes the agency back at batch 1: the agency says loudly that
/// acknowledged bets were lost, naming both numbers, and sends them again from batch 1.
#[tokio::test]
async fn a_welcome_behind_what_was_acknowledged_is_a_loud_loss_and_the_bets_are_resent() {
    let dir = tempfile::tempdir().unwrap();
    let data = AgencyData::generate(dir.path(), 1, 120);
    let (batches_tx, mut batches) = mpsc::unbounded_channel();
    let (address, mut connections) = fake_central(move |connection, mut frames| {
        let batches = batches_tx.clone();
        async move {
            welcome(&mut frames, 1, 0).await;
            let mut acked = 0;
            while let Some(Ok(message)) = frames.next().await {
                let ClientMessage::Batch { seq, bets } = message else { continue };
                let _ = batches.send((connection, seq));
                // The first connection acknowledges two batches, then breaks; later ones
                // acknowledge nothing.
                if connection == 1 {
                    let count = u32::try_from(bets.len()).unwrap();
                    frames.send(ServerMessage::BatchAccepted { seq, count }).await.unwrap();
                    acked += 1;
                    if acked == 2 {
                        return;
                    }
                }
            }
        }
    })
    .await;
    let agency = Process::start(CLIENT_BIN, &agency_env(&address, &data));

    assert_eq!(within("first connection", connections.recv()).await, Some(1));
    assert_eq!(within("the agency reconnects", connections.recv()).await, Some(2));
    let resent = loop {
        match within("batch 1 again", batches.recv()).await {
            Some((2, seq)) => break seq,
            Some(_) => continue,
            None => panic!("the fake stopped"),
        }
    };
    assert_eq!(resent, 1, "sent again from where the Welcome says");
    let (code, lines) = agency.finish().await;
    assert_eq!(code, Some(1), "the fake never acknowledges again: {lines:#?}");
    let lost = line_with(&lines, "action: resume | result: fail");
    common::assert_grader_line(lost);
    assert!(lost.contains("acked_seq: 2 | next_seq: 1 | stored_bets: 0"), "{lost}");
    assert!(lost.contains("acknowledged bets were lost"), "{lost}");
}

#[tokio::test(start_paused = true)]
async fn sends_to_a_central_that_never_reads_time_out() {
    let (address, _connections) = fake_central(|_, mut frames| async move {
        welcome(&mut frames, 1, 0).await;
        hold(frames).await;
    })
    .await;
    let agency = AgencyId::new(1).unwrap();
    let mut connection =
        Connection::open(&address, agency, None, Duration::from_millis(300)).await.unwrap();
    let bets: Vec<_> = (0..150).map(|i| common::wire_bet(&i.to_string(), 1)).collect();
    // Without acknowledgements the agency can only go on writing until the socket buffers fill.
    let fill = async {
        for seq in 1.. {
            if let Err(e) = connection.feed_batch(seq, bets.clone()).await {
                return e;
            }
            if let Err(e) = connection.flush().await {
                return e;
            }
        }
        unreachable!("the sequence numbers ran out")
    };
    let started = tokio::time::Instant::now();
    let err = within("a send times out", fill).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert!(err.is_transient(), "a stalled send counts as a broken connection");
    let text = err.to_string();
    assert!(
        text.contains("did not take batch") || text.contains("did not read what the agency sent"),
        "{text}"
    );
}

#[tokio::test]
async fn a_connect_that_is_never_answered_times_out() {
    // A listener that accepts nothing, its queue full: the kernel drops further SYNs, as a
    // firewall or a frozen host would, so a connect hangs until its deadline.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let address = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    let full = loop {
        assert!(queued.len() < 16, "the accept queue never filled");
        match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(address)).await {
            Ok(stream) => queued.push(stream.unwrap()),
            Err(_) => break true,
        }
    };
    assert!(full);

    let env = [
        ("CLI_ID", "1".to_owned()),
        ("CLI_SERVER_ADDRESS", address.to_string()),
        ("CLI_DATA_FILE", "/nonexistent".to_owned()),
        ("CLI_CONNECT_TIMEOUT", "1s".to_owned()),
        ("CLI_READ_TIMEOUT", "300ms".to_owned()),
    ];
    let (code, lines) = Process::start(CLIENT_BIN, &env).finish().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    let failure = failure(&lines);
    assert!(failure.contains("cannot reach the central"), "{failure}");
    assert!(failure.contains("did not accept the TCP connection within"), "{failure}");
    drop(listener);
}

#[tokio::test(start_paused = true)]
async fn a_central_frozen_during_the_wait_for_the_draw_is_left_and_the_agency_waits_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = AgencyData::generate(dir.path(), 1, 120);
    let rows = data.rows.len() as u64;
    let expected = data.winners();
    let winners = expected.clone();
    let receipt = data.receipt();
    let (address, mut connections) = fake_central(move |connection, mut frames| {
        let (winners, receipt) = (winners.clone(), receipt.clone());
        async move {
            if connection == 1 {
                welcome(&mut frames, 1, 0).await;
                while let Some(Ok(message)) = frames.next().await {
                    if let ClientMessage::Batch { seq, bets } = message {
                        let count = bets.len() as u32;
                        frames.send(ServerMessage::BatchAccepted { seq, count }).await.unwrap();
                    }
                    // ReadyForLottery and Ping go unanswered: the central froze.
                }
            } else {
                // Everything is stored; the draw has run.
                welcome(&mut frames, 4, rows).await;
                while let Some(Ok(message)) = frames.next().await {
                    if message == ClientMessage::Ping {
                        frames.send(ServerMessage::Pong).await.unwrap();
                        frames.send(receipt.clone()).await.unwrap();
                        let documents = winners.clone();
                        frames
                            .send(ServerMessage::Winners { documents, last: true })
                            .await
                            .unwrap();
                    }
                }
            }
        }
    })
    .await;
    let mut config = data.client_config(address.parse().unwrap());
    config.batch_max_amount = 50.try_into().unwrap();
    config.read_timeout = Duration::from_millis(300);
    config.connect_timeout = Duration::from_secs(2);
    let run = tokio::spawn(async move { client::run(&config, &CancellationToken::new()).await });

    assert_eq!(within("first connection", connections.recv()).await, Some(1));
    assert_eq!(within("the agency comes back", connections.recv()).await, Some(2));
    let outcome = within("agency", run).await.unwrap().unwrap();
    assert_eq!(outcome.winners, expected);
    assert_eq!(outcome.reconnects, 1);
    assert_eq!(outcome.sent_bets, rows);
}

#[tokio::test]
async fn the_central_answers_ping_while_an_agency_waits_for_the_draw() {
    let server = common::spawn_server(2).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut frames = Framed::new(stream, lottery::protocol::ClientCodec::new());
    let hello = ClientMessage::Hello { version: PROTOCOL_VERSION, agency: 1, token: None };
    frames.send(hello).await.unwrap();
    let welcome = within("Welcome", frames.next()).await;
    assert!(matches!(welcome, Some(Ok(ServerMessage::Welcome { .. }))), "{welcome:?}");
    frames
        .send(ClientMessage::Batch { seq: 1, bets: vec![common::wire_bet("11", 1)] })
        .await
        .unwrap();
    let ack = within("ack", frames.next()).await;
    assert!(matches!(ack, Some(Ok(ServerMessage::BatchAccepted { seq: 1, count: 1 }))), "{ack:?}");
    frames.send(ClientMessage::ReadyForLottery).await.unwrap();
    // Agency 2 never comes: the draw waits, and the central still answers.
    for _ in 0..3 {
        frames.send(ClientMessage::Ping).await.unwrap();
        let pong = within("Pong while waiting", frames.next()).await;
        assert!(matches!(pong, Some(Ok(ServerMessage::Pong))), "{pong:?}");
    }
    // Anything but a Ping ends the session: the agency said it had sent everything.
    frames
        .send(ClientMessage::Batch { seq: 2, bets: vec![common::wire_bet("12", 1)] })
        .await
        .unwrap();
    let refused = within("refusal", frames.next()).await;
    assert!(
        matches!(refused, Some(Ok(ServerMessage::Error { code: ErrorCode::AgencyClosed, .. }))),
        "{refused:?}"
    );
    server.stop().await;
}

/// Waits for `needle` in the central's output, failing at once if the agency exits meanwhile
/// (it gave up) instead of waiting out the harness's limit.
async fn wait_while_agency_runs(server: &mut Process, agency: &mut Process, needle: &str) {
    tokio::select! {
        _ = server.wait_for_line(needle) => {}
        status = agency.child.wait() => {
            let mut lines = std::mem::take(&mut agency.seen);
            while let Ok(line) = agency.lines.try_recv() {
                lines.push(line);
            }
            panic!("the agency exited ({status:?}) before the central logged {needle:?}: {lines:#?}");
        }
    }
}

/// The real central on 127.0.0.1:0 with `bets_file`, expecting 2 agencies, and its address.
/// Its `Hello` deadline (1.5 s) is longer than the agencies' `CLI_CONNECT_TIMEOUT` (1 s).
async fn start_central(bets_file: &std::path::Path) -> (Process, String) {
    let vars = [("LOTTERY_AGENCIES", "2"), ("LOTTERY_HELLO_TIMEOUT", "1500ms")];
    start_server_with(bets_file, &vars).await
}

/// An agency's environment for `data`, against the central at `address`, with these deadlines.
fn deadlines_env(
    data: &AgencyData,
    address: String,
    connect: &str,
    read: &str,
) -> [(&'static str, String); 5] {
    [
        ("CLI_ID", data.agency.to_string()),
        ("CLI_SERVER_ADDRESS", address),
        ("CLI_DATA_FILE", data.path.display().to_string()),
        ("CLI_CONNECT_TIMEOUT", connect.to_owned()),
        ("CLI_READ_TIMEOUT", read.to_owned()),
    ]
}

/// Returns once the central's own deadline for a `Hello` has passed on a silent connection:
/// an event that comes after the agency has waited at the barrier for longer than its
/// `CLI_CONNECT_TIMEOUT`, the wait that made agencies give up before.
async fn outlast_the_connect_timeout(server: &mut Process, address: &str) {
    let silent = TcpStream::connect(address).await.unwrap();
    server.wait_for_line("Hello did not arrive within").await;
    drop(silent);
}

#[tokio::test]
async fn an_agency_waiting_for_the_draw_survives_two_central_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let first = AgencyData::generate(dir.path(), 1, 300);
    let second = AgencyData::generate(dir.path(), 2, 300);
    // A stable address for the agencies across restarts.
    let proxy = Proxy::start().await;
    let (mut server, mut address) = start_central(&bets_file).await;
    proxy.set_backend(address.parse().unwrap());
    let agency_env = |data: &AgencyData| deadlines_env(data, proxy.addr.to_string(), "1s", "1s");
    let mut agency = Process::start(CLIENT_BIN, &agency_env(&first));
    let ready = "action: ready_for_lottery | result: success | agency: 1";
    wait_while_agency_runs(&mut server, &mut agency, ready).await;

    for _ in 0..2 {
        outlast_the_connect_timeout(&mut server, &address).await;
        server.signal("KILL");
        within("killed central", server.finish()).await;
        (server, address) = start_central(&bets_file).await;
        proxy.set_backend(address.parse().unwrap());
        // The agency is back: its readiness was restored from the journal and declared again.
        wait_while_agency_runs(&mut server, &mut agency, ready).await;
    }

    let (code, lines) = Process::start(CLIENT_BIN, &agency_env(&second)).finish().await;
    assert_eq!(code, Some(0), "agency 2: {lines:#?}");
    let (code, lines) = agency.finish().await;
    assert_eq!(code, Some(0), "agency 1: {lines:#?}");
    let winners = format!("cant_ganadores: {}", first.winners().len());
    assert!(lines.iter().any(|l| l.ends_with(&winners)), "{winners} in {lines:#?}");
    let reconnects = lines.iter().filter(|l| l.contains("action: reconnect")).count();
    assert_eq!(reconnects, 2, "{lines:#?}");
    server.signal("TERM");
    assert_eq!(server.finish().await.0, Some(0));
}

#[tokio::test]
async fn an_agency_waiting_for_the_draw_outlives_a_frozen_central() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let first = AgencyData::generate(dir.path(), 1, 300);
    let second = AgencyData::generate(dir.path(), 2, 300);
    let (mut server, address) = start_central(&bets_file).await;
    let agency_env = |data: &AgencyData| deadlines_env(data, address.clone(), "10s", "500ms");
    let mut agency = Process::start(CLIENT_BIN, &agency_env(&first));
    let ready = "action: ready_for_lottery | result: success | agency: 1";
    wait_while_agency_runs(&mut server, &mut agency, ready).await;

    // Frozen: the kernel still completes connections, nothing answers them.
    server.signal("STOP");
    let left =
        agency.wait_for_line("did not answer Ping while the agency waits for the draw").await;
    assert!(left.contains("action: reconnect | result: in_progress"), "{left}");
    let retried = agency.wait_for_line("the central did not answer Hello within").await;
    assert!(retried.contains("action: connect | result: in_progress"), "{retried}");
    server.signal("CONT");
    wait_while_agency_runs(&mut server, &mut agency, "again: true").await;

    let (code, lines) = Process::start(CLIENT_BIN, &agency_env(&second)).finish().await;
    assert_eq!(code, Some(0), "agency 2: {lines:#?}");
    let (code, lines) = agency.finish().await;
    assert_eq!(code, Some(0), "agency 1: {lines:#?}");
    let winners = format!("cant_ganadores: {}", first.winners().len());
    assert!(lines.iter().any(|l| l.ends_with(&winners)), "{winners} in {lines:#?}");
    server.signal("TERM");
    assert_eq!(server.finish().await.0, Some(0));
}

/// Reads `Hello`, answers `Welcome` for a fresh agency, acknowledges every batch until
/// `ReadyForLottery`; returns the documents it was sent.
async fn take_everything(frames: &mut Framed<TcpStream, ServerCodec>) -> Vec<String> {
    welcome(frames, 1, 0).await;
    let mut documents = Vec::new();
    while let Some(Ok(message)) = frames.next().await {
        match message {
            ClientMessage::Batch { seq, bets } => {
                let count = bets.len() as u32;
                documents.extend(bets.into_iter().map(|b| b.document));
                frames.send(ServerMessage::BatchAccepted { seq, count }).await.unwrap();
            }
            ClientMessage::ReadyForLottery => break,
            _ => {}
        }
    }
    documents
}

fn short_deadlines(data: &AgencyData, address: &str) -> lottery::config::ClientConfig {
    let mut config = data.client_config(address.parse().unwrap());
    config.read_timeout = Duration::from_millis(300);
    config.connect_timeout = Duration::from_secs(2);
    config
}

/// Held: a central that answers garbage bytes after `Welcome` (or after the uploads) does not
/// make the agency hang: it fails at once, naming the bad frame.
#[tokio::test]
async fn garbage_from_the_central_ends_the_agency_without_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let data = AgencyData::generate(dir.path(), 1, 120);
    let (address, _) = fake_central(|_, mut frames| async move {
        welcome(&mut frames, 1, 0).await;
        let _ = frames.get_mut().write_all(&[0xff; 64]).await;
        std::future::pending::<()>().await;
    })
    .await;
    let config = short_deadlines(&data, &address);
    let err = within("agency", client::run(&config, &CancellationToken::new())).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
}

/// Finding 6 (low). The agency takes whatever `Winners` the central sends: documents it never
/// sent, more winners than bets, without limit (a central streaming `Winners { last: false }`
/// grows the agency's memory for as long as it likes, and answers every `Ping`).
#[tokio::test]
async fn winners_the_agency_never_sent_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = AgencyData::generate(dir.path(), 1, 120);
    let receipt = data.receipt();
    let (address, _) = fake_central(move |_, mut frames| {
        let receipt = receipt.clone();
        async move {
            let sent = take_everything(&mut frames).await;
            // The receipt matches: the winners are what is wrong.
            frames.send(receipt).await.unwrap();
            let documents: Vec<String> = (0..=sent.len()).map(|i| format!("9{i:07}")).collect();
            let _ = frames.send(ServerMessage::Winners { documents, last: true }).await;
            std::future::pending::<()>().await;
        }
    })
    .await;
    let config = short_deadlines(&data, &address);
    let outcome = within("agency", client::run(&config, &CancellationToken::new())).await;
    let winners = outcome.as_ref().map(|o| o.winners.len());
    assert!(
        matches!(outcome, Err(ClientError::WrongWinners { .. })),
        "{winners:?} winners for 120 bets, none of them its own"
    );
}
