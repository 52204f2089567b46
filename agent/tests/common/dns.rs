//! A DNS server of the test's own on loopback (a kernel-picked UDP port,
//! never 53), answering A queries from a table the test changes as services
//! scale; the proxies under test are pointed at it, never at the host's
//! resolver. Included with `#[path = "common/dns.rs"] mod dns;` beside
//! `mod common;`.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

/// Name (lowercase, trailing dot) -> its A records and their TTL.
type Records = Mutex<HashMap<String, (Vec<Ipv4Addr>, u32)>>;

/// Answers A queries from a table it can be told to change; AAAA for a
/// known name gets no answer (NOERROR), an unknown name NXDOMAIN. Every
/// query's name is recorded.
pub struct DnsServer {
    pub addr: SocketAddr,
    records: Arc<Records>,
    queries: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsServer {
    pub async fn start() -> DnsServer {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let records = Arc::new(Mutex::new(HashMap::new()));
        let queries = Arc::new(Mutex::new(Vec::new()));
        let (r, q) = (records.clone(), queries.clone());
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..n], &r, &q) {
                    let _ = sock.send_to(&reply, peer).await;
                }
            }
        });
        DnsServer {
            addr,
            records,
            queries,
            task,
        }
    }

    /// `name` (lowercase, with the trailing dot) now answers `ips`; empty: NXDOMAIN.
    pub fn set(&self, name: &str, ips: &[Ipv4Addr], ttl: u32) {
        let mut records = self.records.lock().unwrap();
        if ips.is_empty() {
            records.remove(name);
        } else {
            records.insert(name.to_owned(), (ips.to_vec(), ttl));
        }
    }

    pub fn queries_for(&self, name: &str) -> usize {
        self.queries
            .lock()
            .unwrap()
            .iter()
            .filter(|q| *q == name)
            .count()
    }
}

/// The reply to one query (RFC 1035 section 4.1), or `None` for garbage.
fn answer(query: &[u8], records: &Records, queries: &Mutex<Vec<String>>) -> Option<Vec<u8>> {
    let mut pos = 12;
    let mut name = String::new();
    loop {
        let len = usize::from(*query.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        name.push_str(&String::from_utf8_lossy(query.get(pos..pos + len)?).to_lowercase());
        name.push('.');
        pos += len;
    }
    let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
    let question_end = pos + 4;
    queries.lock().unwrap().push(name.clone());
    let found = records.lock().unwrap().get(&name).cloned();
    let (rcode, ips, ttl) = match (found, qtype) {
        (None, _) => (3u8, Vec::new(), 0),
        (Some((ips, ttl)), 1) => (0, ips, ttl),
        (Some(_), _) => (0, Vec::new(), 0),
    };
    let mut reply = Vec::with_capacity(question_end + ips.len() * 16);
    reply.extend_from_slice(&query[..2]);
    // QR, opcode 0, RD copied, RA; the rcode.
    reply.push(0x80 | (query[2] & 0x01));
    reply.push(0x80 | rcode);
    reply.extend_from_slice(&1u16.to_be_bytes());
    reply.extend_from_slice(&(ips.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(query.get(12..question_end)?);
    for ip in ips {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        reply.extend_from_slice(&ttl.to_be_bytes());
        reply.extend_from_slice(&4u16.to_be_bytes());
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}
