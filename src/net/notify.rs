//! Telling a service manager (systemd) that the server is ready or
//! stopping: `sd_notify(3)`'s protocol, a datagram such as `READY=1` to the
//! socket named in `$NOTIFY_SOCKET`. A few lines of our own rather than a
//! dependency: the protocol is one datagram, and the crates for it need a
//! newer Rust than this crate's minimum.

use std::env;
use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `"READY=1"`) when the process runs under a service
/// manager that asked for notifications; does nothing otherwise.
pub(crate) fn notify(state: &str) {
    let Some(path) = env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(error) = send(&path, state) {
        log::warn!("could not notify the service manager: state={state} error={error}");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    // A name starting with '@' is in Linux's abstract namespace.
    if let Some(name) = bytes.strip_prefix(b"@") {
        return send_abstract(&socket, name, state);
    }
    socket.send_to(state.as_bytes(), path)?;
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(socket: &UnixDatagram, name: &[u8], state: &str) -> io::Result<()> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}
