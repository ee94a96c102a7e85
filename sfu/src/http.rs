//! The node's HTTP surface: web client pages, the signaling WebSocket, metrics and health.

use crate::cluster::locator::LocatorClient;
use crate::cluster::{Cluster, ClusterConfig};
use crate::config::{NodeConfig, SipOptions};
use crate::media::core::{CoreConfig, MediaCore};
use crate::media::peer::PeerSettings;
use crate::media::surroundings::{Surroundings, WallClock};
use crate::metrics::{Metrics, Refused};
use crate::node::{self, MediaSockets, NodeHandle};
use crate::signaling::session::{self, Auth, MAX_FRAME};
use crate::sip::ua::{SYSTEM_ROOTS, SipTls, TlsListener};
use crate::sip::{
    CallPolicy, Dialplan, DigestCredential, SipGateway, SipMetrics, SipSettings, Trunk,
};
use crate::token::Role;
use crate::token::TokenKey;
use anyhow::Context as _;
use axum::extract::{ConnectInfo, Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kaskade_limits::{IpLimits, Refusal};
use kaskade_process_gauges::ProcessGauges;
use kaskade_protocol::cluster::{ApiError, JoinRequest, JoinResponse};
use kaskade_protocol::signaling::valid_meeting;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

#[derive(Clone)]
struct AppState {
    node: NodeHandle,
    sip: Option<Arc<SipGateway>>,
    auth: Arc<Auth>,
    limits: Arc<IpLimits>,
    metrics: Arc<Metrics>,
    name: String,
    cluster: Option<Cluster>,
}

/// A node whose sockets are bound and whose core runs, with the router of its HTTP surface
/// (to serve on its own listener, or to nest in a locator's). Whoever serves the router
/// serves it with `ConnectInfo<SocketAddr>`: the per-address limits need the client's address.
pub struct Node {
    /// Where the media UDP socket is bound.
    pub udp_addr: SocketAddr,
    /// The node's HTTP routes.
    pub router: Router,
}

/// A running node: its HTTP address and the router serving it.
pub struct Server {
    /// Where the HTTP listener is bound.
    pub http_addr: SocketAddr,
    /// Where the media UDP socket is bound.
    pub udp_addr: SocketAddr,
    listener: TcpListener,
    router: Router,
}

impl Server {
    /// Serves until the process ends.
    pub async fn run(self) -> std::io::Result<()> {
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, service).await
    }
}

/// Binds every socket of a node and builds its router; call [`Server::run`] to serve.
pub async fn serve(config: &NodeConfig) -> anyhow::Result<Server> {
    let listener = TcpListener::bind(config.listen).await?;
    let http_addr = listener.local_addr()?;
    // the bound address (an ephemeral port resolved) is what others reach and what names it
    let config = NodeConfig {
        listen: http_addr,
        ..config.clone()
    };
    let node = build(&config).await?;
    info!(%http_addr, udp_addr = %node.udp_addr, "node ready");
    Ok(Server {
        http_addr,
        udp_addr: node.udp_addr,
        listener,
        router: node.router,
    })
}

/// Binds the media sockets, starts the core and builds the HTTP routes, without an HTTP
/// listener of its own.
pub async fn build(config: &NodeConfig) -> anyhow::Result<Node> {
    let media_ip = config.media_ip();
    let sockets = MediaSockets::bind(
        SocketAddr::new(media_ip, config.udp_port),
        (!config.no_ice_tcp).then(|| SocketAddr::new(media_ip, config.tcp_port)),
    )
    .await?;
    let udp_addr = sockets.udp.local_addr()?;
    let tcp_port = match &sockets.tcp {
        Some(listener) => Some(listener.local_addr()?.port()),
        None => None,
    };
    let announced = config.announced_ips();
    let peer = peer_settings(config, &announced, udp_addr.port(), tcp_port);
    let standalone = config.locators.is_empty();
    if !standalone && config.secret.is_none() {
        anyhow::bail!("--locator needs --secret: the cluster secret shared with the locator");
    }
    let mut sip_metrics = SipMetrics::default();
    let metrics = Arc::new(Metrics::with_extra(|registry| {
        let gauges = ProcessGauges::register(registry);
        sip_metrics = SipMetrics::register(registry);
        let sip = sip_metrics.clone();
        Box::new(move || {
            gauges.sample();
            sip.sample();
        })
    }));
    let core = MediaCore::new(
        CoreConfig {
            max_room_size: config.max_room_size,
            max_participants: config.max_participants,
            first_is_moderator: config.secret.is_none(),
            peer: Arc::new(peer),
            node_name: config.node_name(),
        },
        metrics.clone(),
        system_surroundings(),
    );
    let (events, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let node = node::spawn(
        core,
        sockets,
        metrics.clone(),
        (!standalone).then_some(events),
    );
    let cluster = (!standalone).then(|| {
        let media_addr = SocketAddr::new(announced[0], udp_addr.port());
        Cluster::start(
            cluster_config(config, media_addr),
            node.clone(),
            metrics.clone(),
            events_rx,
        )
    });
    let (key, open) = match &config.secret {
        Some(secret) => (TokenKey::from_secret(secret.as_bytes()), false),
        None => {
            warn!("no --secret: anyone who can reach this node may join its meetings");
            (TokenKey::random(), true)
        }
    };
    let auth = Arc::new(Auth::new(key, open, config.node_name(), standalone));
    let sip = start_sip(config, &node, sip_metrics).await?;
    let router = router(AppState {
        node,
        sip,
        auth,
        limits: IpLimits::new(config.ip_limits),
        metrics,
        name: config.node_name(),
        cluster,
    });
    debug!(%udp_addr, ?tcp_port, "media sockets bound");
    Ok(Node { udp_addr, router })
}

/// How the node's peer connections announce themselves: a UDP candidate per announced
/// address, and an ICE-TCP one when `tcp_port` listens.
fn peer_settings(
    config: &NodeConfig,
    announced: &[std::net::IpAddr],
    udp_port: u16,
    tcp_port: Option<u16>,
) -> PeerSettings {
    let candidates = |port: u16| -> Vec<SocketAddr> {
        announced
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect()
    };
    PeerSettings {
        udp_candidates: candidates(udp_port),
        tcp_candidates: tcp_port.map(candidates).unwrap_or_default(),
        legacy_srtp: config.legacy_srtp,
        max_slots: 31,
    }
}

/// The SIP gateway when `--sip-listen` asks for one; its calls' RTP is bound on the SIP
/// address (what the far end reaches; the node's announced one when it listens on all).
async fn start_sip(
    config: &NodeConfig,
    node: &NodeHandle,
    metrics: SipMetrics,
) -> anyhow::Result<Option<Arc<SipGateway>>> {
    let Some(listen) = config.sip.sip_listen else {
        return Ok(None);
    };
    let settings = SipSettings {
        listen,
        user: config.sip.sip_user.clone(),
        credential: config
            .sip
            .sip_password
            .as_ref()
            .map(|password| DigestCredential {
                user: config
                    .sip
                    .sip_auth_user
                    .clone()
                    .unwrap_or_else(|| config.sip.sip_user.clone()),
                password: password.clone(),
            }),
        outbound_proxy: config.sip.sip_proxy,
        registrar: config.sip.sip_register.clone(),
        keep_alive: config.sip.sip_keepalive,
        tls: sip_tls(&config.sip)?,
    };
    // the SDP must name an address the far end reaches: the SIP address, or the node's
    let media_ip = if listen.ip().is_unspecified() {
        config.announced_ips()[0]
    } else {
        listen.ip()
    };
    let ips = (media_ip, config.media_ip());
    let policy = CallPolicy {
        ring: config.sip.sip_ring_timeout,
        media: config.sip.sip_media_timeout,
        srtp: config.sip.sip_srtp,
        picture: config.sip.picture(),
    };
    let locator = (!config.locators.is_empty()).then(|| {
        LocatorClient::new(
            config.locators.clone(),
            config.secret.clone().unwrap_or_default().into_bytes(),
            config.node_name(),
        )
    });
    let trunk = Trunk {
        phone_uri: config.sip.sip_phone_uri.clone(),
        dial_in_number: config.sip.sip_dial_in_number.clone(),
    };
    let dialplan = Dialplan::new(locator, config.sip.sip_credentials.clone(), trunk);
    let gateway =
        SipGateway::start(settings, ips, policy, (dialplan, node.clone(), metrics)).await?;
    info!(sip = %gateway.sip_addr(), "SIP gateway ready");
    Ok(Some(gateway))
}

/// The node's SIP over TLS from its options: the listener's certificate and key, and the roots
/// for calls out (the system's when none are given and the system has them).
fn sip_tls(options: &SipOptions) -> anyhow::Result<SipTls> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    let listener = match (
        &options.sip_tls_listen,
        &options.sip_tls_cert,
        &options.sip_tls_key,
    ) {
        (Some(listen), Some(certificate), Some(key)) => Some(TlsListener {
            listen: *listen,
            certificate: read(certificate)?,
            key: read(key)?,
        }),
        _ => None,
    };
    let roots = match &options.sip_tls_ca {
        Some(path) => Some(read(path)?),
        None => std::fs::read(SYSTEM_ROOTS).ok(),
    };
    Ok(SipTls { listener, roots })
}

/// What the cluster shell needs to register the node with its locators.
fn cluster_config(config: &NodeConfig, media_addr: SocketAddr) -> ClusterConfig {
    ClusterConfig {
        locators: config.locators.clone(),
        secret: config.secret.clone().unwrap_or_default().into_bytes(),
        name: config.node_name(),
        signaling_url: config.signaling_url(),
        http_url: config.advertised_url(),
        media_addr,
        region: config.region.clone(),
        capacity: config.max_participants as u32,
        max_bitrate_out_bps: config.max_bitrate_mbps.map(|m| m * 1_000_000),
    }
}

/// The core's wall clock, read now, and a generator seeded by the operating system.
fn system_surroundings() -> Surroundings {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Surroundings {
        clock: WallClock::new(Instant::now(), unix_ms),
        rng: StdRng::from_os_rng(),
    }
}

fn router(state: AppState) -> Router {
    let node_routes = Router::new()
        .route("/ws", get(websocket))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }));
    let node_routes = if state.cluster.is_some() {
        node_routes.route("/cascade", get(cascade))
    } else {
        node_routes
            .route("/api/meetings/{meeting}/join", post(join))
            .merge(kaskade_web::pages())
    };
    node_routes.with_state(state)
}

/// A peer node dials this node's cascade link (`?from=NAME`).
async fn cascade(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    Query(query): Query<CascadeQuery>,
) -> Response {
    let Some(cluster) = state.cluster else {
        return StatusCode::NOT_FOUND.into_response();
    };
    ws.max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| async move { cluster.accept(query.from, socket).await })
}

#[derive(serde::Deserialize)]
struct CascadeQuery {
    from: String,
}

/// `POST /api/meetings/{meeting}/join` of a node without a locator: join here. The token, if
/// any, is checked when the client presents it in its `join` frame.
async fn join(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(meeting): Path<String>,
    headers: HeaderMap,
    body: Option<Json<JoinRequest>>,
) -> Response {
    if let Err(refusal) = state.limits.join(client.ip(), Instant::now()) {
        return refused(&state, client, refusal);
    }
    if !valid_meeting(&meeting) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "meeting names are 1 to 64 characters of A-Z a-z 0-9 _ . -",
        );
    }
    let request = body.map(|Json(r)| r).unwrap_or_default();
    let token = request
        .token
        .or_else(|| bearer(&headers))
        .unwrap_or_default();
    if token.is_empty() && !state.auth.open {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "this node requires a token",
        );
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    // behind a TLS-terminating proxy the page is https and signaling must be wss
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some("https") => "wss",
        _ => "ws",
    };
    Json(JoinResponse {
        meeting,
        node: state.name.clone(),
        signaling_url: format!("{scheme}://{host}/ws"),
        token,
        role: Role::Participant,
    })
    .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

fn api_error(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        Json(ApiError {
            error: error.into(),
            message: message.into(),
        }),
    )
        .into_response()
}

/// `GET /ws`: one signaling session, within the client address's limits (refused with 429
/// before the upgrade otherwise).
async fn websocket(
    ws: WebSocketUpgrade,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
) -> Response {
    let now = Instant::now();
    let admitted = state
        .limits
        .join(client.ip(), now)
        .and_then(|()| state.limits.connect(client.ip(), now));
    let held = match admitted {
        Ok(held) => held,
        Err(refusal) => return refused(&state, client, refusal),
    };
    ws.max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| async move {
            session::run(socket, state.node, state.auth, state.sip).await;
            drop(held);
        })
}

/// The answer to a client over its address's limits, counted and logged.
fn refused(state: &AppState, client: SocketAddr, refusal: Refusal) -> Response {
    state.metrics.refuse(match refusal {
        Refusal::TooManyConnections(_) => Refused::ConnectionsPerIp,
        Refusal::JoinRate(_) => Refused::JoinRatePerIp,
    });
    info!(client = %client.ip(), "refused: {refusal}");
    api_error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        &refusal.to_string(),
    )
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
