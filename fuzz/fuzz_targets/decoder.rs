//! Arbitrary bytes through both directions' decoders: never a panic, never an allocation past
//! the frame limit, and whatever decodes re-encodes to the same message. Decoded agency messages
//! then drive a session, as a connection would.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use lottery::protocol::{ClientCodec, ClientMessage, ServerCodec, ServerMessage};
use lottery::server::session::{Rules, Session};
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let rules = Rules {
        agencies: 3.try_into().unwrap(),
        batch_max_bets: 5.try_into().unwrap(),
        tokens: None,
    };
    let mut session = Session::new(&rules);
    // The first byte picks where the stream is split, as two reads would split it.
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut codec = ServerCodec::new();
    let mut buf = BytesMut::from(&data[..cut]);
    let mut messages: Vec<ClientMessage> = Vec::new();
    for part in [&data[cut..], &[][..]] {
        while let Ok(Some(message)) = codec.decode(&mut buf) {
            messages.push(message);
        }
        buf.extend_from_slice(part);
    }
    let _ = codec.decode_eof(&mut buf);
    for message in messages {
        let mut encoded = BytesMut::new();
        ClientCodec::new().encode(message.clone(), &mut encoded).expect("a decoded message encodes");
        let again = ServerCodec::new().decode(&mut encoded).expect("re-decodes").expect("whole");
        assert_eq!(again, message);
        let _ = session.on_message(message, &rules);
    }

    let mut codec = ClientCodec::new();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(message)) = codec.decode(&mut buf) {
        let message: ServerMessage = message;
        let mut encoded = BytesMut::new();
        ServerCodec::new().encode(message.clone(), &mut encoded).expect("a decoded message encodes");
    }
});
