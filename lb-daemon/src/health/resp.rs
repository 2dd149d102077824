//! A checker's own Redis connection: one TCP stream, a pipeline written with the `redis`
//! crate's encoder, replies decoded by its parser. No driver task, channel or timer of its
//! own: with a thousand backends checked every second, those cost more than the check.
//!
//! The only thing done here by hand is finding where a reply ends in the bytes read so far
//! ([`reply_len`]), so a reply split across reads is handed to the parser whole.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// How deep replies may nest: the check's replies (`+PONG`, `+OK`, a bulk `INFO`) do not
/// nest at all; a server that nests deeper is not answering as Redis does to us.
const MAX_DEPTH: usize = 4;
/// The most a check reads before giving up on a reply (`INFO` is a few kilobytes).
pub const MAX_REPLY: usize = 1 << 20;

/// The length of the first complete RESP2 reply in `buf`: `Ok(None)` when more bytes are
/// needed, `Err` when the bytes are no RESP2 reply (or nest deeper than [`MAX_DEPTH`]).
pub fn reply_len(buf: &[u8]) -> Result<Option<usize>, String> {
    reply_len_at(buf, 0)
}

fn reply_len_at(buf: &[u8], depth: usize) -> Result<Option<usize>, String> {
    fn number(text: &[u8]) -> Result<i64, String> {
        std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("bad length {:?}", String::from_utf8_lossy(text)))
    }
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
        return Err(format!("unexpected reply type {:?}", kind as char));
    }
    // The header line: the type byte, its text, CRLF.
    let Some(end) = buf[1..].windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let (head, head_len) = (&buf[1..1 + end], end + 3);
    match kind {
        b'$' => match number(head)? {
            -1 => Ok(Some(head_len)),
            n if n >= 0 => {
                let total = head_len + n as usize + 2;
                Ok((buf.len() >= total).then_some(total))
            }
            n => Err(format!("bulk length {n}")),
        },
        b'*' => {
            let n = number(head)?;
            if n < 0 {
                return Ok(Some(head_len));
            }
            if depth >= MAX_DEPTH {
                return Err(format!("arrays nested deeper than {MAX_DEPTH}"));
            }
            let mut at = head_len;
            for _ in 0..n {
                match reply_len_at(&buf[at..], depth + 1)? {
                    Some(len) => at += len,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        _ => Ok(Some(head_len)),
    }
}

/// Why an exchange failed: the connection is then dropped.
pub enum ExchangeError {
    Io(std::io::Error),
    Closed,
    Protocol(String),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::Io(err) => write!(f, "{err}"),
            ExchangeError::Closed => f.write_str("connection closed by the server"),
            ExchangeError::Protocol(what) => write!(f, "not a Redis reply: {what}"),
        }
    }
}

/// One connection to a Redis.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    opened: std::time::Instant,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            opened: std::time::Instant::now(),
        })
    }

    /// How long ago it was opened.
    pub fn age(&self) -> std::time::Duration {
        self.opened.elapsed()
    }

    /// Sends `pipe` and reads its `replies` replies (server errors are replies:
    /// `Value::ServerError`).
    pub async fn exchange(
        &mut self,
        pipe: &redis::Pipeline,
        replies: usize,
    ) -> Result<Vec<redis::Value>, ExchangeError> {
        self.stream
            .write_all(&pipe.get_packed_pipeline())
            .await
            .map_err(ExchangeError::Io)?;
        self.buf.clear();
        let mut values = Vec::with_capacity(replies);
        let mut at = 0;
        while values.len() < replies {
            match reply_len(&self.buf[at..]).map_err(ExchangeError::Protocol)? {
                Some(len) => {
                    let value = redis::parse_redis_value(&self.buf[at..at + len])
                        .map_err(|err| ExchangeError::Protocol(err.to_string()))?;
                    values.push(value);
                    at += len;
                }
                None => {
                    if self.buf.len() > MAX_REPLY {
                        return Err(ExchangeError::Protocol(format!(
                            "no complete reply in {MAX_REPLY} bytes"
                        )));
                    }
                    let read = self
                        .stream
                        .read_buf(&mut self.buf)
                        .await
                        .map_err(ExchangeError::Io)?;
                    if read == 0 {
                        return Err(ExchangeError::Closed);
                    }
                }
            }
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::reply_len;

    #[test]
    fn finds_where_each_kind_of_reply_ends() {
        let replies: [&[u8]; 7] = [
            b"+PONG\r\n",
            b"-LOADING Redis is loading the dataset in memory\r\n",
            b":42\r\n",
            b"$5\r\nhello\r\n",
            b"$-1\r\n",
            b"*2\r\n$4\r\nrole\r\n:1\r\n",
            b"$10\r\nab\r\ncd\r\nef\r\n",
        ];
        for reply in replies {
            let mut buf = reply.to_vec();
            buf.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(reply_len(&buf), Ok(Some(reply.len())), "{reply:?}");
            for cut in 0..reply.len() {
                assert_eq!(reply_len(&reply[..cut]), Ok(None), "{reply:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn rejects_what_is_no_reply() {
        assert!(reply_len(b"HTTP/1.1 400 Bad Request\r\n").is_err());
        assert!(reply_len(b"$x\r\n").is_err());
        assert!(reply_len(b"$-5\r\n").is_err());
    }

    /// bytes from a backend must never panic the checker. A reply starting with
    /// CRLF (any non-Redis service that answers with a blank line) makes `line()` slice
    /// `buf[1..0]`.
    #[test]
    fn a_reply_starting_with_crlf_is_an_error_not_a_panic() {
        let got = std::panic::catch_unwind(|| reply_len(b"\r\n+PONG\r\n"));
        assert!(
            matches!(got, Ok(Err(_))),
            "reply_len panicked on a reply starting with CRLF"
        );
    }

    /// a backend answering deeply nested arrays (`*1\r\n` repeated) overflows the
    /// stack of the thread that runs every check (the daemon's one runtime thread, 8 MiB
    /// main-thread stack): the whole daemon aborts. Run alone: a stack overflow aborts the
    /// test binary.
    #[test]
    fn deeply_nested_arrays_do_not_overflow_the_stack() {
        let nested = b"*1\r\n".repeat(2_000_000);
        let got = std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || reply_len(&nested).is_ok())
            .unwrap()
            .join();
        assert!(got.is_ok());
    }
}
