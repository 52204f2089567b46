//! Open connections per client address on a bound listener, so one client
//! cannot take every descriptor the listener's other clients need
//! (`limits.max_connections_per_client`). The table holds only addresses
//! with a connection open: its size is bounded by the open connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct ClientConnections {
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// Held for the life of an admitted connection; gives its place back on drop.
#[derive(Debug)]
pub struct ClientPermit {
    table: Arc<ClientConnections>,
    client: IpAddr,
}

impl ClientConnections {
    /// A place for one more connection from `client`, unless it has `max` open.
    pub fn admit(self: &Arc<Self>, client: IpAddr, max: u32) -> Option<ClientPermit> {
        let mut open = self.open.lock().ok()?;
        let count = open.entry(client).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(ClientPermit {
            table: Arc::clone(self),
            client,
        })
    }

    /// Clients with a connection open.
    pub fn clients(&self) -> usize {
        self.open.lock().map(|open| open.len()).unwrap_or(0)
    }
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        if let Ok(mut open) = self.table.open.lock()
            && let Some(count) = open.get_mut(&self.client)
        {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_is_capped_alone_and_forgotten_when_gone() {
        let table = Arc::new(ClientConnections::default());
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "::1".parse().unwrap());
        let a1 = table.admit(a, 2).unwrap();
        let a2 = table.admit(a, 2).unwrap();
        assert!(table.admit(a, 2).is_none(), "a third from the same client");
        let b1 = table.admit(b, 2).unwrap();
        assert_eq!(table.clients(), 2);
        drop(a1);
        let a3 = table.admit(a, 2).unwrap();
        drop((a2, a3, b1));
        assert_eq!(table.clients(), 0, "no entry outlives its connections");
    }
}
