//! A pod's application in tests: connects to an address, sends a message, closes
//! its sending side and prints whatever comes back.
//!
//! usage: sim-client ADDR MESSAGE

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, message] = args.as_slice() else {
        eprintln!("usage: sim-client ADDR MESSAGE");
        std::process::exit(2);
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("sim-client: bad address {addr}: {e}");
            std::process::exit(2);
        }
    };
    match exchange(addr, message) {
        Ok(reply) => print!("{reply}"),
        Err(e) => {
            eprintln!("sim-client: {addr}: {e}");
            std::process::exit(1);
        }
    }
}

fn exchange(addr: SocketAddr, message: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(message.as_bytes())?;
    stream.shutdown(Shutdown::Write)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}
