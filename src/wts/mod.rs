//! The WTS Chat API client: sends in session, the v2 upload flow, session lookups,
//! message listing and webhook subscriptions, with pacing under the account limits and
//! one error type that tells retryable from permanent failures.

mod client;
mod dto;
mod error;
mod pacing;
mod retry;
mod upload;

pub use client::{Timeouts, WtsClient};
pub use dto::{
    Agent, FileType, MessageStatus, NewSubscription, SendBody, SentMessage, SessionDetails,
    SessionMessage, SubscriptionUpdate, UploadTicket, UploadedFile, WebhookEventInfo,
    WebhookSubscription,
};
pub use error::WtsError;
pub use pacing::{Budget, Pacer, TokenBucketPacer, Unpaced};
pub use retry::{RetryPolicy, retrying, retrying_when};
pub use upload::{FileFacts, UploadSource};
