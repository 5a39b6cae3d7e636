//! Port mapping on the LAN's gateway: UPnP IGD (`igd-next`) and NAT-PMP/PCP (`crab_nat`).
//!
//! Owns one background task per [`PortMapper`]. The task finds the gateway, maps each
//! requested (protocol, internal port) to the same external port for this host's LAN
//! address, renews each lease before it runs out ([`renew_after`]), retries with back-off
//! after a failure and, when [`PortMapper::stop`] is awaited, removes what it mapped.
//!
//! Policy:
//! - Discovery runs both ways at once, each bounded: SSDP multicast (UPnP, [`SSDP_TIMEOUT`])
//!   and a NAT-PMP external-address request to the default route's gateway (read from
//!   `/proc/net/route`, as `natpmpc` does). A UPnP device is believed only when it is the
//!   default route's gateway (any host on the LAN can answer SSDP; see
//!   [`upnp_device_allowed`]). UPnP is used when it answers, NAT-PMP/PCP otherwise (PCP
//!   first, NAT-PMP when PCP fails); after every mapping failed through one kind of
//!   gateway, the other is used when both answer.
//! - Leases of [`LEASE_SECS`]; a UPnP gateway that only takes permanent mappings (error
//!   725) gets lease 0, as libtorrent does, and is re-checked at half [`LEASE_SECS`]. A
//!   UPnP port taken by another host (718) is mapped to a random external port (at most
//!   [`MAX_PORT_TRIES`] tries); NAT-PMP/PCP take the gateway's answer. A NAT-PMP/PCP
//!   answer with lifetime 0 means "no mapping" (RFC 6886 §3.3) and is a failure.
//! - Whatever a request may have mapped is recorded before the request is sent, and kept
//!   after a failed renewal, so a stop (seen at once, even mid-request) removes it; the
//!   removals run all at once, each within [`REQUEST_TIMEOUT`].
//! - Every request has a deadline ([`REQUEST_TIMEOUT`]); failures wait [`RETRY_FIRST`],
//!   doubling up to [`RETRY_MAX`], so no gateway is ever asked in a loop. Errors are cut
//!   to [`MAX_ERROR`] characters.
//! - An external address in a private range is reported as it is, never refused (a
//!   router behind another NAT still forwards); [`PortMapStatus::public_addr`] gives it
//!   only when it is global, for what is told to the world (magnets).
//!
//! State is a [`PortMapStatus`] behind a `watch` channel, written only by the task. No
//! locks are held anywhere in this module.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

/// Most (protocol, port) pairs one mapper maps.
pub const MAX_MAPPINGS: usize = 8;
/// Lease asked for, seconds (NAT-PMP lifetime and UPnP lease duration alike).
pub const LEASE_SECS: u32 = 3600;
/// How long SSDP discovery waits for the gateway's answer.
pub const SSDP_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline of one request to the gateway (a SOAP call, or a NAT-PMP/PCP exchange with
/// its retransmissions).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait after a failure; doubled on each failure in a row.
pub const RETRY_FIRST: Duration = Duration::from_secs(30);
/// Longest wait between two attempts after failures.
pub const RETRY_MAX: Duration = Duration::from_secs(15 * 60);
/// A lease is never renewed sooner than this after it was granted.
pub const MIN_RENEW: Duration = Duration::from_secs(30);
/// Longest description sent to the gateway.
pub const MAX_DESCRIPTION: usize = 64;
/// Most bytes of `/proc/net/route` read.
const MAX_ROUTE_FILE: u64 = 64 * 1024;
/// Shortest time between two renewals of a lease, whatever the gateway granted.
pub const RENEW_FLOOR: Duration = Duration::from_secs(1);
/// Longest error text kept in the state (a gateway's answer can be a whole page).
pub const MAX_ERROR: usize = 200;
/// Most mappings per port that may linger on the gateway (unconfirmed removals) and are
/// removed on stop.
const MAX_STALE: usize = 4;
/// External ports tried by UPnP for one mapping when the wanted one is another host's.
pub const MAX_PORT_TRIES: usize = 3;

/// The transport a mapping is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// How a mapping was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    #[serde(rename = "UPnP")]
    Upnp,
    #[serde(rename = "NAT-PMP")]
    NatPmp,
    #[serde(rename = "PCP")]
    Pcp,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Upnp => "UPnP",
            Method::NatPmp => "NAT-PMP",
            Method::Pcp => "PCP",
        })
    }
}

/// Where one mapping stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "State")]
pub enum MappingState {
    /// Being asked for (the first time, or again after a failure).
    Mapping,
    /// Granted: `expires` is Unix time in seconds, `None` for a permanent mapping.
    Mapped {
        #[serde(rename = "Expires")]
        expires: Option<u64>,
        #[serde(rename = "LeaseSecs")]
        lease_secs: u32,
    },
    /// The last attempt failed; another follows after a back-off.
    Failed {
        #[serde(rename = "Error")]
        error: String,
    },
    /// Removed from the gateway on a clean exit.
    Removed,
}

/// One requested mapping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MappingStatus {
    pub protocol: Protocol,
    pub internal_port: u16,
    pub external_port: Option<u16>,
    pub method: Option<Method>,
    #[serde(flatten)]
    pub state: MappingState,
}

/// Everything the mapper knows, as published on its `watch` channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortMapStatus {
    pub mappings: Vec<MappingStatus>,
    /// The gateway's external address (UPnP GetExternalIPAddress, NAT-PMP public
    /// address, PCP's assigned address); may be private when the router is behind
    /// another NAT.
    pub external_ip: Option<IpAddr>,
    /// The gateway in use.
    pub gateway: Option<IpAddr>,
    /// This host's address as the gateway sees it (what mappings point to).
    pub local_ip: Option<IpAddr>,
}

impl PortMapStatus {
    /// No mapping is still in its first attempt.
    pub fn settled(&self) -> bool {
        !self
            .mappings
            .iter()
            .any(|m| m.state == MappingState::Mapping)
    }

    /// `EXTERNAL_IP:EXTERNAL_PORT` of a granted mapping of `internal_port`.
    pub fn external_addr(&self, protocol: Protocol, internal_port: u16) -> Option<SocketAddr> {
        let m = self
            .mappings
            .iter()
            .find(|m| m.protocol == protocol && m.internal_port == internal_port)?;
        match (&m.state, self.external_ip, m.external_port) {
            (MappingState::Mapped { .. }, Some(ip), Some(port)) => Some(SocketAddr::new(ip, port)),
            _ => None,
        }
    }

    /// [`PortMapStatus::external_addr`] when its address is global (not private, not
    /// CGNAT: behind such a router there is another NAT the mapping does not cross).
    pub fn public_addr(&self, protocol: Protocol, internal_port: u16) -> Option<SocketAddr> {
        self.external_addr(protocol, internal_port)
            .filter(|a| is_global(a.ip()))
    }

    /// One line per mapping, e.g. `TCP 6881 → 10.200.2.1:6881 via UPnP (lease 3600 s)`.
    pub fn lines(&self) -> Vec<String> {
        self.mappings.iter().map(|m| self.line(m)).collect()
    }

    fn line(&self, m: &MappingStatus) -> String {
        let head = format!("{} {}", m.protocol, m.internal_port);
        let via = m.method.map(|v| format!(" via {v}")).unwrap_or_default();
        let ext = match (self.external_ip, m.external_port) {
            (Some(ip), Some(p)) => SocketAddr::new(ip, p).to_string(),
            (None, Some(p)) => format!("port {p}"),
            _ => "?".into(),
        };
        match &m.state {
            MappingState::Mapping => format!("{head}: mapping…"),
            MappingState::Mapped { lease_secs: 0, .. } => {
                format!("{head} → {ext}{via} (permanent)")
            }
            MappingState::Mapped { lease_secs, .. } => {
                format!("{head} → {ext}{via} (lease {lease_secs} s)")
            }
            MappingState::Failed { error } => format!("{head}: failed{via}: {error}"),
            MappingState::Removed => format!("{head} → {ext}{via}: removed"),
        }
    }
}

/// A bad [`PortMapSpec`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortMapError {
    #[error("port 0 cannot be mapped")]
    PortZero,
    #[error("nothing to map")]
    Empty,
    #[error("at most {MAX_MAPPINGS} ports can be mapped; {0} were asked")]
    TooMany(usize),
    #[error("UPnP and NAT-PMP are both turned off")]
    NoMethod,
}

/// One (protocol, internal port) to map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRequest {
    pub protocol: Protocol,
    pub internal_port: NonZeroU16,
}

/// What a [`PortMapper`] maps and how.
#[derive(Clone, Debug)]
pub struct PortMapSpec {
    requests: Vec<PortRequest>,
    upnp: bool,
    natpmp: bool,
    /// PCP is tried before NAT-PMP (on by default).
    pcp: bool,
    description: String,
}

impl PortMapSpec {
    /// The ports to map (duplicates are mapped once), by every method.
    pub fn new(
        ports: impl IntoIterator<Item = (Protocol, u16)>,
    ) -> Result<PortMapSpec, PortMapError> {
        let mut requests: Vec<PortRequest> = Vec::new();
        for (protocol, port) in ports {
            let internal_port = NonZeroU16::new(port).ok_or(PortMapError::PortZero)?;
            let r = PortRequest {
                protocol,
                internal_port,
            };
            if !requests.contains(&r) {
                requests.push(r);
            }
            if requests.len() > MAX_MAPPINGS {
                return Err(PortMapError::TooMany(requests.len()));
            }
        }
        if requests.is_empty() {
            return Err(PortMapError::Empty);
        }
        Ok(PortMapSpec {
            requests,
            upnp: true,
            natpmp: true,
            pcp: true,
            description: "btfs".into(),
        })
    }

    /// Turns UPnP or NAT-PMP/PCP off.
    pub fn methods(mut self, upnp: bool, natpmp: bool) -> Result<PortMapSpec, PortMapError> {
        if !upnp && !natpmp {
            return Err(PortMapError::NoMethod);
        }
        self.upnp = upnp;
        self.natpmp = natpmp;
        Ok(self)
    }

    /// Whether PCP is tried before NAT-PMP (a gateway that speaks both then maps by
    /// NAT-PMP when off).
    pub fn pcp(mut self, on: bool) -> PortMapSpec {
        self.pcp = on;
        self
    }

    /// The name the gateway lists the mappings under (cut to [`MAX_DESCRIPTION`]).
    pub fn description(mut self, text: &str) -> PortMapSpec {
        self.description = text.chars().take(MAX_DESCRIPTION).collect();
        self
    }

    pub fn requests(&self) -> &[PortRequest] {
        &self.requests
    }
}

/// Maps ports in the background; see the module doc.
pub struct PortMapper {
    status: watch::Receiver<PortMapStatus>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl PortMapper {
    /// Starts mapping (inside a tokio runtime). Returns at once.
    pub fn start(spec: PortMapSpec) -> PortMapper {
        let status = PortMapStatus {
            mappings: spec
                .requests
                .iter()
                .map(|r| MappingStatus {
                    protocol: r.protocol,
                    internal_port: r.internal_port.get(),
                    external_port: None,
                    method: None,
                    state: MappingState::Mapping,
                })
                .collect(),
            ..Default::default()
        };
        let (tx, rx) = watch::channel(status);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(spec, tx, stop_rx));
        PortMapper {
            status: rx,
            stop: stop_tx,
            task: Some(task),
        }
    }

    /// The live state.
    pub fn status(&self) -> watch::Receiver<PortMapStatus> {
        self.status.clone()
    }

    /// Waits until every mapping had its first answer (or `limit` passed); returns the
    /// state then.
    pub async fn settled(&self, limit: Duration) -> PortMapStatus {
        let mut rx = self.status.clone();
        let _ = timeout(limit, rx.wait_for(PortMapStatus::settled)).await;
        let s = rx.borrow().clone();
        s
    }

    /// Removes the mappings from the gateway, waiting at most `limit`; returns the last
    /// state (mappings not confirmed removed keep their state and expire with their
    /// lease).
    pub async fn stop(mut self, limit: Duration) -> PortMapStatus {
        let _ = self.stop.send(true);
        if let Some(mut task) = self.task.take() {
            if timeout(limit, &mut task).await.is_err() {
                task.abort();
            }
        }
        let s = self.status.borrow().clone();
        s
    }
}

impl Drop for PortMapper {
    fn drop(&mut self) {
        // Not stopped: the leases run out on their own.
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// The gateway in use.
#[derive(Clone)]
enum Gateway {
    Upnp(igd_next::aio::Gateway<igd_next::aio::tokio::Tokio>),
    Pmp { addr: IpAddr },
}

/// The gateway found, and what the mapper needs to talk to it.
struct Ctx<'a> {
    spec: &'a PortMapSpec,
    gateway: Gateway,
    /// This host's address towards the gateway (what mappings point to).
    local: IpAddr,
    /// PCP's nonce for every mapping of this mapper (RFC 6887 §11.1), chosen before any
    /// request, so a mapping whose answer never came can still be removed.
    nonce: crab_nat::pcp::Nonce,
}

/// A mapping that is, or may be, on the gateway (a request for it was sent): what renewing
/// or removing it takes. NAT-PMP and PCP mappings are named by their internal port (PCP's
/// by the mapper's nonce too), UPnP ones by their external port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    method: Method,
    external_port: u16,
    /// PCP's assigned external address, suggested again on renewal.
    external_ip: Option<IpAddr>,
}

impl Held {
    fn upnp(external_port: u16) -> Held {
        Held {
            method: Method::Upnp,
            external_port,
            external_ip: None,
        }
    }

    /// Whether removing `self` and `other` is one and the same request.
    fn same(&self, other: &Held) -> bool {
        self.method == other.method
            && (self.method != Method::Upnp || self.external_port == other.external_port)
    }
}

struct Slot {
    req: PortRequest,
    /// The mapping this slot has, or may have: renewed in place, removed on stop (also
    /// after a failed renewal: the gateway may still hold it).
    held: Option<Held>,
    /// Earlier ones that may still be on the gateway (their removal was not confirmed):
    /// removed on stop too; at most [`MAX_STALE`].
    stale: Vec<Held>,
    /// `held` was confirmed by the gateway's last answer.
    live: bool,
    /// When to ask again (renewal, or a retry after a failure).
    due: Instant,
}

impl Slot {
    /// Notes that a request for `h` is about to be sent, so that a stop while it is in
    /// flight (or a lost answer) still removes what it may have mapped.
    fn record(&mut self, h: Held) {
        if let Some(old) = self.held.replace(h) {
            if !old.same(&h) {
                self.keep_stale(old);
            }
        }
    }

    fn keep_stale(&mut self, h: Held) {
        if self.held.is_some_and(|c| c.same(&h)) || self.stale.iter().any(|s| s.same(&h)) {
            return;
        }
        if self.stale.len() >= MAX_STALE {
            // The oldest expires with its lease.
            self.stale.remove(0);
        }
        self.stale.push(h);
    }
}

/// The mapper's task: discover, map, renew, and remove on stop.
async fn run(spec: PortMapSpec, tx: watch::Sender<PortMapStatus>, mut stop: watch::Receiver<bool>) {
    let mut slots: Vec<Slot> = spec
        .requests
        .iter()
        .map(|&req| Slot {
            req,
            held: None,
            stale: Vec::new(),
            live: false,
            due: Instant::now(),
        })
        .collect();
    let nonce: crab_nat::pcp::Nonce = rand::random();
    let mut gateway: Option<Ctx> = None;
    let mut backoff = RETRY_FIRST;
    // After every mapping failed through a UPnP gateway, NAT-PMP/PCP is used when both
    // answer (and the other way round).
    let mut prefer_pmp = false;
    loop {
        if gateway.is_none() {
            let found = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                r = discover(&spec, prefer_pmp) => r,
            };
            match found {
                Ok(f) => {
                    tx.send_modify(|s| {
                        s.gateway = Some(gateway_ip(&f.gateway));
                        s.local_ip = Some(f.local);
                        s.external_ip = f.external;
                    });
                    gateway = Some(Ctx {
                        spec: &spec,
                        gateway: f.gateway,
                        local: f.local,
                        nonce,
                    });
                }
                Err(error) => {
                    let error = clip(error);
                    tx.send_modify(|s| {
                        for m in &mut s.mappings {
                            m.state = MappingState::Failed {
                                error: error.clone(),
                            };
                        }
                    });
                    if sleep_or_stop(&mut stop, Instant::now() + backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                    continue;
                }
            }
        }
        let Some(ctx) = &gateway else { continue };
        // A stop is seen at once, even while a request is in flight: what it may have
        // mapped is already recorded in its slot.
        let failures = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            n = map_due(ctx, &mut slots, &tx, backoff) => n,
        };
        if failures > 0 {
            backoff = (backoff * 2).min(RETRY_MAX);
            if slots.iter().all(|s| !s.live) {
                // Nothing works through this gateway: take back what may be on it, and
                // look for a gateway again after the back-off.
                if let Some(ctx) = gateway.take() {
                    prefer_pmp = matches!(ctx.gateway, Gateway::Upnp(_));
                    remove_all(&ctx, &mut slots, &tx, false).await;
                }
            }
        } else {
            backoff = RETRY_FIRST;
        }
        let wake = slots
            .iter()
            .map(|s| s.due)
            .min()
            .unwrap_or_else(|| Instant::now() + RETRY_MAX);
        if sleep_or_stop(&mut stop, wake).await {
            break;
        }
    }
    if let Some(ctx) = &gateway {
        remove_all(ctx, &mut slots, &tx, true).await;
    }
}

/// One pass: maps or renews every slot that is due; returns how many failed.
async fn map_due(
    ctx: &Ctx<'_>,
    slots: &mut [Slot],
    tx: &watch::Sender<PortMapStatus>,
    backoff: Duration,
) -> usize {
    let mut failures = 0;
    for (i, slot) in slots.iter_mut().enumerate() {
        if slot.due > Instant::now() {
            continue;
        }
        let result = match &ctx.gateway {
            Gateway::Upnp(u) => upnp_map(ctx, u, slot).await,
            Gateway::Pmp { addr } => pmp_map(ctx, *addr, slot).await,
        };
        match result {
            Ok(granted) => {
                slot.live = true;
                slot.due = Instant::now() + renew_after(granted.lease);
                tx.send_modify(|s| {
                    if granted.external_ip.is_some() {
                        s.external_ip = granted.external_ip;
                    }
                    let m = &mut s.mappings[i];
                    m.external_port = Some(granted.external_port);
                    m.method = Some(granted.method);
                    m.state = MappingState::Mapped {
                        expires: (granted.lease > 0).then(|| unix_now() + u64::from(granted.lease)),
                        lease_secs: granted.lease,
                    };
                });
            }
            Err(error) => {
                failures += 1;
                // `held` stays: the gateway may still have it, so it is renewed in
                // place next time and removed on stop.
                slot.live = false;
                slot.due = Instant::now() + backoff;
                let method = slot.held.map(|h| h.method).unwrap_or(method_of(ctx));
                tx.send_modify(|s| {
                    let m = &mut s.mappings[i];
                    m.method = Some(method);
                    m.state = MappingState::Failed { error: clip(error) };
                });
            }
        }
    }
    failures
}

/// When to renew a lease of `lease_secs` (0: permanent, re-checked): at half its life but
/// not before [`MIN_RENEW`], always before three quarters of it (so a short lease is
/// renewed before it runs out), at most every [`LEASE_SECS`]/2 and at least
/// [`RENEW_FLOOR`] apart.
pub fn renew_after(lease_secs: u32) -> Duration {
    let cap = Duration::from_secs(u64::from(LEASE_SECS / 2));
    if lease_secs == 0 {
        return cap;
    }
    let lease = Duration::from_secs(u64::from(lease_secs));
    (lease / 2)
        .max(MIN_RENEW)
        .min(lease * 3 / 4)
        .min(cap)
        .max(RENEW_FLOOR)
}

/// Sleeps until `until`; true when told to stop first.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, until: Instant) -> bool {
    tokio::select! {
        biased;
        _ = stop.wait_for(|s| *s) => true,
        _ = tokio::time::sleep_until(until) => false,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `error` cut to [`MAX_ERROR`] characters (a gateway's answer can be long).
fn clip(error: String) -> String {
    if error.chars().count() <= MAX_ERROR {
        return error;
    }
    let mut s: String = error.chars().take(MAX_ERROR).collect();
    s.push('…');
    s
}

fn gateway_ip(g: &Gateway) -> IpAddr {
    match g {
        Gateway::Upnp(u) => u.addr.ip(),
        Gateway::Pmp { addr } => *addr,
    }
}

fn method_of(ctx: &Ctx<'_>) -> Method {
    match (&ctx.gateway, ctx.spec.pcp) {
        (Gateway::Upnp(_), _) => Method::Upnp,
        (Gateway::Pmp { .. }, true) => Method::Pcp,
        (Gateway::Pmp { .. }, false) => Method::NatPmp,
    }
}

/// A gateway that answered.
struct Found {
    gateway: Gateway,
    /// Our LAN address towards it.
    local: IpAddr,
    /// Its external address, when usable.
    external: Option<IpAddr>,
}

/// Finds a gateway, asking both ways at once; UPnP is used when both answer unless
/// `prefer_pmp`.
async fn discover(spec: &PortMapSpec, prefer_pmp: bool) -> Result<Found, String> {
    let upnp = async {
        if !spec.upnp {
            return Err("turned off".to_string());
        }
        let mut opts = igd_next::SearchOptions::default();
        opts.timeout = Some(SSDP_TIMEOUT);
        opts.single_search_timeout = Some(SSDP_TIMEOUT);
        opts.gateway_ip_version = igd_next::GatewayIpVersion::V4;
        let g = timeout(
            SSDP_TIMEOUT + Duration::from_secs(1),
            igd_next::aio::tokio::search_gateway(opts),
        )
        .await
        .map_err(|_| format!("no answer to SSDP within {} s", SSDP_TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
        // Any host on the LAN can answer SSDP: only the router itself is believed.
        let ip = g.addr.ip();
        if !upnp_device_allowed(ip, &route_file()) {
            return Err(format!(
                "the UPnP device {ip} is not the default gateway: ignored"
            ));
        }
        let local = local_ip_towards(ip).map_err(|e| e.to_string())?;
        let external = match timeout(REQUEST_TIMEOUT, g.get_external_ip()).await {
            Ok(Ok(ip)) => usable_external(ip),
            _ => None,
        };
        Ok(Found {
            gateway: Gateway::Upnp(g),
            local,
            external,
        })
    };
    let pmp = async {
        if !spec.natpmp {
            return Err("turned off".to_string());
        }
        let addr = IpAddr::V4(default_gateway().ok_or("no default route")?);
        let local = local_ip_towards(addr).map_err(|e| e.to_string())?;
        let external = timeout(
            REQUEST_TIMEOUT,
            crab_nat::natpmp::external_address(addr.into(), Some(pmp_timeouts())),
        )
        .await
        .map_err(|_| {
            format!(
                "no answer from {addr} within {} s",
                REQUEST_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("{addr}: {e}"))?;
        Ok(Found {
            gateway: Gateway::Pmp { addr },
            local,
            external: usable_external(IpAddr::V4(external)),
        })
    };
    let (u, p) = tokio::join!(upnp, pmp);
    match (u, p) {
        (Ok(_), Ok(p)) if prefer_pmp => Ok(p),
        (Ok(found), _) | (_, Ok(found)) => Ok(found),
        (Err(u), Err(p)) => Err(format!("no gateway answered (UPnP: {u}; NAT-PMP: {p})")),
    }
}

/// Retransmissions of one NAT-PMP/PCP request: 250 ms, doubling, 4 sends, within
/// [`REQUEST_TIMEOUT`].
fn pmp_timeouts() -> crab_nat::TimeoutConfig {
    crab_nat::TimeoutConfig {
        initial_timeout: Duration::from_millis(250),
        max_retries: 3,
        max_retry_timeout: Some(Duration::from_secs(1)),
    }
}

/// What a gateway granted.
struct Granted {
    external_port: u16,
    lease: u32,
    method: Method,
    external_ip: Option<IpAddr>,
}

fn igd_protocol(p: Protocol) -> igd_next::PortMappingProtocol {
    match p {
        Protocol::Tcp => igd_next::PortMappingProtocol::TCP,
        Protocol::Udp => igd_next::PortMappingProtocol::UDP,
    }
}

fn pmp_protocol(p: Protocol) -> crab_nat::InternetProtocol {
    match p {
        Protocol::Tcp => crab_nat::InternetProtocol::Tcp,
        Protocol::Udp => crab_nat::InternetProtocol::Udp,
    }
}

fn unanswered() -> String {
    format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
}

/// Maps (or renews) one slot by UPnP: the same external port as the internal one (or as
/// before); when that is another host's, up to [`MAX_PORT_TRIES`] random ones.
async fn upnp_map(
    ctx: &Ctx<'_>,
    u: &igd_next::aio::Gateway<igd_next::aio::tokio::Tokio>,
    slot: &mut Slot,
) -> Result<Granted, String> {
    let granted = |external_port, lease| Granted {
        external_port,
        lease,
        method: Method::Upnp,
        external_ip: None,
    };
    let renewing = slot
        .held
        .filter(|h| h.method == Method::Upnp)
        .map(|h| h.external_port);
    let want = renewing.unwrap_or(slot.req.internal_port.get());
    slot.record(Held::upnp(want));
    match upnp_add(ctx, u, slot.req, want).await {
        Ok(lease) => return Ok(granted(want, lease)),
        Err(UpnpAdd::InUse) => {}
        Err(UpnpAdd::Other(e)) => return Err(e),
    }
    // `want` is mapped to another host, or, renewing, to us (some gateways refuse to
    // re-add a mapping they have): ours is removed, never left behind. It stays
    // recorded until the gateway said it is gone (or never was ours).
    let mut ports = Vec::with_capacity(MAX_PORT_TRIES);
    if renewing.is_some() {
        let proto = igd_protocol(slot.req.protocol);
        match timeout(REQUEST_TIMEOUT, u.remove_port(proto, want)).await {
            Ok(Ok(())) => ports.push(want),
            Ok(Err(
                igd_next::RemovePortError::NoSuchPortMapping
                | igd_next::RemovePortError::ActionNotAuthorized,
            )) => {}
            // Unknown: removed on stop.
            _ => {
                slot.held = None;
                slot.keep_stale(Held::upnp(want));
            }
        }
    }
    slot.held = None;
    while ports.len() < MAX_PORT_TRIES {
        let p = rand::random_range(1024..=u16::MAX);
        if p != want {
            ports.push(p);
        }
    }
    for port in ports {
        slot.record(Held::upnp(port));
        match upnp_add(ctx, u, slot.req, port).await {
            Ok(lease) => return Ok(granted(port, lease)),
            Err(UpnpAdd::InUse) => slot.held = None,
            Err(UpnpAdd::Other(e)) => return Err(e),
        }
    }
    Err(format!(
        "external port {want} and {} others are in use",
        MAX_PORT_TRIES - 1
    ))
}

/// Why a UPnP AddPortMapping failed.
enum UpnpAdd {
    /// 718: the port is another mapping's.
    InUse,
    Other(String),
}

/// UPnP AddPortMapping of `port` for [`LEASE_SECS`], or permanent when the gateway only
/// takes that (725). Returns the lease.
async fn upnp_add(
    ctx: &Ctx<'_>,
    u: &igd_next::aio::Gateway<igd_next::aio::tokio::Tokio>,
    req: PortRequest,
    port: u16,
) -> Result<u32, UpnpAdd> {
    use igd_next::AddPortError as E;
    let proto = igd_protocol(req.protocol);
    let to = SocketAddr::new(ctx.local, req.internal_port.get());
    let desc = format!("{} {} {}", ctx.spec.description, req.protocol, port);
    let add = |lease| timeout(REQUEST_TIMEOUT, u.add_port(proto, port, to, lease, &desc));
    let mut lease = LEASE_SECS;
    let mut r = add(lease).await;
    if matches!(r, Ok(Err(E::OnlyPermanentLeasesSupported))) {
        lease = 0;
        r = add(lease).await;
    }
    match r {
        Err(_) => Err(UpnpAdd::Other(unanswered())),
        Ok(Ok(())) => Ok(lease),
        Ok(Err(E::PortInUse)) => Err(UpnpAdd::InUse),
        Ok(Err(e)) => Err(UpnpAdd::Other(e.to_string())),
    }
}

/// Maps (or renews) one slot by NAT-PMP/PCP: a renewal asks again by the same protocol
/// (PCP with the same nonce) for [`LEASE_SECS`] and the port granted before; a new
/// mapping asks by PCP first (when on), by NAT-PMP when PCP fails.
async fn pmp_map(ctx: &Ctx<'_>, addr: IpAddr, slot: &mut Slot) -> Result<Granted, String> {
    let internal = slot.req.internal_port.get();
    let fresh = |method| Held {
        method,
        external_port: internal,
        external_ip: None,
    };
    let mapping = match slot.held.filter(|h| h.method != Method::Upnp) {
        Some(h) if h.method == Method::Pcp => {
            slot.record(h);
            pcp_request(ctx, addr, slot.req, h)
                .await?
                .map_err(|e| e.to_string())?
        }
        Some(h) => {
            slot.record(h);
            natpmp_request(addr, slot.req, h).await?
        }
        None if ctx.spec.pcp => {
            slot.record(fresh(Method::Pcp));
            match pcp_request(ctx, addr, slot.req, fresh(Method::Pcp)).await {
                Ok(Ok(m)) => m,
                Ok(Err(pcp)) => {
                    if matches!(pcp, crab_nat::pcp::Failure::UnsupportedVersion(_)) {
                        // Answered: it speaks no PCP, so nothing was mapped by it.
                        slot.held = None;
                    }
                    slot.record(fresh(Method::NatPmp));
                    natpmp_request(addr, slot.req, fresh(Method::NatPmp))
                        .await
                        .map_err(|e| format!("PCP: {pcp}; NAT-PMP: {e}"))?
                }
                Err(e) => return Err(e),
            }
        }
        None => {
            slot.record(fresh(Method::NatPmp));
            natpmp_request(addr, slot.req, fresh(Method::NatPmp)).await?
        }
    };
    let (method, external_ip) = match mapping.mapping_type() {
        crab_nat::PortMappingType::NatPmp => (Method::NatPmp, None),
        crab_nat::PortMappingType::Pcp { external_ip, .. } => {
            (Method::Pcp, usable_external(external_ip))
        }
    };
    let external_port = mapping.external_port().get();
    slot.record(Held {
        method,
        external_port,
        external_ip,
    });
    // RFC 6886 §3.3, RFC 6887 §15: lifetime 0 in an answer means the mapping is gone.
    if mapping.lifetime() == 0 {
        return Err("the gateway answered lifetime 0 (no mapping)".into());
    }
    Ok(Granted {
        external_port,
        lease: mapping.lifetime(),
        method,
        external_ip,
    })
}

fn pmp_options(external_port: u16) -> crab_nat::PortMappingOptions {
    crab_nat::PortMappingOptions {
        external_port: NonZeroU16::new(external_port),
        lifetime_seconds: Some(LEASE_SECS),
        timeout_config: Some(pmp_timeouts()),
    }
}

/// A PCP MAP request (new or renewal); the outer error is a missing answer.
async fn pcp_request(
    ctx: &Ctx<'_>,
    addr: IpAddr,
    req: PortRequest,
    h: Held,
) -> Result<Result<crab_nat::PortMapping, crab_nat::pcp::Failure>, String> {
    let base = crab_nat::pcp::BaseMapRequest::new(
        addr.into(),
        ctx.local,
        pmp_protocol(req.protocol),
        req.internal_port,
    );
    timeout(
        REQUEST_TIMEOUT,
        crab_nat::pcp::port_mapping(
            base,
            Some(ctx.nonce),
            h.external_ip,
            pmp_options(h.external_port),
        ),
    )
    .await
    .map_err(|_| unanswered())
}

/// A NAT-PMP mapping request (new or renewal).
async fn natpmp_request(
    addr: IpAddr,
    req: PortRequest,
    h: Held,
) -> Result<crab_nat::PortMapping, String> {
    timeout(
        REQUEST_TIMEOUT,
        crab_nat::natpmp::port_mapping(
            addr.into(),
            pmp_protocol(req.protocol),
            req.internal_port,
            pmp_options(h.external_port),
        ),
    )
    .await
    .map_err(|_| unanswered())?
    .map_err(|e| e.to_string())
}

/// Removes one mapping that is or may be on the gateway, within [`REQUEST_TIMEOUT`].
async fn remove_one(
    g: &Gateway,
    local: IpAddr,
    nonce: crab_nat::pcp::Nonce,
    req: PortRequest,
    h: Held,
) -> Result<(), String> {
    let proto = pmp_protocol(req.protocol);
    let r = match (g, h.method) {
        (Gateway::Upnp(u), Method::Upnp) => {
            let removal = u.remove_port(igd_protocol(req.protocol), h.external_port);
            match timeout(REQUEST_TIMEOUT, removal).await {
                Ok(Ok(()) | Err(igd_next::RemovePortError::NoSuchPortMapping)) => Ok(Ok(())),
                Ok(Err(e)) => Ok(Err(e.to_string())),
                Err(e) => Err(e),
            }
        }
        (Gateway::Pmp { addr }, Method::NatPmp) => {
            let removal = crab_nat::natpmp::try_drop_mapping(
                (*addr).into(),
                proto,
                Some(req.internal_port),
                Some(pmp_timeouts()),
            );
            timeout(REQUEST_TIMEOUT, removal)
                .await
                .map(|r| r.map_err(|e| e.to_string()))
        }
        (Gateway::Pmp { addr }, Method::Pcp) => {
            let range = crab_nat::pcp::DropMappingRange::Single {
                protocol: proto,
                internal_port: req.internal_port,
            };
            let removal = crab_nat::pcp::try_drop_mapping(
                (*addr).into(),
                local,
                nonce,
                range,
                Some(pmp_timeouts()),
            );
            timeout(REQUEST_TIMEOUT, removal)
                .await
                .map(|r| r.map_err(|e| e.to_string()))
        }
        _ => return Err("mapped through another gateway".into()),
    };
    r.map_err(|_| "removal unanswered".to_string())?
}

/// Removes everything the slots hold or may hold, all at once (so the whole takes one
/// [`REQUEST_TIMEOUT`]). With `report`, each slot's state becomes `Removed` (or `Failed`
/// with why); otherwise the states are left as they are.
async fn remove_all(
    ctx: &Ctx<'_>,
    slots: &mut [Slot],
    tx: &watch::Sender<PortMapStatus>,
    report: bool,
) {
    let mut set = tokio::task::JoinSet::new();
    for (i, slot) in slots.iter_mut().enumerate() {
        slot.live = false;
        let main = slot.held.take().map(|h| (true, h));
        for (primary, h) in main
            .into_iter()
            .chain(slot.stale.drain(..).map(|h| (false, h)))
        {
            let (g, local, nonce, req) = (ctx.gateway.clone(), ctx.local, ctx.nonce, slot.req);
            set.spawn(async move { (i, primary, remove_one(&g, local, nonce, req, h).await) });
        }
    }
    // Per slot: (the held mapping's result, the first error of the stale ones).
    type Outcome = (Option<Result<(), String>>, Option<String>);
    let mut results: Vec<Outcome> = vec![(None, None); slots.len()];
    while let Some(done) = set.join_next().await {
        let Ok((i, primary, r)) = done else { continue };
        match (primary, r) {
            (true, r) => results[i].0 = Some(r),
            (false, Err(e)) => {
                results[i].1.get_or_insert(e);
            }
            (false, Ok(())) => {}
        }
    }
    if !report {
        return;
    }
    tx.send_modify(|s| {
        for (m, r) in s.mappings.iter_mut().zip(results) {
            let r = match r {
                (Some(r), _) => r,
                (None, Some(e)) => Err(e),
                (None, None) => continue,
            };
            m.state = match r {
                Ok(()) => MappingState::Removed,
                Err(e) => MappingState::Failed {
                    error: clip(format!("removing: {e}")),
                },
            };
        }
    });
}

/// This host's address on the route to `gateway` (no packet is sent).
fn local_ip_towards(gateway: IpAddr) -> std::io::Result<IpAddr> {
    let bind: SocketAddr = match gateway {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = std::net::UdpSocket::bind(bind)?;
    s.connect((gateway, crab_nat::GATEWAY_PORT))?;
    Ok(s.local_addr()?.ip())
}

/// An external address a gateway reported, unless it cannot be one (unspecified, as
/// miniupnpd answers without a WAN address; loopback; multicast; broadcast).
pub fn usable_external(ip: IpAddr) -> Option<IpAddr> {
    let bad = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    (!bad).then_some(ip)
}

/// Whether `ip` is reachable from the whole Internet: not private, shared (CGNAT,
/// 100.64/10), loopback, link-local, documentation, benchmarking, reserved, multicast,
/// unique-local or unspecified.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && o[1] & 0xc0 == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && o[1] & 0xfe == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_global(IpAddr::V4(v4));
            }
            let s = a.segments();
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || s[0] & 0xfe00 == 0xfc00
                || s[0] & 0xffc0 == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

/// `/proc/net/route`, at most [`MAX_ROUTE_FILE`] bytes; empty when unreadable.
fn route_file() -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open("/proc/net/route") {
        let _ = f.take(MAX_ROUTE_FILE).read_to_string(&mut text);
    }
    text
}

/// The IPv4 default route's gateway, from `/proc/net/route`.
pub fn default_gateway() -> Option<Ipv4Addr> {
    default_gateway_in(&route_file())
}

/// One up route of `/proc/net/route`.
struct Route {
    dest: Ipv4Addr,
    gateway: Ipv4Addr,
    mask: Ipv4Addr,
    /// Through a gateway (RTF_GATEWAY), not directly connected.
    via_gateway: bool,
}

/// The up routes in `/proc/net/route` text (fields are hex, the addresses as the kernel
/// stores them, in network byte order, printed as a host-order number: `to_ne_bytes`
/// gives the address back on any host).
fn routes(text: &str) -> impl Iterator<Item = Route> + '_ {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    text.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dest, gw, flags, mask) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(7)?);
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        let addr = |s: &str| hex(s).map(|v| Ipv4Addr::from(v.to_ne_bytes()));
        let flags = hex(flags)?;
        (flags & RTF_UP != 0).then_some(())?;
        Some(Route {
            dest: addr(dest)?,
            gateway: addr(gw)?,
            mask: addr(mask)?,
            via_gateway: flags & RTF_GATEWAY != 0,
        })
    })
}

/// The gateway of the first up default route in `/proc/net/route` text.
pub fn default_gateway_in(text: &str) -> Option<Ipv4Addr> {
    routes(text)
        .find(|r| r.via_gateway && r.dest.is_unspecified() && r.mask.is_unspecified())
        .map(|r| r.gateway)
}

/// Whether a UPnP device at `ip` may be used: it must be a default route's gateway, or,
/// when there is no default route, on a directly connected subnet. (SSDP answers come
/// from anyone on the LAN; a device posing as the router would be told our ports and
/// would tell us a false external address.)
pub fn upnp_device_allowed(ip: IpAddr, route_text: &str) -> bool {
    let IpAddr::V4(ip) = ip else { return false };
    let mut gateways = routes(route_text)
        .filter(|r| r.via_gateway && r.dest.is_unspecified() && r.mask.is_unspecified())
        .peekable();
    if gateways.peek().is_some() {
        return gateways.any(|r| r.gateway == ip);
    }
    routes(route_text).any(|r| {
        let mask = u32::from(r.mask);
        !r.via_gateway
            && !r.mask.is_unspecified()
            && u32::from(ip) & mask == u32::from(r.dest) & mask
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_from_proc() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    veth-in\t0001C80A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    veth-in\t00000000\t0101C80A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_gateway_in(text), Some(Ipv4Addr::new(10, 200, 1, 1)));
        // A default route that is down, or not through a gateway, is no gateway.
        let down = "h\nx\t00000000\t0101C80A\t0002\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_gateway_in(down), None);
        assert_eq!(default_gateway_in("h\ngarbage\n\n\t\t"), None);
        assert_eq!(default_gateway_in(""), None);
    }

    #[test]
    fn specs_are_checked() {
        assert_eq!(PortMapSpec::new([]).unwrap_err(), PortMapError::Empty);
        assert_eq!(
            PortMapSpec::new([(Protocol::Tcp, 0)]).unwrap_err(),
            PortMapError::PortZero
        );
        let many = (1..=MAX_MAPPINGS as u16 + 1).map(|p| (Protocol::Udp, p));
        assert!(matches!(
            PortMapSpec::new(many),
            Err(PortMapError::TooMany(_))
        ));
        let s = PortMapSpec::new([
            (Protocol::Tcp, 6881),
            (Protocol::Tcp, 6881),
            (Protocol::Udp, 6881),
        ])
        .unwrap();
        assert_eq!(s.requests().len(), 2);
        assert_eq!(
            s.clone().methods(false, false).unwrap_err(),
            PortMapError::NoMethod
        );
        let long = "x".repeat(500);
        assert_eq!(s.description(&long).description.len(), MAX_DESCRIPTION);
    }

    #[test]
    fn status_reads_and_round_trips() {
        let s = PortMapStatus {
            mappings: vec![
                MappingStatus {
                    protocol: Protocol::Tcp,
                    internal_port: 6881,
                    external_port: Some(6881),
                    method: Some(Method::Upnp),
                    state: MappingState::Mapped {
                        expires: Some(1),
                        lease_secs: 3600,
                    },
                },
                MappingStatus {
                    protocol: Protocol::Udp,
                    internal_port: 7000,
                    external_port: None,
                    method: Some(Method::NatPmp),
                    state: MappingState::Failed {
                        error: "refused".into(),
                    },
                },
            ],
            external_ip: Some(IpAddr::from([10, 200, 2, 1])),
            gateway: Some(IpAddr::from([10, 200, 1, 1])),
            local_ip: None,
        };
        assert_eq!(
            s.lines(),
            [
                "TCP 6881 → 10.200.2.1:6881 via UPnP (lease 3600 s)",
                "UDP 7000: failed via NAT-PMP: refused"
            ]
        );
        assert_eq!(
            s.external_addr(Protocol::Tcp, 6881),
            Some("10.200.2.1:6881".parse().unwrap())
        );
        assert_eq!(s.external_addr(Protocol::Udp, 7000), None);
        assert!(s.settled());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["Mappings"][0]["State"], "Mapped");
        assert_eq!(v["Mappings"][0]["Method"], "UPnP");
        assert_eq!(v["Mappings"][1]["Error"], "refused");
        let back: PortMapStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn renewals_come_before_expiry() {
        let secs = |s| Duration::from_secs(s);
        // Half the lease, as usual.
        assert_eq!(renew_after(3600), secs(1800));
        assert_eq!(renew_after(100), secs(50));
        // Not before MIN_RENEW, but always before three quarters of a short lease.
        assert_eq!(renew_after(50), secs(30));
        assert_eq!(renew_after(20), secs(15));
        assert_eq!(renew_after(4), secs(3));
        // Never more often than RENEW_FLOOR; long and permanent leases are re-checked.
        assert_eq!(renew_after(1), RENEW_FLOOR);
        assert_eq!(renew_after(86_400), secs(u64::from(LEASE_SECS / 2)));
        assert_eq!(renew_after(0), secs(u64::from(LEASE_SECS / 2)));
        for lease in 1..=200u32 {
            let at = renew_after(lease);
            assert!(at >= RENEW_FLOOR);
            assert!(
                lease < 2 || at < secs(u64::from(lease)),
                "lease {lease}: {at:?}"
            );
        }
    }

    #[test]
    fn errors_are_clipped() {
        assert_eq!(clip("short".into()), "short");
        let long = clip("é".repeat(5000));
        assert_eq!(long.chars().count(), MAX_ERROR + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn only_global_addresses_are_public() {
        for private in [
            "10.200.2.1",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "255.255.255.255",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.0.8",
            "fd00::1",
            "fe80::1",
            "::1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_global(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "100.128.0.1",
            "8.8.8.8",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_global(public.parse().unwrap()), "{public}");
        }
        let s = PortMapStatus {
            mappings: vec![MappingStatus {
                protocol: Protocol::Tcp,
                internal_port: 6881,
                external_port: Some(6881),
                method: Some(Method::Upnp),
                state: MappingState::Mapped {
                    expires: None,
                    lease_secs: 0,
                },
            }],
            external_ip: Some(IpAddr::from([10, 200, 2, 1])),
            ..Default::default()
        };
        assert!(s.external_addr(Protocol::Tcp, 6881).is_some());
        assert_eq!(s.public_addr(Protocol::Tcp, 6881), None);
        let s = PortMapStatus {
            external_ip: Some(IpAddr::from([1, 2, 3, 4])),
            ..s
        };
        assert_eq!(
            s.public_addr(Protocol::Tcp, 6881),
            Some("1.2.3.4:6881".parse().unwrap())
        );
    }

    #[test]
    fn impossible_external_addresses_are_dropped() {
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "ff02::1",
        ] {
            assert_eq!(usable_external(bad.parse().unwrap()), None, "{bad}");
        }
        // A private one is kept (reported as it is).
        let ip: IpAddr = "10.200.2.1".parse().unwrap();
        assert_eq!(usable_external(ip), Some(ip));
    }

    #[test]
    fn only_the_gateway_is_believed_as_upnp_device() {
        let head =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        let connected = "veth-in\t0001C80A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let default = "veth-in\t00000000\t0101C80A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let with_default = format!("{head}{connected}{default}");
        assert!(upnp_device_allowed(ip("10.200.1.1"), &with_default));
        // Another host on the LAN answering SSDP is not the router.
        assert!(!upnp_device_allowed(ip("10.200.1.7"), &with_default));
        assert!(!upnp_device_allowed(ip("192.168.5.1"), &with_default));
        assert!(!upnp_device_allowed(ip("fe80::1"), &with_default));
        // No default route: any device on a directly connected subnet.
        let no_default = format!("{head}{connected}");
        assert!(upnp_device_allowed(ip("10.200.1.7"), &no_default));
        assert!(!upnp_device_allowed(ip("10.200.2.7"), &no_default));
        assert!(!upnp_device_allowed(ip("10.200.1.1"), head));
    }

    #[test]
    fn what_may_be_mapped_is_kept_for_removal() {
        let mut slot = Slot {
            req: PortRequest {
                protocol: Protocol::Tcp,
                internal_port: NonZeroU16::new(6881).unwrap(),
            },
            held: None,
            stale: Vec::new(),
            live: false,
            due: Instant::now(),
        };
        slot.record(Held::upnp(6881));
        slot.record(Held::upnp(6881));
        assert!(slot.stale.is_empty());
        // Another external port: the first may still be mapped.
        slot.record(Held::upnp(40_000));
        assert_eq!(slot.held, Some(Held::upnp(40_000)));
        assert_eq!(slot.stale, [Held::upnp(6881)]);
        for p in 0..10 {
            slot.record(Held::upnp(50_000 + p));
        }
        assert_eq!(slot.stale.len(), MAX_STALE);
        // NAT-PMP/PCP mappings are named by the internal port: a new external port is
        // the same mapping; another protocol is another.
        let pmp = |method, external_port| Held {
            method,
            external_port,
            external_ip: None,
        };
        slot.held = None;
        slot.stale.clear();
        slot.record(pmp(Method::Pcp, 6881));
        slot.record(pmp(Method::Pcp, 7000));
        assert!(slot.stale.is_empty());
        slot.record(pmp(Method::NatPmp, 6881));
        assert_eq!(slot.stale, [pmp(Method::Pcp, 7000)]);
    }
}
