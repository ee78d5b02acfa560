//! Reads a room's whole history with one `Connection`, page by page, oldest first.
//!
//! `cargo run -p bavard-client --example history -- ws://127.0.0.1:8000 general`

use bavard_client::{
    endpoint,
    protocol::{HistoryRequest, RoomName},
    Connection,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = endpoint(&args.next().unwrap_or_else(|| "ws://127.0.0.1:8000".into()), Some("reader"))?;
    let room = RoomName::new(&args.next().unwrap_or_else(|| "general".into()))?;
    let mut connection = Connection::connect(&url).await?;
    let mut after = 0;
    loop {
        let request =
            HistoryRequest { room: room.clone(), before: None, after: Some(after), limit: Some(200), thread: None };
        let page = connection.history(request).await?;
        for m in &page.messages {
            println!("#{} {} {}: {}", m.seq, m.ts, m.from.name, m.text);
            after = m.seq;
        }
        if !page.has_more {
            break;
        }
    }
    connection.close().await;
    Ok(())
}
