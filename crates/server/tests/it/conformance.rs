//! `--conformance-echo`: `/conformance/echo` sends text and binary messages back
//! unchanged over the `/ws` framing, with its frame limit and close codes, and does not
//! exist without the flag. (CI runs the Autobahn suite against it: `.ci/run`.)

use bavard_ws::client::{close_code, OP_BINARY, OP_CLOSE, OP_TEXT};

use crate::helpers::*;

#[tokio::test]
async fn the_conformance_echo_echoes_with_the_ws_framing_and_only_when_asked() {
    let server = spawn_with(|c| {
        c.conformance_echo = true;
        c.max_frame_bytes = 1024;
    })
    .await;
    let mut conn = raw_websocket(server.addr, "/conformance/echo").await;
    conn.queue_frame(OP_TEXT, "héllo".as_bytes());
    conn.queue_frame(OP_BINARY, &[0, 159, 255]);
    within(conn.flush()).await.unwrap();
    let mut echoed = Vec::new();
    while echoed.len() < 2 {
        let frame = within(conn.next_frame()).await.unwrap().expect("the echo closed");
        echoed.push((frame.opcode, frame.payload.to_vec()));
    }
    assert_eq!(echoed, [(OP_TEXT, "héllo".as_bytes().to_vec()), (OP_BINARY, vec![0, 159, 255])]);
    // Over --max-frame-bytes: 1009, as on /ws; invalid UTF-8: 1007.
    for (payload, expected) in [(vec![b'a'; 1025], 1009), (vec![0xff, 0xfe], 1007)] {
        let mut conn = raw_websocket(server.addr, "/conformance/echo").await;
        conn.queue_frame(OP_TEXT, &payload);
        within(conn.flush()).await.unwrap();
        let frames = within(read_raw_frames(&mut conn)).await;
        let (opcode, close) = frames.last().cloned().expect("a close frame");
        assert_eq!((opcode, close_code(&close)), (OP_CLOSE, expected));
    }
    server.stop().await;

    let server = spawn().await;
    let (status, _) = http_get(&server.http("/conformance/echo")).await;
    assert_eq!(status, 404, "the echo is off by default");
    server.stop().await;
}
