//! Port mapping on the LAN's gateway: UPnP IGD (`igd-next`) and NAT-PMP/PCP (`crab_nat`).
//!
//! Owns one background task per [`PortMapper`]. The task finds the gateway, maps each
//! requested (protocol, internal port) to the same external port for this host's LAN
//! address, renews each lease at half its life, retries with back-off after a failure and,
//! when [`PortMapper::stop`] is awaited, removes what it mapped.
//!
//! Policy:
//! - Discovery runs both ways at once, each bounded: SSDP multicast (UPnP, [`SSDP_TIMEOUT`])
//!   and a NAT-PMP external-address request to the default route's gateway (read from
//!   `/proc/net/route`, as `natpmpc` does). UPnP is used when it answers, NAT-PMP/PCP
//!   otherwise (PCP first, NAT-PMP when the gateway asks for it).
//! - Leases of [`LEASE_SECS`]; a UPnP gateway that only takes permanent mappings (error
//!   725) gets lease 0, as libtorrent does, and is re-checked at the same interval. A port
//!   taken by another host is mapped to any external port the gateway picks (UPnP
//!   AddAnyPortMapping; NAT-PMP/PCP take the gateway's answer).
//! - Every request has a deadline ([`REQUEST_TIMEOUT`]); failures wait [`RETRY_FIRST`],
//!   doubling up to [`RETRY_MAX`], so no gateway is ever asked in a loop.
//! - An external address in a private range is reported as it is, never refused (a
//!   router behind another NAT still forwards).
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
enum Gateway {
    Upnp(igd_next::aio::Gateway<igd_next::aio::tokio::Tokio>),
    Pmp { addr: IpAddr },
}

/// A granted mapping, as needed to renew or remove it.
enum Held {
    Upnp { external_port: u16 },
    Pmp(Box<crab_nat::PortMapping>),
}

struct Slot {
    req: PortRequest,
    held: Option<Held>,
    /// When to ask again (renewal, or a retry after a failure).
    due: Instant,
}

/// The mapper's task: discover, map, renew, and remove on stop.
async fn run(spec: PortMapSpec, tx: watch::Sender<PortMapStatus>, mut stop: watch::Receiver<bool>) {
    let mut slots: Vec<Slot> = spec
        .requests
        .iter()
        .map(|&req| Slot {
            req,
            held: None,
            due: Instant::now(),
        })
        .collect();
    let mut gateway: Option<(Gateway, IpAddr)> = None;
    let mut backoff = RETRY_FIRST;
    loop {
        if gateway.is_none() {
            let found = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                r = discover(&spec) => r,
            };
            match found {
                Ok((g, local, external)) => {
                    tx.send_modify(|s| {
                        s.gateway = Some(gateway_ip(&g));
                        s.local_ip = Some(local);
                        s.external_ip = external;
                    });
                    gateway = Some((g, local));
                }
                Err(error) => {
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
        let Some((g, local)) = &gateway else { continue };
        let mut failures = 0;
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.due > Instant::now() {
                continue;
            }
            match map_one(&spec, g, *local, slot).await {
                Ok(granted) => {
                    let renew = Duration::from_secs(
                        u64::from(if granted.lease == 0 {
                            LEASE_SECS
                        } else {
                            granted.lease
                        }) / 2,
                    )
                    .max(MIN_RENEW);
                    slot.due = Instant::now() + renew;
                    tx.send_modify(|s| {
                        if granted.external_ip.is_some() {
                            s.external_ip = granted.external_ip;
                        }
                        let m = &mut s.mappings[i];
                        m.external_port = Some(granted.external_port);
                        m.method = Some(granted.method);
                        m.state = MappingState::Mapped {
                            expires: (granted.lease > 0)
                                .then(|| unix_now() + u64::from(granted.lease)),
                            lease_secs: granted.lease,
                        };
                    });
                }
                Err(error) => {
                    failures += 1;
                    slot.held = None;
                    slot.due = Instant::now() + backoff;
                    let method = method_of(g);
                    tx.send_modify(|s| {
                        let m = &mut s.mappings[i];
                        m.method = Some(method);
                        m.state = MappingState::Failed { error };
                    });
                }
            }
        }
        if failures > 0 {
            backoff = (backoff * 2).min(RETRY_MAX);
            if slots.iter().all(|s| s.held.is_none()) {
                // Nothing works through this gateway: look for one again next time.
                gateway = None;
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
    if let Some((g, _)) = &gateway {
        remove_all(g, &mut slots, &tx).await;
    }
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

fn gateway_ip(g: &Gateway) -> IpAddr {
    match g {
        Gateway::Upnp(u) => u.addr.ip(),
        Gateway::Pmp { addr } => *addr,
    }
}

fn method_of(g: &Gateway) -> Method {
    match g {
        Gateway::Upnp(_) => Method::Upnp,
        Gateway::Pmp { .. } => Method::NatPmp,
    }
}

/// Finds a gateway: (gateway, our LAN address towards it, its external address).
async fn discover(spec: &PortMapSpec) -> Result<(Gateway, IpAddr, Option<IpAddr>), String> {
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
        let local = local_ip_towards(g.addr.ip()).map_err(|e| e.to_string())?;
        let external = match timeout(REQUEST_TIMEOUT, g.get_external_ip()).await {
            Ok(Ok(ip)) => Some(ip),
            _ => None,
        };
        Ok((Gateway::Upnp(g), local, external))
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
        Ok((Gateway::Pmp { addr }, local, Some(IpAddr::V4(external))))
    };
    let (u, p) = tokio::join!(upnp, pmp);
    match (u, p) {
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

/// Maps (or renews) one slot.
async fn map_one(
    spec: &PortMapSpec,
    g: &Gateway,
    local: IpAddr,
    slot: &mut Slot,
) -> Result<Granted, String> {
    match g {
        Gateway::Upnp(u) => {
            let want = match &slot.held {
                Some(Held::Upnp { external_port }) => *external_port,
                _ => slot.req.internal_port.get(),
            };
            let (external_port, lease) = upnp_add(spec, u, local, slot.req, want).await?;
            slot.held = Some(Held::Upnp { external_port });
            Ok(Granted {
                external_port,
                lease,
                method: Method::Upnp,
                external_ip: None,
            })
        }
        Gateway::Pmp { addr } => {
            let mapping = match slot.held.take() {
                Some(Held::Pmp(mut m)) => {
                    timeout(REQUEST_TIMEOUT, m.renew())
                        .await
                        .map_err(|_| "renewal unanswered".to_string())?
                        .map_err(|e| e.to_string())?;
                    m
                }
                _ => Box::new(pmp_new(*addr, local, slot.req, spec.pcp).await?),
            };
            let (method, external_ip) = match mapping.mapping_type() {
                crab_nat::PortMappingType::NatPmp => (Method::NatPmp, None),
                crab_nat::PortMappingType::Pcp { external_ip, .. } => {
                    (Method::Pcp, Some(external_ip))
                }
            };
            let granted = Granted {
                external_port: mapping.external_port().get(),
                lease: mapping.lifetime(),
                method,
                external_ip,
            };
            slot.held = Some(Held::Pmp(mapping));
            Ok(granted)
        }
    }
}

fn igd_protocol(p: Protocol) -> igd_next::PortMappingProtocol {
    match p {
        Protocol::Tcp => igd_next::PortMappingProtocol::TCP,
        Protocol::Udp => igd_next::PortMappingProtocol::UDP,
    }
}

/// UPnP AddPortMapping for `want`; permanent when the gateway only takes that, any port
/// when `want` is another host's. Returns (external port, lease).
async fn upnp_add(
    spec: &PortMapSpec,
    u: &igd_next::aio::Gateway<igd_next::aio::tokio::Tokio>,
    local: IpAddr,
    req: PortRequest,
    want: u16,
) -> Result<(u16, u32), String> {
    use igd_next::AddPortError as E;
    let proto = igd_protocol(req.protocol);
    let to = SocketAddr::new(local, req.internal_port.get());
    let desc = format!("{} {} {}", spec.description, req.protocol, want);
    let unanswered = || format!("no answer within {} s", REQUEST_TIMEOUT.as_secs());
    let add = |lease| timeout(REQUEST_TIMEOUT, u.add_port(proto, want, to, lease, &desc));
    match add(LEASE_SECS).await.map_err(|_| unanswered())? {
        Ok(()) => Ok((want, LEASE_SECS)),
        Err(E::OnlyPermanentLeasesSupported) => match add(0).await.map_err(|_| unanswered())? {
            Ok(()) => Ok((want, 0)),
            Err(e) => Err(e.to_string()),
        },
        Err(E::PortInUse) => {
            let any = timeout(
                REQUEST_TIMEOUT,
                u.add_any_port(proto, to, LEASE_SECS, &desc),
            )
            .await
            .map_err(|_| unanswered())?
            .map_err(|e| e.to_string())?;
            Ok((any, LEASE_SECS))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A new NAT-PMP/PCP mapping: PCP first (when `pcp`); NAT-PMP when PCP fails in any way.
async fn pmp_new(
    gateway: IpAddr,
    local: IpAddr,
    req: PortRequest,
    pcp: bool,
) -> Result<crab_nat::PortMapping, String> {
    let proto = match req.protocol {
        Protocol::Tcp => crab_nat::InternetProtocol::Tcp,
        Protocol::Udp => crab_nat::InternetProtocol::Udp,
    };
    let opts = crab_nat::PortMappingOptions {
        external_port: Some(req.internal_port),
        lifetime_seconds: Some(LEASE_SECS),
        timeout_config: Some(pmp_timeouts()),
    };
    let unanswered = || format!("no answer within {} s", REQUEST_TIMEOUT.as_secs());
    if !pcp {
        return timeout(
            REQUEST_TIMEOUT,
            crab_nat::natpmp::port_mapping(gateway.into(), proto, req.internal_port, opts),
        )
        .await
        .map_err(|_| unanswered())?
        .map_err(|e| e.to_string());
    }
    let first = timeout(
        REQUEST_TIMEOUT,
        crab_nat::PortMapping::new(gateway.into(), local, proto, req.internal_port, opts),
    )
    .await
    .map_err(|_| unanswered())?;
    match first {
        Ok(m) => Ok(m),
        Err(crab_nat::MappingFailure::Pcp(pcp)) => timeout(
            REQUEST_TIMEOUT,
            crab_nat::natpmp::port_mapping(gateway.into(), proto, req.internal_port, opts),
        )
        .await
        .map_err(|_| unanswered())?
        .map_err(|e| format!("PCP: {pcp}; NAT-PMP: {e}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Removes every held mapping, each within [`REQUEST_TIMEOUT`].
async fn remove_all(g: &Gateway, slots: &mut [Slot], tx: &watch::Sender<PortMapStatus>) {
    for (i, slot) in slots.iter_mut().enumerate() {
        let result = match (slot.held.take(), g) {
            (None, _) => continue,
            (Some(Held::Upnp { external_port }), Gateway::Upnp(u)) => timeout(
                REQUEST_TIMEOUT,
                u.remove_port(igd_protocol(slot.req.protocol), external_port),
            )
            .await
            .map_err(|_| "removal unanswered".to_string())
            .and_then(|r| r.map_err(|e| e.to_string())),
            (Some(Held::Pmp(m)), _) => timeout(REQUEST_TIMEOUT, m.try_drop())
                .await
                .map_err(|_| "removal unanswered".to_string())
                .and_then(|r| r.map_err(|(e, _)| e.to_string())),
            (Some(Held::Upnp { .. }), Gateway::Pmp { .. }) => {
                Err("mapped through another gateway".to_string())
            }
        };
        tx.send_modify(|s| {
            s.mappings[i].state = match result {
                Ok(()) => MappingState::Removed,
                Err(e) => MappingState::Failed {
                    error: format!("removing: {e}"),
                },
            }
        });
    }
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

/// The IPv4 default route's gateway, from `/proc/net/route`.
pub fn default_gateway() -> Option<Ipv4Addr> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open("/proc/net/route")
        .ok()?
        .take(MAX_ROUTE_FILE)
        .read_to_string(&mut text)
        .ok()?;
    default_gateway_in(&text)
}

/// The gateway of the first up default route in `/proc/net/route` text (fields are hex,
/// the addresses in host byte order as the kernel writes them, i.e. little-endian here).
pub fn default_gateway_in(text: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dest, gw, flags, mask) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(7)?);
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        let flags = hex(flags)?;
        let up_gateway = flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY;
        if hex(dest)? != 0 || hex(mask)? != 0 || !up_gateway {
            return None;
        }
        Some(Ipv4Addr::from(hex(gw)?.to_le_bytes()))
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
}
