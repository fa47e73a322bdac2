//! Hostile and broken peers against the real server binary, while honest agencies upload: the
//! central keeps serving them, stays up, keeps its memory bounded, and lets no one act as an
//! agency it is not.

mod common;

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use common::{AgencyData, Process, SERVER_BIN, replies_until_closed, within};
use futures::{SinkExt, StreamExt};
use lottery::client::{self, ClientError};
use lottery::protocol::{
    ClientCodec, ClientMessage, ErrorCode, PROTOCOL_VERSION, ServerMessage, WireBet, WireDate,
};
use lottery::{AgencyId, Connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::codec::{Encoder, Framed};
use tokio_util::sync::CancellationToken;

/// Agencies 1-3 upload honestly during the attacks; 4-6 are the attackers' identities (each attack
/// that completes a Hello has its own, so the attacks never take over each other's sessions), and
/// upload honestly once the attacks are over, for the draw.
const TOKENS: &str = "1:tok-1\n2:tok-2\n3:tok-3\n4:tok-4\n5:tok-5\n6:tok-6\n";

fn token(agency: u32) -> String {
    format!("tok-{agency}")
}

fn hello(agency: u32, token: Option<String>) -> ClientMessage {
    ClientMessage::Hello { version: PROTOCOL_VERSION, agency, token }
}

fn frame(message: ClientMessage) -> BytesMut {
    let mut buf = BytesMut::new();
    ClientCodec::new().encode(message, &mut buf).unwrap();
    buf
}

fn error_code(replies: &[ServerMessage]) -> Option<ErrorCode> {
    replies.iter().find_map(|r| match r {
        ServerMessage::Error { code, .. } => Some(*code),
        _ => None,
    })
}

async fn raw(address: &str, bytes: &[u8]) -> Vec<ServerMessage> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    // The central may close before everything is written: that is one of the right answers.
    let _ = stream.write_all(bytes).await;
    replies_until_closed(stream).await
}

async fn expect_error(address: &str, bytes: &[u8], code: ErrorCode, what: &str) {
    let replies = raw(address, bytes).await;
    assert_eq!(error_code(&replies), Some(code), "{what}: {replies:?}");
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_central_survives_bad_peers_while_honest_agencies_finish() {
    let dir = tempfile::tempdir().unwrap();
    let tokens_file = dir.path().join("agency-tokens");
    std::fs::write(&tokens_file, TOKENS).unwrap();
    let env = [
        ("SERVER_IP", "127.0.0.1".to_owned()),
        ("SERVER_PORT", "0".to_owned()),
        ("LOTTERY_AGENCIES", "6".to_owned()),
        ("BETS_FILE", dir.path().join("bets.csv").display().to_string()),
        ("LOTTERY_AGENCY_TOKENS_FILE", tokens_file.display().to_string()),
        ("LOTTERY_HELLO_TIMEOUT", "500ms".to_owned()),
        ("LOTTERY_READ_TIMEOUT", "2s".to_owned()),
        ("LOTTERY_WRITE_TIMEOUT", "500ms".to_owned()),
        ("LOTTERY_MAX_CONNECTIONS", "1100".to_owned()),
        // These attacks are about the other limits: no connection here is closed to make room.
        ("LOTTERY_MAX_PENDING_HELLOS", "1050".to_owned()),
    ];
    let mut server = Process::start(SERVER_BIN, &env);
    let line = server.wait_for_line("action: listen | result: success").await;
    let address = line.rsplit("address: ").next().unwrap().trim().to_owned();
    let pid = server.child.id().unwrap();

    // Honest agencies 1..3 upload meanwhile (agency 4 comes last, once the attacks are over).
    let data: Vec<AgencyData> =
        (1..=6).map(|a| AgencyData::generate(dir.path(), a, 4000)).collect();
    let mut honest = JoinSet::new();
    for agency in &data[..3] {
        let mut config = agency.client_config(address.parse().unwrap());
        config.token = Some(token(agency.agency));
        let expected = agency.winners();
        honest.spawn(async move {
            let winners =
                client::run(&config, &CancellationToken::new()).await.map(|o| o.winners).unwrap();
            assert_eq!(winners, expected, "agency {}", config.id);
        });
    }

    let mut attacks = JoinSet::new();
    let a = address.clone();
    attacks.spawn(async move {
        let mut noise = Vec::with_capacity(4096);
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..4096 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.push(x as u8);
        }
        let replies = raw(&a, &noise).await;
        assert!(replies.iter().all(|r| matches!(r, ServerMessage::Error { .. })), "{replies:?}");
        "random bytes"
    });
    let a = address.clone();
    attacks.spawn(async move {
        let mut stream = TcpStream::connect(&a).await.unwrap();
        let mut partial = BytesMut::new();
        partial.put_u32(100);
        partial.put_slice(&[1; 10]);
        stream.write_all(&partial).await.unwrap();
        stream.shutdown().await.unwrap();
        replies_until_closed(stream).await;
        "a truncated frame, then EOF"
    });
    let a = address.clone();
    attacks.spawn(async move {
        expect_error(&a, &u32::MAX.to_be_bytes(), ErrorCode::Malformed, "4 GiB prefix").await;
        "a length prefix of 4 GiB"
    });
    let a = address.clone();
    attacks.spawn(async move {
        let mut bytes = frame(hello(5, Some(token(5))));
        bytes.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xfe, 0xfd]);
        expect_error(&a, &bytes, ErrorCode::Malformed, "Hello then garbage").await;
        "a valid Hello, then garbage"
    });
    let a = address.clone();
    attacks.spawn(async move {
        expect_error(&a, &frame(hello(0, None)), ErrorCode::UnknownAgency, "agency 0").await;
        expect_error(&a, &frame(hello(7, None)), ErrorCode::UnknownAgency, "agency N+1").await;
        "Hello for agency 0 and N+1"
    });
    let a = address.clone();
    attacks.spawn(async move {
        let bet = WireBet {
            first_name: "Ana".into(),
            last_name: "Paz".into(),
            document: "1".into(),
            birthdate: WireDate { year: 1990, month: 1, day: 1 },
            number: 7574,
        };
        expect_error(&a, &frame(ClientMessage::Bet(bet)), ErrorCode::HelloRequired, "bet").await;
        "a Bet before Hello"
    });
    let a = address.clone();
    attacks.spawn(async move {
        // A Hello trickled one byte every 100 ms never completes within the 500 ms deadline.
        let mut stream = TcpStream::connect(&a).await.unwrap();
        let bytes = frame(hello(4, Some(token(4))));
        let mut closed = false;
        for byte in bytes.iter() {
            if stream.write_all(&[*byte]).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let replies = replies_until_closed(stream).await;
        assert!(closed || error_code(&replies) == Some(ErrorCode::Timeout), "{replies:?}");
        "a slowloris"
    });
    let a = address.clone();
    attacks.spawn(async move {
        // Pings keep a connection busy but do not stand in for Hello.
        let mut stream = TcpStream::connect(&a).await.unwrap();
        let mut replies = Vec::new();
        let mut frames = Framed::new(&mut stream, ClientCodec::new());
        let mut closed = false;
        // 100 Pings 50 ms apart outlast the 500 ms Hello deadline tenfold.
        for _ in 0..100 {
            if frames.send(ClientMessage::Ping).await.is_err() {
                closed = true;
                break;
            }
            match within("pong or close", frames.next()).await {
                Some(Ok(reply)) => replies.push(reply),
                _ => {
                    closed = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(closed, "the central kept a connection without Hello open: {replies:?}");
        // The Timeout reply comes just before the close; a Ping sent after the close can make the
        // peer's kernel reset the connection and drop it unread, so it is not required.
        assert!(matches!(error_code(&replies), None | Some(ErrorCode::Timeout)), "{replies:?}");
        "Pings instead of Hello"
    });
    let a = address.clone();
    attacks.spawn(async move {
        let mut idle = Vec::new();
        for _ in 0..1000 {
            idle.push(TcpStream::connect(&a).await.unwrap());
        }
        let mut closed = JoinSet::new();
        for stream in idle {
            closed.spawn(replies_until_closed(stream));
        }
        while let Some(replies) = closed.join_next().await {
            let replies = replies.unwrap();
            assert!(matches!(
                error_code(&replies),
                Some(ErrorCode::Timeout | ErrorCode::Busy) | None
            ));
        }
        "1,000 idle connections at once"
    });
    let a = address.clone();
    attacks.spawn(async move {
        // Agency 6 (with its token) pings without ever reading the Pongs: the central's writes
        // block, the write deadline passes, and it drops the connection.
        let mut stream = TcpStream::connect(&a).await.unwrap();
        stream.write_all(&frame(hello(6, Some(token(6))))).await.unwrap();
        let pings: BytesMut = (0..4096).flat_map(|_| frame(ClientMessage::Ping)).collect();
        let mut written = 0usize;
        let dropped = loop {
            match within("write", stream.write_all(&pings)).await {
                Ok(()) => written += pings.len(),
                Err(_) => break true,
            }
            if written > 512 << 20 {
                break false;
            }
        };
        assert!(dropped, "the central kept a peer that never reads ({written} bytes sent)");
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        "a peer that never reads"
    });
    let a = address.clone();
    attacks.spawn(async move {
        for (agency, given) in [(1, Some("wrong".to_owned())), (1, None), (2, Some(token(1)))] {
            let replies = raw(&a, &frame(hello(agency, given.clone()))).await;
            assert_eq!(error_code(&replies), Some(ErrorCode::Unauthorized), "{agency} {given:?}");
        }
        // A wrong token cannot take over a live session or read winners either.
        let id = AgencyId::new(3).unwrap();
        let err = Connection::connect(&a, id, Some(&token(1))).await.unwrap_err();
        assert!(matches!(err, ClientError::Server { code: ErrorCode::Unauthorized, .. }), "{err}");
        "wrong tokens, and another agency's token"
    });

    while let Some(attack) = within("attacks", attacks.join_next()).await {
        println!("survived: {}", attack.unwrap());
    }
    for agency in &data[3..] {
        let mut config = agency.client_config(address.parse().unwrap());
        config.token = Some(token(agency.agency));
        let expected = agency.winners();
        honest.spawn(async move {
            let winners = client::run(&config, &CancellationToken::new()).await.unwrap();
            assert_eq!(winners.winners, expected, "agency {}", config.id);
        });
    }
    while let Some(done) = within("honest agencies", honest.join_next()).await {
        done.unwrap();
    }
    lottery::client::ping(&address).await.expect("the central is still up");
    let peak = peak_rss_kib(pid);
    println!("server peak RSS: {} MiB", peak / 1024);
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");

    server.signal("TERM");
    let (code, lines) = server.finish().await;
    assert_eq!(code, Some(0));
    for agency in 1..=6 {
        assert!(!lines.iter().any(|l| l.contains(&token(agency))), "a token was logged");
    }
    let auth =
        lines.iter().filter(|l| l.contains("action: auth | result: fail | agency: ")).count();
    assert!(auth >= 4, "{auth} auth failures logged");
    assert!(lines.iter().any(|l| l.contains("action: sorteo | result: success")));
}
