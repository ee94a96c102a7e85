//! The node's HTTP surface: web client pages, the signaling WebSocket, metrics and health.

use crate::config::NodeConfig;
use crate::media::core::{CoreConfig, MediaCore};
use crate::media::peer::PeerSettings;
use crate::metrics::Metrics;
use crate::node::{self, MediaSockets, NodeHandle};
use crate::signaling::session::{self, Auth, MAX_FRAME};
use crate::token::TokenKey;
use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::{info, warn};

#[derive(Clone)]
struct AppState {
    node: NodeHandle,
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
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
        axum::serve(self.listener, self.router).await
    }
}

/// Binds every socket of a node and builds its router; call [`Server::run`] to serve.
pub async fn serve(config: &NodeConfig) -> anyhow::Result<Server> {
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
    let peer = PeerSettings {
        udp_candidates: announced
            .iter()
            .map(|ip| SocketAddr::new(*ip, udp_addr.port()))
            .collect(),
        tcp_candidates: tcp_port
            .map(|port| {
                announced
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, port))
                    .collect()
            })
            .unwrap_or_default(),
        legacy_srtp: config.legacy_srtp,
        max_slots: 31,
    };
    let metrics = Arc::new(Metrics::new());
    let core = MediaCore::new(
        CoreConfig {
            max_room_size: config.max_room_size,
            max_participants: config.max_participants,
            first_is_moderator: config.secret.is_none(),
            peer: Arc::new(peer),
        },
        metrics.clone(),
    );
    let node = node::spawn(core, sockets, metrics.clone());
    let auth = Arc::new(match &config.secret {
        Some(secret) => Auth {
            key: TokenKey::from_secret(secret.as_bytes()),
            open: false,
        },
        None => {
            warn!("no --secret: anyone who can reach this node may join its meetings");
            Auth {
                key: TokenKey::random(),
                open: true,
            }
        }
    });
    let router = router(AppState {
        node,
        auth,
        metrics,
    });
    let listener = TcpListener::bind(config.listen).await?;
    let http_addr = listener.local_addr()?;
    info!(%http_addr, %udp_addr, ?tcp_port, "node ready");
    Ok(Server {
        http_addr,
        udp_addr,
        listener,
        router,
    })
}

fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { Html(include_str!("../web/index.html")) }),
        )
        .route(
            "/m/{meeting}",
            get(|| async { Html(include_str!("../web/meeting.html")) }),
        )
        .route(
            "/static/client.js",
            get(|| async { asset("text/javascript", include_str!("../web/client.js")) }),
        )
        .route(
            "/static/style.css",
            get(|| async { asset("text/css", include_str!("../web/style.css")) }),
        )
        .route("/ws", get(websocket))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn websocket(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    ws.max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| session::run(socket, state.node, state.auth))
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
