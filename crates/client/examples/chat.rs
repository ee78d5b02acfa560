//! Joins a room, prints its messages and sends each line typed on standard input, with
//! reconnects and recovery done by `Resilient`.
//!
//! `cargo run -p bavard-client --example chat -- ws://127.0.0.1:8000 general alice [CA.pem]`

use bavard_client::{endpoint, protocol::RoomName, Event, Resilient, TlsConfig};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8000".into());
    let room = RoomName::new(&args.next().unwrap_or_else(|| "general".into()))?;
    let name = args.next().unwrap_or_else(|| "rustacean".into());
    let mut client = Resilient::new(endpoint(&url, Some(&name))?);
    if let Some(ca) = args.next() {
        client.set_tls(TlsConfig::with_ca_file(ca)?); // a self-signed wss:// server
    }
    client.join(&room).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(text) if !text.trim().is_empty() => {
                    let ack = client.send(&room, &text).await?; // retried with one key until stored
                    eprintln!("* stored as #{}", ack.seq);
                }
                Some(_) => {}
                None => break,
            },
            event = client.next_event() => match event? {
                Event::Message(m) => println!("[{} #{}] {}: {}", m.room, m.seq, m.from.name, m.text),
                Event::Disconnected(why) => eprintln!("* connection lost ({why}); reconnecting"),
                Event::Rejoined { room, member_count } => eprintln!("* back in #{room} ({member_count} online)"),
                _ => {}
            },
        }
    }
    client.close().await;
    Ok(())
}
