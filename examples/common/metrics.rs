//! `--metrics ADDR`: the server's statistics over HTTP, in the Prometheus
//! text format ([`frontdesk::ServerControl::to_prometheus`]: the stats and
//! the connections accepted through each listener), served by a second
//! frontdesk server in the `Handler` mode: the crate serving its own
//! numbers.
//!
//! It speaks just enough HTTP/1.1 for a scraper (Prometheus, `curl`):
//!
//! | request | answer |
//! |---|---|
//! | `GET /metrics` (a query string is ignored) | `200`, the metrics |
//! | `HEAD /metrics` | `200`, the headers only |
//! | another method on `/metrics` | `405`, `Allow: GET, HEAD` |
//! | another path | `404` |
//! | not an HTTP/1.0 or 1.1 request | `400` |
//! | a request line over 1 KiB | `414` |
//! | a header line over 1 KiB, or more than 8 KiB of headers | `431` |
//!
//! One request per connection (`Connection: close`); a request and its
//! answer have 5 seconds in all; two workers, and at most eight scrapers
//! waiting for one, the next ones closed at once.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use frontdesk::{
    Connection, Handler, LineError, LineReader, Overload, Server, ServerBuilder, ServerControl,
};

/// The longest request line or header line read.
const MAX_LINE: usize = 1024;
/// The most bytes of headers read, line ends included.
const MAX_HEADERS: usize = 8 * 1024;
/// How long a scraper has to send its request and read the answer.
const REQUEST_TIME: Duration = Duration::from_secs(5);

/// The metrics server's settings: small, since a scraper asks a few
/// times a minute, and quick to stop.
pub(crate) fn builder() -> ServerBuilder {
    Server::builder()
        .workers(2)
        .queue(8)
        .overload(Overload::Reject)
        .idle_timeout(REQUEST_TIME)
        .write_timeout(REQUEST_TIME)
        .shutdown_timeout(Duration::from_millis(500))
        // The server it reports on tells the service manager.
        .notify_service_manager(false)
}

/// Answers `GET /metrics` with the stats of the server `of` controls.
pub(crate) struct Metrics {
    pub(crate) of: ServerControl,
}

impl Handler for Metrics {
    fn handle(&self, conn: &mut Connection) -> io::Result<()> {
        conn.set_deadline(Instant::now() + REQUEST_TIME);
        let response = match read_request(conn) {
            Ok(Some(request)) => self.answer(&request),
            // Closed before it asked anything.
            Ok(None) => return Ok(()),
            Err(Refusal::Status(status)) => error_response(status),
            Err(Refusal::Io(error)) => return Err(error),
        };
        // The connection closes when this returns (gently: whatever the
        // client still sends is read and dropped, so it gets the answer).
        (&*conn).write_all(&response)
    }
}

impl Metrics {
    fn answer(&self, request: &Request) -> Vec<u8> {
        // The query string, if any, changes nothing.
        let path = request.target.split('?').next().unwrap_or_default();
        if path != "/metrics" {
            return error_response(404);
        }
        match request.method.as_str() {
            "GET" | "HEAD" => {
                let body = self.of.to_prometheus();
                response(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    body.as_bytes(),
                    request.method == "HEAD",
                    "",
                )
            }
            _ => response(
                405,
                "text/plain; charset=utf-8",
                b"method not allowed\n",
                false,
                "Allow: GET, HEAD\r\n",
            ),
        }
    }
}

/// The parts of a request the answer depends on.
#[derive(Debug)]
struct Request {
    method: String,
    target: String,
}

/// Why no request was read.
enum Refusal {
    /// Answer with this status.
    Status(u16),
    /// The connection failed or timed out: nothing to answer.
    Io(io::Error),
}

/// Reads the request line and the headers (and ignores the headers).
/// `Ok(None)` when the client closed before sending anything.
fn read_request(conn: &Connection) -> Result<Option<Request>, Refusal> {
    let mut lines = LineReader::new(conn, MAX_LINE);
    let request = match lines.read_line_str() {
        Ok(line) => parse_request_line(line).ok_or(Refusal::Status(400))?,
        Err(LineError::Closed { partial: 0 }) => return Ok(None),
        Err(LineError::TooLong { .. }) => return Err(Refusal::Status(414)),
        Err(error) => return Err(refusal(error)),
    };
    let mut headers = 0;
    loop {
        let line = match lines.read_line_str() {
            Ok(line) => line,
            Err(LineError::TooLong { .. }) => return Err(Refusal::Status(431)),
            Err(error) => return Err(refusal(error)),
        };
        if line.is_empty() {
            return Ok(Some(request));
        }
        headers += line.len() + 2;
        if headers > MAX_HEADERS {
            return Err(Refusal::Status(431));
        }
        // `name: value`, the name a token (no spaces before the colon).
        match line.split_once(':') {
            Some((name, _)) if !name.is_empty() && name.bytes().all(is_token) => {}
            _ => return Err(Refusal::Status(400)),
        }
    }
}

/// The status for a line that could not be read: a request that ends
/// half-way or is not text is garbage; a broken connection gets nothing.
fn refusal(error: LineError) -> Refusal {
    match error {
        LineError::Closed { .. } | LineError::InvalidUtf8 { .. } => Refusal::Status(400),
        error => Refusal::Io(error.into()),
    }
}

/// `METHOD TARGET HTTP/1.x`, with a target in origin form (`/path`).
fn parse_request_line(line: &str) -> Option<Request> {
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = parts.next().is_none()
        && !method.is_empty()
        && method.bytes().all(is_token)
        && target.starts_with('/')
        && target.bytes().all(|b| b.is_ascii_graphic())
        && matches!(version, "HTTP/1.1" | "HTTP/1.0");
    valid.then(|| Request {
        method: method.to_string(),
        target: target.to_string(),
    })
}

/// A byte of an HTTP token (RFC 9110, section 5.6.2).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn error_response(status: u16) -> Vec<u8> {
    let body = match status {
        400 => "bad request\n",
        404 => "not found: try /metrics\n",
        414 => "request line too long\n",
        431 => "request headers too large\n",
        _ => "error\n",
    };
    response(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        false,
        "",
    )
}

/// A whole HTTP/1.1 response that closes the connection; `head_only`
/// leaves the body out (for `HEAD`), not its length.
fn response(
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    extra_headers: &str,
) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\n\
         Content-Type: {content_type}\r\n\
         Content-Length: {}\r\n\
         {extra_headers}\
         Connection: close\r\n\
         \r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}
