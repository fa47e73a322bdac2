//! End to end in one process: the central on 127.0.0.1:0 and agencies using the client library.

mod common;

use common::{AgencyData, TestServer, sorted, spawn_server, stored_multiset, wire_bet, within};
use futures::{SinkExt, StreamExt};
use lottery::client::{self, ClientError};
use lottery::protocol::{
    ClientCodec, ClientMessage, ErrorCode, PROTOCOL_VERSION, RejectReason, ServerMessage, WireBet,
};
use lottery::{AgencyId, Connection};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// Runs one client per agency file, concurrently, and checks each gets exactly its own winners.
async fn run_agencies(server: &TestServer, data: &[AgencyData]) {
    let mut clients = JoinSet::new();
    for agency in data {
        let config = agency.client_config(server.addr);
        let expected = agency.winners();
        clients.spawn(async move {
            let winners =
                client::run(&config, &CancellationToken::new()).await.map(|o| o.winners).unwrap();
            assert_eq!(winners, expected, "agency {}", config.id);
        });
    }
    while let Some(done) = within("agencies", clients.join_next()).await {
        done.unwrap();
    }
}

async fn lottery_with(agencies: u32, bets_each: usize) {
    let server = spawn_server(agencies).await;
    let data: Vec<AgencyData> =
        (1..=agencies).map(|a| AgencyData::generate(server.dir.path(), a, bets_each)).collect();
    assert!(data.iter().any(|d| !d.winners().is_empty()), "the data has winners to find");
    run_agencies(&server, &data).await;
    let expected = sorted(data.iter().flat_map(AgencyData::stored_rows).collect());
    assert_eq!(stored_multiset(&server.bets_file), expected, "every bet stored exactly once");
    server.stop().await;
}

#[tokio::test]
async fn five_agencies_each_get_exactly_their_own_winners() {
    lottery_with(5, 4000).await;
}

#[tokio::test]
async fn a_single_agency_runs_the_draw_alone() {
    lottery_with(1, 3000).await;
}

#[tokio::test]
async fn twenty_agencies() {
    lottery_with(20, 1200).await;
}

#[tokio::test]
async fn an_agency_with_an_empty_file_gets_no_winners() {
    let server = spawn_server(2).await;
    let full = AgencyData::generate(server.dir.path(), 1, 2000);
    let empty = AgencyData::generate(server.dir.path(), 2, 0);
    run_agencies(&server, &[full, empty]).await;
    server.stop().await;
}

async fn connect(server: &TestServer, agency: u32) -> Connection {
    within(
        "connect",
        Connection::connect(&server.addr.to_string(), AgencyId::new(agency).unwrap(), None),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn an_invalid_bet_rejects_its_whole_batch_and_others_finish() {
    let server = spawn_server(2).await;
    let other = AgencyData::generate(server.dir.path(), 1, 2000);
    let config = other.client_config(server.addr);
    let honest = tokio::spawn(async move {
        client::run(&config, &CancellationToken::new()).await.map(|o| o.winners)
    });

    let mut agency = connect(&server, 2).await;
    let batch = [wire_bet("111", 7574), wire_bet("222", 10_000), wire_bet("333", 1)];
    let err = agency.send_batch(1, &batch).await.unwrap_err();
    let ClientError::Rejected { seq: 1, reason: RejectReason::InvalidBet, message } = err else {
        panic!("expected a rejection, got {err}");
    };
    assert!(message.contains("bet 2") && message.contains("10000"), "{message}");
    // The rejected batch took no sequence number: batch 1 is still expected, and stored whole.
    assert_eq!(agency.send_batch(1, &[wire_bet("444", 7574)]).await.unwrap(), 1);
    assert_eq!(within("winners", agency.winners()).await.unwrap(), ["444"]);
    assert_eq!(within("honest agency", honest).await.unwrap().unwrap(), other.winners());

    let stored = stored_multiset(&server.bets_file);
    let mut expected = other.stored_rows();
    expected.push("2|Ana|Núñez|444|1990-02-28|7574".into());
    assert_eq!(stored, sorted(expected), "nothing of the rejected batch was stored");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_batch_leaves_nothing_of_it() {
    let server = spawn_server(1).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut frames = Framed::new(stream, ClientCodec::new());
    frames
        .send(ClientMessage::Hello { version: PROTOCOL_VERSION, agency: 1, token: None })
        .await
        .unwrap();
    let welcome = within("welcome", frames.next()).await.unwrap().unwrap();
    assert_eq!(
        welcome,
        ServerMessage::Welcome { version: PROTOCOL_VERSION, next_seq: 1, stored_bets: 0 }
    );
    frames.send(ClientMessage::Bet(wire_bet("111", 7574))).await.unwrap();
    frames.send(ClientMessage::Bet(wire_bet("222", 7574))).await.unwrap();
    drop(frames);

    let mut agency = connect(&server, 1).await;
    assert_eq!(agency.next_seq(), 1, "no batch was stored");
    assert_eq!(agency.send_batch(1, &[wire_bet("333", 7574)]).await.unwrap(), 1);
    assert_eq!(within("winners", agency.winners()).await.unwrap(), ["333"]);
    assert_eq!(stored_multiset(&server.bets_file), ["1|Ana|Núñez|333|1990-02-28|7574"]);
    server.stop().await;
}

#[tokio::test]
async fn a_retried_batch_is_acknowledged_but_not_stored_twice() {
    let server = spawn_server(1).await;
    let mut agency = connect(&server, 1).await;
    assert_eq!(agency.send_batch(1, &[wire_bet("111", 7574)]).await.unwrap(), 1);
    assert_eq!(agency.send_batch(1, &[wire_bet("111", 7574)]).await.unwrap(), 1);
    let mut again = connect(&server, 1).await;
    assert_eq!(again.next_seq(), 2, "Welcome says where the agency's stored batches end");
    let err = again.send_batch(3, &[wire_bet("222", 1)]).await.unwrap_err();
    assert!(matches!(err, ClientError::Server { code: ErrorCode::SequenceGap, .. }), "{err}");
    assert_eq!(stored_multiset(&server.bets_file).len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn malformed_input_drops_only_its_own_connection() {
    let server = spawn_server(1).await;
    for garbage in
        [&b"\xff\xff\xff\xff"[..], b"\x00\x00\x00\x02\xff\xff", b"GET / HTTP/1.1\r\n\r\n"]
    {
        let mut raw = TcpStream::connect(server.addr).await.unwrap();
        raw.write_all(garbage).await.unwrap();
        let mut frames = Framed::new(raw, ClientCodec::new());
        let reply = within("error reply", frames.next()).await.unwrap().unwrap();
        assert!(
            matches!(reply, ServerMessage::Error { code: ErrorCode::Malformed, .. }),
            "{garbage:?}: {reply:?}"
        );
        assert!(within("close", frames.next()).await.is_none(), "the connection is closed");
    }
    let data = AgencyData::generate(server.dir.path(), 1, 1500);
    run_agencies(&server, std::slice::from_ref(&data)).await;
    server.stop().await;
}

#[tokio::test]
async fn hello_is_checked() {
    let server = spawn_server(3).await;
    for (agency, code) in [(0, ErrorCode::UnknownAgency), (4, ErrorCode::UnknownAgency)] {
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let mut frames = Framed::new(stream, ClientCodec::new());
        frames
            .send(ClientMessage::Hello { version: PROTOCOL_VERSION, agency, token: None })
            .await
            .unwrap();
        let reply = within("reply", frames.next()).await.unwrap().unwrap();
        assert!(matches!(&reply, ServerMessage::Error { code: c, .. } if *c == code), "{reply:?}");
    }
    let cases = [
        (
            ClientMessage::Hello { version: 99, agency: 1, token: None },
            ErrorCode::UnsupportedVersion,
        ),
        (ClientMessage::Bet(wire_bet("1", 1)), ErrorCode::HelloRequired),
        (ClientMessage::ReadyForLottery, ErrorCode::HelloRequired),
    ];
    for (first, code) in cases {
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let mut frames = Framed::new(stream, ClientCodec::new());
        frames.send(ClientMessage::Ping).await.unwrap();
        assert_eq!(within("pong", frames.next()).await.unwrap().unwrap(), ServerMessage::Pong);
        frames.send(first).await.unwrap();
        let reply = within("reply", frames.next()).await.unwrap().unwrap();
        assert!(matches!(&reply, ServerMessage::Error { code: c, .. } if *c == code), "{reply:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_newer_connection_of_an_agency_fences_the_older_one() {
    let server = spawn_server(1).await;
    let mut old = connect(&server, 1).await;
    assert_eq!(old.send_batch(1, &[wire_bet("111", 7574)]).await.unwrap(), 1);
    let mut new = connect(&server, 1).await;
    assert_eq!((new.next_seq(), new.stored_bets()), (2, 1));
    let err = old.send_batch(2, &[wire_bet("112", 7574)]).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Server { code: ErrorCode::SessionReplaced, .. }
                | ClientError::Closed
                | ClientError::Codec(_)
        ),
        "the old session is over: {err}"
    );
    assert_eq!(new.send_batch(2, &[wire_bet("113", 7574)]).await.unwrap(), 1);
    assert_eq!(within("winners", new.winners()).await.unwrap(), ["111", "113"]);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_completes_while_agencies_wait_at_the_barrier() {
    let server = spawn_server(3).await;
    let mut waiting = connect(&server, 1).await;
    waiting.send_batch(1, &[wire_bet("111", 7574)]).await.unwrap();
    let waiting = tokio::spawn(async move { waiting.winners().await });
    // Whether agency 1's ReadyForLottery reached the barrier before the cancel or not, the
    // central must stop and tell the agency. (tests/processes.rs waits for the barrier's log line.)
    server.token.cancel();
    within("server shutdown", server.handle).await.unwrap().unwrap();
    let err = within("waiting agency", waiting).await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Server { code: ErrorCode::ShuttingDown, .. } | ClientError::Closed
        ),
        "{err}"
    );
}

#[tokio::test]
async fn batches_over_either_limit_are_rejected_whole() {
    let server =
        common::spawn_server_with(&[("LOTTERY_AGENCIES", "1"), ("LOTTERY_BATCH_MAX_BETS", "25")])
            .await;
    let mut agency = connect(&server, 1).await;
    let many: Vec<WireBet> = (0..26).map(|i| wire_bet(&i.to_string(), 7574)).collect();
    let err = agency.send_batch(1, &many).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Rejected { reason: RejectReason::TooManyBets, .. }),
        "{err}"
    );

    let mut long = wire_bet("1", 7574);
    long.first_name = "Ñ".repeat(100);
    long.last_name = "Ñ".repeat(100);
    let big = vec![long; 20]; // 20 × ~420 bytes: over 8 kB, within the count
    let err = agency.send_batch(1, &big).await.unwrap_err();
    assert!(matches!(err, ClientError::Rejected { reason: RejectReason::TooLarge, .. }), "{err}");

    assert_eq!(agency.send_batch(1, &many[..25]).await.unwrap(), 25);
    assert_eq!(stored_multiset(&server.bets_file).len(), 25, "only the batch within limits");
    server.stop().await;
}
