//! Inbound steering end to end on a simulated node, as root: sk_lookup in the
//! server pod's namespace hands connections to its ports to the proxy's inbound
//! listener; the proxy reaches the application from 127.0.0.6, which passes.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};
use weir::datapath::{Datapath, IngressAttachment, OrigDst};
use weir::inpod::{InboundListeners, connect_to_app};
use weir_common::{INBOUND_FLAG_ALL_PORTS, InboundSettings, MAX_INBOUND_PORTS};
use weir_tests::exchange::{Accepted, Exchange, Placement, exchange_with};
use weir_tests::service::ServiceServer;
use weir_tests::support::{require_root, sim_client};
use weir_tests::{SimNode, SimPod};

fn ports(list: &[u16]) -> InboundSettings {
    let mut settings = InboundSettings::default();
    assert!(list.len() <= MAX_INBOUND_PORTS);
    settings.ports[..list.len()].copy_from_slice(list);
    settings
}

/// Pod A (client) and pod B (server, app on :8080 and :8081) with pod B's
/// inbound steered. Field order is drop order.
struct Steered {
    attachment: IngressAttachment,
    listeners: InboundListeners,
    _app_8080: ServiceServer,
    _app_8081: ServiceServer,
    _datapath: Datapath,
    client: SimPod,
    server: SimPod,
    _node: SimNode,
}

impl Steered {
    fn new(settings: InboundSettings) -> Result<Self> {
        require_root();
        let node = SimNode::new()?;
        let client = node.add_pod("client")?;
        let server = node.add_pod("server")?;
        let app_8080 = ServiceServer::start_app(server.netns(), "[::]:8080".parse()?)?;
        let app_8081 = ServiceServer::start_app(server.netns(), "[::]:8081".parse()?)?;
        let mut datapath = Datapath::load()?;
        let listeners = InboundListeners::bind(server.netns())?;
        let addrs = [IpAddr::V4(server.ip4), IpAddr::V6(server.ip6)];
        let attachment = datapath.attach_ingress(
            server.netns(),
            &server.uid,
            &addrs,
            settings,
            &listeners.v4,
            &listeners.v6,
        )?;
        Ok(Self {
            attachment,
            listeners,
            _app_8080: app_8080,
            _app_8081: app_8081,
            _datapath: datapath,
            client,
            server,
            _node: node,
        })
    }

    /// Pod A connects to `target`; a stand-in proxy on the inbound listener
    /// forwards to the application from 127.0.0.6 (IPv4) and relays its answer.
    fn run(&self, target: SocketAddr) -> Result<Exchange> {
        let listener = if target.is_ipv4() {
            &self.listeners.v4
        } else {
            &self.listeners.v6
        };
        exchange_with(
            &self.client,
            &sim_client(),
            Placement::InPod,
            target,
            listener,
            |stream, peer| self.proxy_inbound(stream, peer),
        )
    }

    fn proxy_inbound(&self, mut stream: TcpStream, peer: SocketAddr) -> Result<Accepted> {
        // The accepted socket's local address is where the client was going.
        let local = stream.local_addr()?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut message = String::new();
        stream.read_to_string(&mut message)?;
        let answer = if local.is_ipv4() {
            let mut app = connect_to_app(self.server.netns(), local)?;
            app.set_read_timeout(Some(Duration::from_secs(5)))?;
            app.write_all(message.as_bytes())?;
            app.shutdown(Shutdown::Write)?;
            let mut answer = String::new();
            app.read_to_string(&mut answer)
                .context("reading the application's answer")?;
            answer
        } else {
            // ::6 is not on the simulated pod's loopback; IPv6 is checked up to
            // the proxy's accept.
            "proxy accepted\n".to_owned()
        };
        stream.write_all(format!("via weir: {answer}").as_bytes())?;
        Ok(Accepted {
            peer,
            local,
            orig_dst: Some(OrigDst(local)),
            message,
        })
    }
}

fn assert_steered(exchange: &Exchange, client: &SimPod, target: SocketAddr) -> Accepted {
    assert!(exchange.client_succeeded, "{exchange:?}");
    let accepted = exchange
        .accepted
        .as_ref()
        .unwrap_or_else(|| panic!("not steered to the proxy: {exchange:?}"));
    assert_eq!(
        accepted.local, target,
        "original destination from the accepted socket's local address"
    );
    let client_ip = if target.is_ipv4() {
        IpAddr::V4(client.ip4)
    } else {
        IpAddr::V6(client.ip6)
    };
    assert_eq!(
        accepted.peer.ip(),
        client_ip,
        "the proxy sees the real client"
    );
    Accepted {
        peer: accepted.peer,
        local: accepted.local,
        orig_dst: accepted.orig_dst,
        message: accepted.message.clone(),
    }
}

#[test]
fn listed_port_is_steered_to_the_proxy_which_reaches_the_app_from_127_0_0_6() -> Result<()> {
    let env = Steered::new(ports(&[8080]))?;
    let target = SocketAddr::new(IpAddr::V4(env.server.ip4), 8080);
    let result = env.run(target)?;
    assert_steered(&result, &env.client, target);
    // The application saw the proxy's reserved source, and answered through it.
    assert!(
        result
            .client_stdout
            .starts_with(&format!("via weir: app at {target} saw 127.0.0.6:")),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn unlisted_port_goes_straight_to_the_app() -> Result<()> {
    let env = Steered::new(ports(&[8080]))?;
    let target = SocketAddr::new(IpAddr::V4(env.server.ip4), 8081);
    let result = env.run(target)?;
    assert!(result.accepted.is_none(), "{result:?}");
    assert!(
        result
            .client_stdout
            .starts_with(&format!("app at {target} saw {}:", env.client.ip4)),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn all_ports_mode_and_ipv6_are_steered() -> Result<()> {
    let env = Steered::new(InboundSettings {
        flags: INBOUND_FLAG_ALL_PORTS,
        ..InboundSettings::default()
    })?;
    for port in [8080, 8081] {
        let target = SocketAddr::new(IpAddr::V4(env.server.ip4), port);
        assert_steered(&env.run(target)?, &env.client, target);
        let target6 = SocketAddr::new(IpAddr::V6(env.server.ip6), port);
        let result = env.run(target6)?;
        assert_steered(&result, &env.client, target6);
        assert_eq!(result.client_stdout, "via weir: proxy accepted\n");
    }
    Ok(())
}

#[test]
fn changing_ports_and_detaching_take_effect_at_once() -> Result<()> {
    let env = Steered::new(ports(&[8080]))?;
    let target = SocketAddr::new(IpAddr::V4(env.server.ip4), 8080);
    env.attachment.update(ports(&[8081]))?;
    let direct = env.run(target)?;
    assert!(
        direct.accepted.is_none(),
        "port 8080 is no longer listed: {direct:?}"
    );
    env.attachment.update(ports(&[8080]))?;
    assert_steered(&env.run(target)?, &env.client, target);

    let Steered {
        attachment,
        listeners,
        client,
        server,
        _app_8080,
        _app_8081,
        _datapath,
        _node,
    } = env;
    drop(attachment);
    let after = exchange_with(
        &client,
        &sim_client(),
        Placement::InPod,
        target,
        &listeners.v4,
        |_, _| anyhow::bail!("a detached pod must not be steered"),
    )?;
    assert!(
        after
            .client_stdout
            .starts_with(&format!("app at {target} saw {}:", client.ip4)),
        "{after:?}"
    );
    drop(server);
    Ok(())
}
