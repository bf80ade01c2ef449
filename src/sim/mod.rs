//! A WTS Chat API simulator, faithful to the documented API (`wts-api.md`), that tests,
//! the demo and the benchmarks run against. It keeps its own wire types: nothing here
//! comes from the client, so a client bug cannot hide behind a shared type.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use wtsbot::sim::{SimConfig, SimSession, WtsSim};
//! let sim = WtsSim::start(SimConfig::default()).await?;
//! let session = sim.add_session(SimSession::new().with_contact_name("Maria"));
//! // point a client at sim.base_url() with sim.token(), then inspect:
//! let sent = sim.messages(&session);
//! # drop(sent); sim.shutdown().await; Ok(()) }
//! ```

mod control;
pub mod customers;
mod faults;
mod files;
mod model;
mod server;
mod sessions;
mod state;
mod webhooks;
mod wire;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use faults::{Fault, FaultKind, RateLimit};
pub use model::{
    DEFAULT_CHANNEL_ID, RecordedRequest, SimAgent, SimContact, SimDelivery, SimDepartment,
    SimMessage, SimSession, SimSubscription, SimTag, SimUpload, UploadFlow,
};
pub use webhooks::EVENTS;
pub use wire::wts_time;

use faults::Limiter;
use state::{Shared, World, lock};

#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The API token every authenticated route requires as `Bearer`.
    pub token: String,
    pub bind: SocketAddr,
    /// Create a session (with a generated contact, no agent) on first reference to its id.
    pub auto_sessions: bool,
    /// After this, a sent message turns `DELIVERED` and `MESSAGE_UPDATED` is posted;
    /// `None` leaves messages in their first status.
    pub delivery_delay: Option<Duration>,
    /// The account rate limit; `None` (the default) admits everything.
    pub rate_limit: Option<RateLimit>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            token: "sim-token".to_owned(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            auto_sessions: true,
            delivery_delay: Some(Duration::from_millis(200)),
            rate_limit: None,
        }
    }
}

/// A running simulator. Clones share the same server and state.
#[derive(Clone)]
pub struct WtsSim {
    shared: Arc<Shared>,
    accept: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl WtsSim {
    /// Binds `config.bind` and serves until [`WtsSim::shutdown`].
    pub async fn start(config: SimConfig) -> std::io::Result<WtsSim> {
        let listener = TcpListener::bind(config.bind).await?;
        let address = listener.local_addr()?;
        let webhook_client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            token: config.token,
            auto_sessions: config.auto_sessions,
            delivery_delay: config.delivery_delay,
            base_url: format!("http://{address}"),
            world: Mutex::new(World::default()),
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            limiter: Mutex::new(config.rate_limit.map(Limiter::new)),
            deliveries: Mutex::new(Vec::new()),
            webhook_client,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let accept = tokio::spawn(server::accept_loop(listener, shared.clone()));
        tracing::debug!(base_url = %shared.base_url, "wts-sim listening");
        Ok(WtsSim {
            shared,
            accept: Arc::new(Mutex::new(Some(accept))),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn token(&self) -> String {
        self.shared.token.clone()
    }

    /// Adds (or replaces, by id) a session; returns its id.
    pub fn add_session(&self, session: SimSession) -> String {
        let id = session.id.clone();
        lock(&self.shared.world)
            .sessions
            .insert(id.clone(), session);
        id
    }

    pub fn session(&self, session_id: &str) -> Option<SimSession> {
        lock(&self.shared.world).sessions.get(session_id).cloned()
    }

    /// Makes sends into the session fail (200, status `FAILED`, this reason), or succeed again.
    /// Returns false when the session does not exist.
    pub fn set_channel_failure(&self, session_id: &str, reason: Option<String>) -> bool {
        let mut world = lock(&self.shared.world);
        match world.sessions.get_mut(session_id) {
            Some(session) => {
                session.channel_failure = reason;
                true
            }
            None => false,
        }
    }

    /// Queues a fault behind those already queued.
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.shared.faults).push_back(fault);
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Turns the account rate limit on (with fresh windows) or off.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        *lock(&self.shared.limiter) = limit.map(Limiter::new);
    }

    /// Every request received so far, oldest first (`/_sim/` control routes excluded).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The messages sent into a session, oldest first.
    pub fn messages(&self, session_id: &str) -> Vec<SimMessage> {
        lock(&self.shared.world)
            .session_messages(session_id)
            .cloned()
            .collect()
    }

    pub fn all_messages(&self) -> Vec<SimMessage> {
        lock(&self.shared.world).all_messages().to_vec()
    }

    /// Confirmed files, with their bytes, in confirmation order.
    pub fn uploads(&self) -> Vec<SimUpload> {
        lock(&self.shared.world).files().to_vec()
    }

    pub fn subscriptions(&self) -> Vec<SimSubscription> {
        lock(&self.shared.world).subscriptions.clone()
    }

    /// Webhook POSTs made to subscriptions so far, in completion order.
    pub fn deliveries(&self) -> Vec<SimDelivery> {
        lock(&self.shared.deliveries).clone()
    }

    /// Forgets sessions, messages, files, subscriptions, the request log, deliveries and
    /// queued faults, and restarts the rate-limit windows.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops accepting, closes open connections and stops background deliveries.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        let accept = lock(&self.accept).take();
        if let Some(accept) = accept {
            let _ = accept.await;
        }
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

impl Shared {
    fn reset(&self) {
        *lock(&self.world) = World::default();
        lock(&self.requests).clear();
        lock(&self.deliveries).clear();
        lock(&self.faults).clear();
        let mut limiter = lock(&self.limiter);
        if let Some(limit) = limiter.as_ref().map(Limiter::limit) {
            *limiter = Some(Limiter::new(limit));
        }
    }
}
