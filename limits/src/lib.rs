//! Per-client-address limits for a public server: how many WebSockets one address holds open
//! at once, and how fast it may ask to join. Shared by the node's signaling surface and the
//! locator's join API.
//!
//! An IPv6 client is counted by its /64 (one subscriber's prefix), an IPv4 client by its
//! address. Loopback clients (the operator's load generator, a local reverse proxy) are exempt
//! unless [`IpLimitsConfig::limit_loopback`] is set. Time is an argument, so the limits are
//! tested without waiting.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Default [`IpLimitsConfig::max_connections`]: room for an office behind one NAT address.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 64;
/// Default [`IpLimitsConfig::joins_per_minute`].
pub const DEFAULT_JOINS_PER_MINUTE: u32 = 120;

/// The limits, per client address; also the command-line options that set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct IpLimitsConfig {
    /// WebSockets one client address (an IPv6 /64) may hold open at once.
    #[arg(long = "max-connections-per-ip", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: u32,
    /// Joins one client address may ask for per minute (and in one burst).
    #[arg(long = "max-joins-per-ip", default_value_t = DEFAULT_JOINS_PER_MINUTE)]
    pub joins_per_minute: u32,
    /// Apply the per-address limits to loopback clients too (exempt by default: a local load
    /// generator or reverse proxy).
    #[arg(long)]
    pub limit_loopback: bool,
}

impl Default for IpLimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            joins_per_minute: DEFAULT_JOINS_PER_MINUTE,
            limit_loopback: false,
        }
    }
}

impl IpLimitsConfig {
    /// The options that set these limits, for a nested command line (the embedded node).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--max-connections-per-ip={}", self.max_connections),
            format!("--max-joins-per-ip={}", self.joins_per_minute),
        ];
        if self.limit_loopback {
            args.push("--limit-loopback".into());
        }
        args
    }
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The address holds as many connections as allowed.
    #[error("too many connections from this address (at most {0} at once)")]
    TooManyConnections(u32),
    /// The address asked to join faster than allowed.
    #[error("too many joins from this address (at most {0} a minute): try again shortly")]
    JoinRate(u32),
}

/// The limits and what each address used of them.
#[derive(Debug)]
pub struct IpLimits {
    config: IpLimitsConfig,
    clients: Mutex<Clients>,
}

#[derive(Debug, Default)]
struct Clients {
    by_key: HashMap<IpAddr, Usage>,
    /// Map size at which idle entries are swept out next.
    sweep_at: usize,
    /// Time at which idle entries are swept out next, whatever the size.
    next_sweep: Option<Instant>,
}

#[derive(Debug)]
struct Usage {
    connections: u32,
    /// Joins left in the bucket, refilled at `joins_per_minute` a minute.
    joins: f64,
    refilled: Instant,
}

/// Entries kept before the first sweep of idle ones.
const FIRST_SWEEP: usize = 1024;
/// Longest time between two sweeps of idle entries.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl IpLimits {
    /// Limits as configured, with no client seen yet.
    pub fn new(config: IpLimitsConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            clients: Mutex::new(Clients {
                by_key: HashMap::new(),
                sweep_at: FIRST_SWEEP,
                next_sweep: None,
            }),
        })
    }

    /// The limits in force.
    pub fn config(&self) -> IpLimitsConfig {
        self.config
    }

    /// Admits one more connection from `ip`, held until the guard drops.
    pub fn connect(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<ConnectionGuard, Refusal> {
        let Some(key) = self.key(ip) else {
            return Ok(ConnectionGuard { limits: None });
        };
        let mut clients = self.lock();
        let usage = clients.usage(key, now, self.config);
        if usage.connections >= self.config.max_connections {
            return Err(Refusal::TooManyConnections(self.config.max_connections));
        }
        usage.connections += 1;
        Ok(ConnectionGuard {
            limits: Some((self.clone(), key)),
        })
    }

    /// Takes one join from `ip`'s budget.
    pub fn join(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let Some(key) = self.key(ip) else {
            return Ok(());
        };
        let mut clients = self.lock();
        let usage = clients.usage(key, now, self.config);
        if usage.joins < 1.0 {
            return Err(Refusal::JoinRate(self.config.joins_per_minute));
        }
        usage.joins -= 1.0;
        Ok(())
    }

    /// Addresses with an entry now (open connections or a bucket not yet refilled).
    pub fn tracked(&self) -> usize {
        self.lock().by_key.len()
    }

    /// The key `ip` is counted under, `None` when it is exempt.
    fn key(&self, ip: IpAddr) -> Option<IpAddr> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if ip.is_loopback() && !self.config.limit_loopback {
            return None;
        }
        Some(match ip {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
            v4 => v4,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Clients> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, key: IpAddr) {
        let mut clients = self.lock();
        if let Some(usage) = clients.by_key.get_mut(&key) {
            usage.connections = usage.connections.saturating_sub(1);
        }
    }
}

impl Clients {
    /// `key`'s usage with its bucket refilled to `now`; sweeps idle entries when the map grew.
    fn usage(&mut self, key: IpAddr, now: Instant, config: IpLimitsConfig) -> &mut Usage {
        let due = self.next_sweep.is_some_and(|at| now >= at);
        if self.by_key.len() >= self.sweep_at || due {
            self.by_key.retain(|_, u| !u.idle(now, config));
            self.sweep_at = (self.by_key.len() * 2).max(FIRST_SWEEP);
            self.next_sweep = None;
        }
        self.next_sweep.get_or_insert(now + SWEEP_EVERY);
        let usage = self.by_key.entry(key).or_insert(Usage {
            connections: 0,
            joins: f64::from(config.joins_per_minute),
            refilled: now,
        });
        usage.refill(now, config);
        usage
    }
}

impl Usage {
    fn refill(&mut self, now: Instant, config: IpLimitsConfig) {
        let per_minute = f64::from(config.joins_per_minute);
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.joins = (self.joins + elapsed * per_minute / 60.0).min(per_minute);
        self.refilled = now;
    }

    /// No connection open and a full bucket: forgetting it changes nothing.
    fn idle(&mut self, now: Instant, config: IpLimitsConfig) -> bool {
        self.refill(now, config);
        self.connections == 0 && self.joins >= f64::from(config.joins_per_minute)
    }
}

/// One admitted connection; dropping it gives the slot back.
#[derive(Debug)]
#[must_use = "the connection counts only while the guard lives"]
pub struct ConnectionGuard {
    limits: Option<(Arc<IpLimits>, IpAddr)>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some((limits, key)) = self.limits.take() {
            limits.release(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: u32, joins_per_minute: u32) -> Arc<IpLimits> {
        IpLimits::new(IpLimitsConfig {
            max_connections,
            joins_per_minute,
            limit_loopback: false,
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn connections_are_counted_per_address_until_their_guards_drop() {
        let limits = limits(2, 100);
        let now = Instant::now();
        let a = limits.connect(ip("192.0.2.1"), now).expect("first");
        let _b = limits.connect(ip("192.0.2.1"), now).expect("second");
        assert_eq!(
            limits.connect(ip("192.0.2.1"), now).unwrap_err(),
            Refusal::TooManyConnections(2)
        );
        let _other = limits
            .connect(ip("192.0.2.2"), now)
            .expect("another address");
        drop(a);
        let _c = limits
            .connect(ip("192.0.2.1"), now)
            .expect("a slot was given back");
    }

    #[test]
    fn joins_refill_at_the_configured_rate() {
        let limits = limits(10, 60);
        let start = Instant::now();
        for _ in 0..60 {
            limits
                .join(ip("198.51.100.7"), start)
                .expect("within the burst");
        }
        assert_eq!(
            limits.join(ip("198.51.100.7"), start).unwrap_err(),
            Refusal::JoinRate(60)
        );
        let later = start + Duration::from_millis(1500);
        limits
            .join(ip("198.51.100.7"), later)
            .expect("one refilled");
        assert!(limits.join(ip("198.51.100.7"), later).is_err());
        limits
            .join(ip("198.51.100.8"), start)
            .expect("another address has its own budget");
    }

    #[test]
    fn ipv6_clients_share_their_64_and_mapped_ipv4_counts_as_ipv4() {
        let limits = limits(1, 100);
        let now = Instant::now();
        let _a = limits.connect(ip("2001:db8:1:2::1"), now).expect("first");
        assert!(limits.connect(ip("2001:db8:1:2:ffff::9"), now).is_err());
        let _b = limits
            .connect(ip("2001:db8:1:3::1"), now)
            .expect("another /64");
        let _c = limits.connect(ip("203.0.113.5"), now).expect("v4");
        assert!(limits.connect(ip("::ffff:203.0.113.5"), now).is_err());
    }

    #[test]
    fn loopback_is_exempt_unless_limited() {
        let open = limits(1, 1);
        let now = Instant::now();
        let guards: Vec<_> = (0..5)
            .map(|_| open.connect(ip("127.0.0.1"), now).expect("exempt"))
            .collect();
        assert_eq!(guards.len(), 5);
        assert!((0..5).all(|_| open.join(ip("::1"), now).is_ok()));
        assert_eq!(open.tracked(), 0);

        let strict = IpLimits::new(IpLimitsConfig {
            max_connections: 1,
            joins_per_minute: 1,
            limit_loopback: true,
        });
        let _held = strict.connect(ip("127.0.0.1"), now).expect("first");
        assert!(strict.connect(ip("127.0.0.1"), now).is_err());
    }

    #[test]
    fn idle_addresses_are_forgotten_so_the_map_stays_bounded() {
        let limits = limits(4, 60);
        let start = Instant::now();
        for n in 0..5000u32 {
            let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            limits.join(address, start).expect("fresh address");
        }
        assert_eq!(limits.tracked(), 5000, "every bucket is still refilling");
        // a minute later every bucket is full again: the next call sweeps them all out
        let later = start + Duration::from_secs(61);
        for n in 0..100u32 {
            let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + n));
            let _guard = limits.connect(address, later).expect("fresh address");
        }
        assert_eq!(limits.tracked(), 100);
    }
}
