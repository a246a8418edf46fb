//! A raw RESP connection for process tests that compare bytes: replies, pushes and Pub/Sub
//! messages read one frame at a time, exactly as the server wrote them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A raw RESP connection.
pub(crate) struct Conn(pub(crate) TcpStream);

impl Conn {
    pub(crate) fn to(addr: std::net::SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn(s)
    }

    pub(crate) fn send(&mut self, args: &[&[u8]]) {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        self.0.write_all(&req).unwrap();
    }

    /// One reply, as its raw bytes.
    pub(crate) fn read(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.read_into(&mut out);
        out
    }

    pub(crate) fn read_into(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        let mut b = [0u8; 1];
        while !out[start..].ends_with(b"\r\n") {
            assert_eq!(self.0.read(&mut b).unwrap(), 1, "closed");
            out.push(b[0]);
        }
        let head = out[start];
        let n: i64 = String::from_utf8_lossy(&out[start + 1..out.len() - 2])
            .parse()
            .unwrap_or(-1);
        match head {
            b'$' if n >= 0 => {
                let mut data = vec![0u8; n as usize + 2];
                self.0.read_exact(&mut data).unwrap();
                out.extend_from_slice(&data);
            }
            b'*' | b'>' | b'~' => {
                for _ in 0..n.max(0) {
                    self.read_into(out);
                }
            }
            b'%' => {
                for _ in 0..2 * n.max(0) {
                    self.read_into(out);
                }
            }
            _ => {}
        }
    }

    pub(crate) fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(args);
        self.read()
    }
}

impl Conn {
    /// This connection's `CLIENT ID`.
    pub(crate) fn id(&mut self) -> String {
        let r = String::from_utf8(self.call(&[b"CLIENT", b"ID"])).unwrap();
        r.trim_start_matches(':').trim_end().to_string()
    }
}
