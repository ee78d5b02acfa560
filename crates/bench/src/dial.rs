//! Opening the bench's connections with `bavard_ws::client`, from a chosen source
//! address when a scenario holds more connections than one address has ports.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use bavard_ws::client::{self, Endpoint, WsConn};
use tokio::net::{TcpSocket, TcpStream};

/// Opens a TCP connection (from `bind` when given), with Nagle off, and upgrades it to a
/// WebSocket on `path`. Returns the stream and the bytes that followed the 101 response.
pub async fn connect(endpoint: &Endpoint, path: &str, bind: Option<IpAddr>) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let socket = if endpoint.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = bind {
        // Let connect() pick the port for the whole 4-tuple: binding to port 0 would
        // reserve one per address, and fails (or crawls) once most of the address's
        // ports are held, e.g. in TIME_WAIT after an earlier run.
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(ip, 0)).with_context(|| format!("cannot bind to {ip}"))?;
    }
    Ok(client::connect_socket(socket, endpoint, path).await?)
}

/// [`connect`], as a [`WsConn`] with a read buffer of `buf_bytes` to start with (it
/// grows to fit a larger frame; scenarios holding thousands of connections start small).
pub async fn connect_conn(
    endpoint: &Endpoint,
    path: &str,
    bind: Option<IpAddr>,
    buf_bytes: usize,
) -> anyhow::Result<WsConn> {
    let (stream, leftover) = connect(endpoint, path, bind).await?;
    Ok(WsConn::new(stream, &leftover, buf_bytes))
}
