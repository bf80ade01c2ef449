//! The simulator's shared state behind its HTTP surface and its inspection API.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::faults::{Fault, Limiter};
use super::model::{
    RecordedRequest, SimDelivery, SimMessage, SimSession, SimSubscription, SimUpload, UploadFlow,
};

/// Locks a mutex, carrying on after a panic elsewhere: the state stays usable for inspection.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct Shared {
    pub token: String,
    pub auto_sessions: bool,
    pub delivery_delay: Option<Duration>,
    pub base_url: String,
    pub world: Mutex<World>,
    pub requests: Mutex<Vec<RecordedRequest>>,
    pub faults: Mutex<VecDeque<Fault>>,
    pub limiter: Mutex<Option<Limiter>>,
    pub deliveries: Mutex<Vec<SimDelivery>>,
    pub webhook_client: reqwest::Client,
    pub cancel: CancellationToken,
    pub tasks: TaskTracker,
}

impl Shared {
    pub fn record(&self, request: RecordedRequest) {
        lock(&self.requests).push(request);
    }
}

/// An upload announced by `GET /core/v2/file` or `POST /core/v1/file/upload`.
#[derive(Debug)]
pub(crate) struct PendingUpload {
    pub flow: UploadFlow,
    pub name: String,
    pub mime_type: String,
    /// The `Type` asked for (v2); `UNDEFINED` means "detect".
    pub declared_type: String,
    pub signature: String,
    pub key: String,
    /// The bytes and `Content-Type` of the PUT, once it happened.
    pub content: Option<(Bytes, Option<String>)>,
    pub confirmed: bool,
}

#[derive(Default)]
pub(crate) struct World {
    pub sessions: HashMap<String, SimSession>,
    messages: Vec<SimMessage>,
    message_index: HashMap<String, usize>,
    session_messages: HashMap<String, Vec<usize>>,
    /// By tempFileId.
    pub pending_uploads: HashMap<String, PendingUpload>,
    /// v1 `keyS3` → tempFileId.
    pub v1_keys: HashMap<String, String>,
    files: Vec<SimUpload>,
    file_index: HashMap<String, usize>,
    pub subscriptions: Vec<SimSubscription>,
}

impl World {
    /// The session, created with a generated contact when `auto` allows it.
    pub fn session(&mut self, id: &str, auto: bool) -> Option<&SimSession> {
        if auto && !self.sessions.contains_key(id) {
            self.sessions.insert(
                id.to_owned(),
                SimSession::with_generated_contact(id.to_owned()),
            );
        }
        self.sessions.get(id)
    }

    pub fn insert_message(&mut self, message: SimMessage) {
        let index = self.messages.len();
        self.message_index.insert(message.id.clone(), index);
        self.session_messages
            .entry(message.session_id.clone())
            .or_default()
            .push(index);
        self.messages.push(message);
    }

    pub fn message(&self, id: &str) -> Option<&SimMessage> {
        self.message_index.get(id).map(|&i| &self.messages[i])
    }

    pub fn message_mut(&mut self, id: &str) -> Option<&mut SimMessage> {
        self.message_index.get(id).map(|&i| &mut self.messages[i])
    }

    /// A session's messages, oldest first.
    pub fn session_messages(&self, session_id: &str) -> impl Iterator<Item = &SimMessage> {
        self.session_messages
            .get(session_id)
            .into_iter()
            .flatten()
            .map(|&i| &self.messages[i])
    }

    pub fn all_messages(&self) -> &[SimMessage] {
        &self.messages
    }

    pub fn insert_file(&mut self, file: SimUpload) {
        self.file_index.insert(file.id.clone(), self.files.len());
        self.files.push(file);
    }

    pub fn file(&self, id: &str) -> Option<&SimUpload> {
        self.file_index.get(id).map(|&i| &self.files[i])
    }

    pub fn files(&self) -> &[SimUpload] {
        &self.files
    }
}
