//! Running a locator: the state store, the sweeper that drops silent nodes, and the HTTP
//! server, with the embedded node unless `--cluster`.

use crate::api::{self, ApiConfig, AppState};
use crate::cdr::CdrDb;
use crate::config::ServeConfig;
use crate::embedded;
use crate::placement::PlacementConfig;
use crate::state::{MemoryStore, NodeState, Now, RedisStore, Store};
use anyhow::{Context, bail};
use axum::Router;
use kaskade_protocol::cluster::hex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// A serving locator; dropping it stops it.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    server: JoinHandle<std::io::Result<()>>,
    sweeper: JoinHandle<()>,
}

impl Running {
    /// Serves until the server fails.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        (&mut self.server).await??;
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
        self.sweeper.abort();
    }
}

/// How long the all-in-one waits for its embedded node's first report.
const EMBEDDED_NODE_DEADLINE: Duration = Duration::from_secs(20);

/// Waits until the embedded node has registered and takes participants, so the printed URL
/// places the first participant instead of answering `no_capacity`.
async fn await_embedded_node(store: &dyn Store) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + EMBEDDED_NODE_DEADLINE;
    loop {
        let nodes = store.nodes(Now::current()).await?;
        if nodes.iter().any(|n| n.state == NodeState::Up) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the embedded node did not register within {EMBEDDED_NODE_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Serves `router` on `listener` and sweeps `store` a few times per node timeout.
pub fn spawn(
    listener: TcpListener,
    router: Router,
    store: Arc<dyn Store>,
    node_timeout: Duration,
) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, service).await });
    let every = (node_timeout / 4).max(Duration::from_millis(100));
    let sweeper = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            if let Err(e) = store.sweep(Now::current()).await {
                warn!("sweeping the state: {e}");
            }
        }
    });
    Ok(Running {
        addr,
        server,
        sweeper,
    })
}

/// The placement limits of `config`.
pub fn placement_config(config: &ServeConfig) -> PlacementConfig {
    PlacementConfig {
        node_timeout: config.node_timeout,
        max_meeting_size: config.max_room_size,
    }
}

/// Opens the state `config` asks for.
pub async fn open_store(config: &ServeConfig) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.redis {
        Some(url) => Arc::new(
            RedisStore::connect(url, placement_config(config))
                .await
                .with_context(|| format!("connecting to {url}"))?,
        ),
        None => Arc::new(MemoryStore::new(placement_config(config))),
    })
}

/// Starts the locator `config` describes and prints how to reach it.
pub async fn run(config: ServeConfig) -> anyhow::Result<Running> {
    if config.cluster && config.secret.is_none() {
        bail!("--cluster needs --secret (or KASKADE_SECRET): nodes prove with it that they belong");
    }
    let open = config.secret.is_none();
    let secret = config
        .secret
        .clone()
        .unwrap_or_else(|| hex(&rand::random::<[u8; 32]>()));
    let store = open_store(&config).await?;
    let cdr = CdrDb::open(&config.db)
        .with_context(|| format!("opening the call records at {}", config.db.display()))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let api_config = ApiConfig {
        secret: secret.as_bytes().to_vec(),
        open,
        api_key: config.api_key.clone(),
        node_timeout: config.node_timeout,
        // the all-in-one's recorder answers on this very listener
        embedded_recorder: (!config.cluster).then(|| format!("http://{addr}")),
        ip_limits: config.ip_limits,
    };
    let mut router = api::router(AppState::new(api_config, store.clone(), cdr));
    if !config.cluster {
        let node = embedded::build(&config, addr, &secret).await?;
        println!("kaskade media: udp {}", node.udp_addr);
        router = router
            .nest(embedded::NODE_PATH, node.router)
            .merge(embedded::recorder(&config, &secret, open));
    }
    if open {
        warn!(
            "no --secret: open joins are allowed; anyone who reaches http://{addr} may join any \
             meeting, and the first participant of a meeting is its moderator"
        );
    }
    info!(%addr, cluster = config.cluster, redis = config.redis.is_some(), "locator ready");
    let running = spawn(listener, router, store.clone(), config.node_timeout)?;
    if !config.cluster {
        await_embedded_node(store.as_ref()).await?;
    }
    println!("kaskade is running: open http://{addr}/m/hello");
    Ok(running)
}
