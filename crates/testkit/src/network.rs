//! Several hosts on one machine, for tests that cut network links: each host is a network
//! namespace of its own with one address on a private subnet, and every host's link goes to a
//! bridge in one more namespace, the switch. A link cut on the switch side drops every packet to
//! and from that host with no reset and no FIN, as a pulled cable or a dead switch port does.
//!
//! Every address lives inside the namespaces made here; nothing is added to the machine's own
//! network. Only the network namespace is entered (`nsenter --net`), so a FUSE mount made on a
//! host is visible to the test as any other mount.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::launcher::Launcher;

/// The hosts' subnet (a /24); host `n` is `10.231.0.n`.
const SUBNET: [u8; 3] = [10, 231, 0];

/// One host of a [`Network`]: the namespace to start its processes in, and its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The network namespace (`/run/netns/NAME`).
    pub netns: PathBuf,
    /// Its one address.
    pub ip: Ipv4Addr,
    /// The switch's end of its link (the one cut).
    port: String,
}

/// Hosts joined by a switch; removed with every link when dropped.
pub struct Network {
    /// Runs the `ip` commands: a process started before any file of a mount was open, so that
    /// no exec closes one (a close is a FLUSH, which a mount cut off may not answer for long).
    launcher: Launcher,
    /// Prefix of every namespace and interface name made for this network.
    id: String,
    /// Hosts made so far, by number (from 1).
    hosts: Mutex<Vec<Host>>,
}

static NETWORKS: AtomicU32 = AtomicU32::new(0);

impl Network {
    /// Every host's address is in this subnet.
    pub const SUBNET: &'static str = "10.231.0.0/24";

    /// A switch with no host yet, its commands run by `launcher`. Needs root (or CAP_NET_ADMIN
    /// and CAP_SYS_ADMIN) and `ip`.
    pub(crate) fn new(launcher: Launcher) -> io::Result<Network> {
        // Interface names are at most 15 bytes and made in the machine's namespace first.
        let n = NETWORKS.fetch_add(1, Ordering::Relaxed) % 100;
        let id = format!("ek{}{n:02}", std::process::id() % 10_000);
        let network = Network {
            launcher,
            id,
            hosts: Mutex::new(Vec::new()),
        };
        let switch = network.switch();
        network.ip(&["netns", "add", &switch])?;
        network.ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        network.ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        Ok(network)
    }

    fn ip(&self, args: &[&str]) -> io::Result<()> {
        let argv: Vec<&str> = std::iter::once("ip").chain(args.iter().copied()).collect();
        match self.launcher.run(&argv)? {
            (0, _) => Ok(()),
            (code, output) => Err(io::Error::other(format!(
                "ip {} (exit {code}): {output}",
                args.join(" ")
            ))),
        }
    }

    fn switch(&self) -> String {
        format!("{}sw", self.id)
    }

    /// A new host on the switch.
    pub fn add_host(&self) -> io::Result<Host> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let n = hosts.len() + 1;
        if n > 250 {
            return Err(io::Error::other("a test network has at most 250 hosts"));
        }
        let (netns, side, port) = (
            format!("{}h{n}", self.id),
            format!("{}v{n}", self.id),
            format!("{}s{n}", self.id),
        );
        let address = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], n as u8);
        let switch = self.switch();
        self.ip(&["netns", "add", &netns])?;
        self.ip(&["link", "add", &side, "type", "veth", "peer", "name", &port])?;
        self.ip(&["link", "set", &side, "netns", &netns])?;
        self.ip(&["link", "set", &port, "netns", &switch])?;
        self.ip(&["-n", &switch, "link", "set", &port, "master", "br0"])?;
        self.ip(&["-n", &switch, "link", "set", &port, "up"])?;
        self.ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            &side,
        ])?;
        self.ip(&["-n", &netns, "link", "set", &side, "up"])?;
        self.ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        let host = Host {
            netns: PathBuf::from("/run/netns").join(&netns),
            ip: address,
            port,
        };
        hosts.push(host.clone());
        Ok(host)
    }

    /// Cuts `host`'s link: its packets are dropped both ways until [`Network::reconnect`].
    pub fn cut(&self, host: &Host) {
        self.ip(&["-n", &self.switch(), "link", "set", &host.port, "down"])
            .unwrap_or_else(|e| panic!("cutting the link of {}: {e}", host.ip));
    }

    /// Puts `host`'s link back.
    pub fn reconnect(&self, host: &Host) {
        self.ip(&["-n", &self.switch(), "link", "set", &host.port, "up"])
            .unwrap_or_else(|e| panic!("reconnecting {}: {e}", host.ip));
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let hosts = self.hosts.get_mut().unwrap_or_else(|p| p.into_inner());
        for host in hosts.iter() {
            if let Some(name) = host.netns.file_name().and_then(|n| n.to_str()) {
                let _ = self.launcher.run(&["ip", "netns", "del", name]);
            }
        }
        let _ = self.launcher.run(&["ip", "netns", "del", &self.switch()]);
    }
}

/// The calling thread moved into a host's network namespace (and the threads and processes it
/// starts meanwhile); moved back when dropped.
pub struct OnHost {
    home: std::fs::File,
}

impl OnHost {
    /// Moves the calling thread onto `host`.
    pub fn enter(host: &Host) -> io::Result<OnHost> {
        let home = std::fs::File::open("/proc/thread-self/ns/net")?;
        set_netns(&std::fs::File::open(&host.netns)?)?;
        Ok(OnHost { home })
    }
}

impl Drop for OnHost {
    fn drop(&mut self) {
        if let Err(e) = set_netns(&self.home) {
            panic!("cannot move the test thread back to its network namespace: {e}");
        }
    }
}

fn set_netns(ns: &std::fs::File) -> io::Result<()> {
    // SAFETY: setns on a valid namespace descriptor changes only this thread's namespace.
    match unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}
