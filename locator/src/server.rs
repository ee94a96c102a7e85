//! Running a locator: the state store, the sweeper that drops silent nodes, and the HTTP
//! server. [`run`] is `kaskade-locator`; the all-in-one binds with [`Bound::bind`], builds its
//! node and recorder on the bound address, and serves them beside the locator's routes.

use crate::api::{self, ApiConfig, AppState, Kept};
use crate::cdr::CdrDb;
use crate::config::ServeConfig;
use crate::dial_in::DialIns;
use crate::directory::Directory;
use crate::placement::PlacementConfig;
use crate::state::{MemoryStore, NodeState, Now, RedisStore, Store};
use anyhow::{Context, bail};
use axum::Router;
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
    store: Arc<dyn Store>,
    server: JoinHandle<std::io::Result<()>>,
    sweeper: JoinHandle<()>,
}

impl Running {
    /// Serves until the server fails.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        (&mut self.server).await??;
        Ok(())
    }

    /// Waits until some node has registered and takes participants (within `deadline`), so
    /// that a URL printed afterwards places its first participant instead of answering
    /// `no_capacity`.
    pub async fn wait_for_a_node(&self, deadline: Duration) -> anyhow::Result<()> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let nodes = self.store.nodes(Now::current()).await?;
            if nodes.iter().any(|n| n.state == NodeState::Up) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= until {
                bail!("no node registered within {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
        self.sweeper.abort();
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
    let swept = Arc::clone(&store);
    let server = tokio::spawn(async move { axum::serve(listener, service).await });
    let every = (node_timeout / 4).max(Duration::from_millis(100));
    let sweeper = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            if let Err(e) = swept.sweep(Now::current()).await {
                warn!("sweeping the state: {e}");
            }
        }
    });
    Ok(Running {
        addr,
        store,
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

/// Who may join: the secret that signs tokens and node credentials, and whether joins without a
/// token are allowed (the all-in-one without `--secret`).
#[derive(Debug, Clone)]
pub struct Access {
    /// The cluster secret.
    pub secret: String,
    /// Open joins: anyone who reaches the locator may join any meeting.
    pub open: bool,
}

/// A locator whose listener, state and call records are open, not yet serving.
pub struct Bound {
    config: ServeConfig,
    access: Access,
    listener: TcpListener,
    store: Arc<dyn Store>,
    kept: Kept,
}

impl Bound {
    /// Opens the state and the call records `config` asks for and binds its listener.
    pub async fn bind(config: ServeConfig, access: Access) -> anyhow::Result<Self> {
        let store = open_store(&config).await?;
        let cdr = CdrDb::open(&config.db)
            .with_context(|| format!("opening the call records at {}", config.db.display()))?;
        let directory = Directory::open(config.redis.as_deref(), &config.db)
            .await
            .context("opening the SIP directory")?;
        let dial_ins = DialIns::open(config.redis.as_deref(), &config.db)
            .await
            .context("opening the dial-in numbers")?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        Ok(Self {
            config,
            access,
            listener,
            store,
            kept: Kept {
                cdr,
                directory,
                dial_ins,
            },
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves the locator's routes merged with `extra`; `recorder` is the base URL of a
    /// recorder that needs no reports (the all-in-one's own).
    pub fn serve(self, extra: Router, recorder: Option<String>) -> anyhow::Result<Running> {
        let addr = self.addr()?;
        let api_config = ApiConfig {
            secret: self.access.secret.as_bytes().to_vec(),
            open: self.access.open,
            api_key: self.config.api_key.clone(),
            node_timeout: self.config.node_timeout,
            embedded_recorder: recorder,
            ip_limits: self.config.ip_limits,
        };
        let state = AppState::new(api_config, Arc::clone(&self.store), self.kept);
        let router = api::router(state).merge(extra);
        if self.access.open {
            warn!(
                "no --secret: open joins are allowed; anyone who reaches http://{addr} may join \
                 any meeting, and the first participant of a meeting is its moderator"
            );
        }
        info!(%addr, redis = self.config.redis.is_some(), "locator ready");
        Ok(spawn(
            self.listener,
            router,
            self.store,
            self.config.node_timeout,
        )?)
    }
}

/// The line that tells a person where kaskade runs (tests and scripts read it too).
pub fn print_ready(addr: SocketAddr) {
    println!("kaskade is running: open http://{addr}/m/hello");
}

/// `kaskade-locator`: serves the locator `config` describes, for nodes that report to it.
pub async fn run(config: ServeConfig) -> anyhow::Result<Running> {
    let Some(secret) = config.secret.clone() else {
        bail!(
            "kaskade-locator needs --secret (or KASKADE_SECRET): nodes prove with it that they \
             belong; one machine without a cluster runs `kaskade`, the all-in-one"
        );
    };
    let access = Access {
        secret,
        open: false,
    };
    let running = Bound::bind(config, access)
        .await?
        .serve(Router::new(), None)?;
    print_ready(running.addr);
    Ok(running)
}
