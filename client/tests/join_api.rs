//! Participants that join through the join API of a standalone node, and fail over by
//! themselves when that node dies and comes back on the same ports. The node runs in this
//! process on a runtime of its own, so that it can die whole: every socket and task at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use kaskade_client::{JoinConfig, JoinError, MeetingState, Participant};
use kaskade_protocol::token::{Claims, Role, TokenKey, unix_now};
use kaskade_sfu::NodeConfig;
use tokio::runtime::Runtime;

/// The machine has two cores: meetings run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(20);
/// Issue 3: participants of a lost node are back, receiving, within 5 s.
const FAILOVER_BUDGET: Duration = Duration::from_secs(5);
const NODE_NAME: &str = "standalone-a";

/// A `kaskade-sfu` node without a locator, on its own runtime.
struct StandaloneNode {
    runtime: Option<Runtime>,
    http: SocketAddr,
    udp_port: u16,
    args: Vec<String>,
}

impl StandaloneNode {
    /// Starts a node on `listen` and `udp_port` (0: any free port) with extra `args`.
    async fn start(listen: SocketAddr, udp_port: u16, args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let listen_arg = listen.to_string();
        let udp_arg = udp_port.to_string();
        let mut argv = vec![
            "kaskade-sfu",
            "--listen",
            &listen_arg,
            "--udp-port",
            &udp_arg,
            "--no-ice-tcp",
            "--name",
            NODE_NAME,
        ];
        argv.extend(args.iter().map(String::as_str));
        let config = NodeConfig::parse_from(argv);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("node runtime");
        let server = runtime
            .spawn(async move { kaskade_sfu::serve(&config).await })
            .await
            .expect("node start task")
            .expect("node binds its sockets");
        let (http, udp_port) = (server.http_addr, server.udp_addr.port());
        runtime.spawn(server.run());
        Self {
            runtime: Some(runtime),
            http,
            udp_port,
            args,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Kills the node (all its sockets close at once) and starts a new one on the same ports
    /// with the same arguments: a new process as far as clients can tell.
    async fn restart(mut self) -> Self {
        if let Some(runtime) = self.runtime.take() {
            tokio::task::spawn_blocking(move || runtime.shutdown_timeout(Duration::from_secs(5)))
                .await
                .expect("node shutdown");
        }
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        Self::start(self.http, self.udp_port, &args).await
    }
}

impl Drop for StandaloneNode {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn config(node: &StandaloneNode, meeting: &str, name: &str, token: Option<String>) -> JoinConfig {
    let mut cfg = JoinConfig::new(node.http, meeting, name);
    cfg.locator = Some(node.url());
    cfg.token = token;
    cfg.fps = 15;
    cfg.video_bitrate_bps = 200_000;
    cfg
}

/// Two participants of `meeting` that decode each other.
async fn pair(
    node: &StandaloneNode,
    meeting: &str,
    tokens: [Option<String>; 2],
) -> [Participant; 2] {
    let [ta, tb] = tokens;
    let a = Participant::join(config(node, meeting, "a", ta))
        .await
        .expect("a joins through the join API");
    let b = Participant::join(config(node, meeting, "b", tb))
        .await
        .expect("b joins through the join API");
    for p in [&a, &b] {
        p.wait_until(WAIT, |s| decodes_everyone(s, 10))
            .await
            .expect("each decodes the other");
    }
    [a, b]
}

/// Someone else is there, and each of them has sent at least `frames` decodable frames.
fn decodes_everyone(state: &MeetingState, frames: u64) -> bool {
    !state.participants.is_empty()
        && state.participants.keys().all(|id| {
            let r = state.stats.remote(*id);
            r.video_frames_decoded >= frames && r.audio_packets >= frames && r.decode_errors == 0
        })
}

/// A video frame arrived after the current session's peer connection connected.
fn decodes_in_this_session(state: &MeetingState) -> bool {
    state.connected_at.is_some_and(|connected| {
        state.participants.keys().any(|id| {
            let r = state.stats.remote(*id);
            r.last_frame_at.is_some_and(|at| at > connected)
        })
    })
}

/// Restarts the node under `people` and checks that each rejoins by itself, receives again
/// within the failover budget, and keeps counting on top of what it had counted.
async fn survive_a_restart(node: StandaloneNode, people: &[Participant]) -> StandaloneNode {
    let before: Vec<u64> = people
        .iter()
        .map(|p| p.stats().total_frames_decoded())
        .collect();
    let killed = Instant::now();
    let node = node.restart().await;
    for (p, frames) in people.iter().zip(before) {
        let state = p
            .wait_until(WAIT, |s| s.reconnects == 1 && decodes_in_this_session(s))
            .await
            .expect("a participant rejoins by itself and receives again");
        let resumed = killed.elapsed();
        println!(
            "FAILOVER participant={} resumed_within_ms={}",
            p.id(),
            resumed.as_millis()
        );
        assert!(resumed < FAILOVER_BUDGET, "media resumed after {resumed:?}");
        assert_eq!(state.failover_error, None);
        assert_eq!(p.node().as_deref(), Some(NODE_NAME));
        assert!(
            state.stats.total_frames_decoded() > frames,
            "statistics accumulate across sessions"
        );
        p.wait_until(WAIT, |s| decodes_everyone(s, 20))
            .await
            .expect("media keeps flowing after the rejoin");
    }
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_through_the_join_api_of_a_standalone_node() {
    let _serial = SERIAL.lock().await;
    let node = StandaloneNode::start("127.0.0.1:0".parse().unwrap(), 0, &[]).await;
    let [a, b] = pair(&node, "api", [None, None]).await;
    assert_eq!(
        a.node().as_deref(),
        Some(NODE_NAME),
        "the API names the node"
    );
    assert_eq!(b.node().as_deref(), Some(NODE_NAME));
    assert_eq!(a.reconnects(), 0);
    assert!(!a.welcome().token.is_empty(), "a reconnect token");

    let refused = Participant::join(config(&node, "no spaces", "c", None)).await;
    match refused {
        Err(e @ JoinError::Api { status: 400, .. }) => {
            assert_eq!(e.code(), Some("bad_request"));
            assert!(!e.is_transient());
        }
        Err(e) => panic!("expected the API to refuse the name, got {e}"),
        Ok(p) => panic!("expected a refusal, but {} joined", p.id()),
    }
    b.leave().await.unwrap();
    a.wait_until(WAIT, |s| s.participants.is_empty())
        .await
        .expect("a leave is not a loss: b does not come back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_rejoin_an_open_node_that_restarted() {
    let _serial = SERIAL.lock().await;
    let node = StandaloneNode::start("127.0.0.1:0".parse().unwrap(), 0, &[]).await;
    let people = pair(&node, "restart", [None, None]).await;
    // An open node signs reconnect tokens with a key of its own: the restarted node refuses
    // them, and the participants join as at first, with new ids.
    survive_a_restart(node, &people).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_tokens_outlive_the_join_token() {
    let _serial = SERIAL.lock().await;
    const SECRET: &str = "loadtest-failover-secret";
    let node =
        StandaloneNode::start("127.0.0.1:0".parse().unwrap(), 0, &["--secret", SECRET]).await;
    // Join tokens that expire before the node dies: only the welcome's reconnect token
    // (signed with the same secret, an hour long) can bring the participants back.
    let exp = unix_now() + 3;
    let token = |who: &str| {
        Some(TokenKey::from_secret(SECRET.as_bytes()).sign(&Claims {
            meeting: "secret".into(),
            sub: who.into(),
            name: who.into(),
            role: Role::Participant,
            exp,
            rejoin: false,
            jti: None,
            aud: None,
            dial: false,
        }))
    };
    let people = pair(&node, "secret", [token("ann"), token("bob")]).await;
    while unix_now() <= exp {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    survive_a_restart(node, &people).await;
    for (p, name) in people.iter().zip(["ann", "bob"]) {
        assert_eq!(
            p.welcome().you.name,
            name,
            "the reconnect token keeps the identity"
        );
    }
}
