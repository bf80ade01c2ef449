//! The durable inbox: a group-commit writer for ingress, and the wake-up signal the
//! dispatcher waits on.

mod signal;
mod writer;

pub use signal::{InboxSignal, listen_postgres};
pub use writer::{InboxError, InboxWriter};
