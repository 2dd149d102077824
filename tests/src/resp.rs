//! Redis connections on sockets the tests make themselves (a fixed source port through the
//! VIP, a short timeout), spoken with the `redis` crate's own command encoder and reply
//! parser.

use std::{
    io::{self, BufReader, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    /// The reply as text (simple or bulk string).
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    fn from_value(value: redis::Value) -> Reply {
        match value {
            redis::Value::Okay => Reply::Simple("OK".into()),
            redis::Value::SimpleString(s) => Reply::Simple(s),
            redis::Value::ServerError(e) => Reply::Error(
                [Some(e.code()), e.details()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            redis::Value::Int(n) => Reply::Integer(n),
            redis::Value::BulkString(b) => Reply::Bulk(Some(b)),
            redis::Value::Nil => Reply::Bulk(None),
            redis::Value::Array(items) => {
                Reply::Array(items.into_iter().map(Reply::from_value).collect())
            }
            other => Reply::Error(format!("unexpected reply {other:?}")),
        }
    }
}

/// One connection to a Redis server.
pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    parser: redis::Parser,
}

impl Connection {
    /// Connects with `timeout` for the connect and every read and write.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        Connection::from_stream(stream, timeout)
    }

    pub fn from_stream(stream: TcpStream, timeout: Duration) -> io::Result<Connection> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            parser: redis::Parser::new(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.writer.local_addr()
    }

    /// Reads the next reply without sending anything (a message, once subscribed).
    pub fn receive(&mut self) -> io::Result<Reply> {
        self.read_reply()
    }

    /// Sends one command and reads its reply.
    pub fn command(&mut self, args: &[&str]) -> io::Result<Reply> {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        self.writer.write_all(&cmd.get_packed_command())?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        match self.parser.parse_value(&mut self.reader) {
            Ok(value) => Ok(Reply::from_value(value)),
            // Timeouts and resets stay what they are: tests tell a hang from a reset.
            Err(err) => {
                let kind = if err.is_timeout() {
                    io::ErrorKind::TimedOut
                } else if err.is_connection_dropped() {
                    io::ErrorKind::ConnectionReset
                } else if err.is_io_error() {
                    io::ErrorKind::Other
                } else {
                    io::ErrorKind::InvalidData
                };
                Err(io::Error::new(kind, err.to_string()))
            }
        }
    }
}
