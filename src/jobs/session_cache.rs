//! Session details from WTS, kept per session for `bot.session_cache_ttl` and dropped
//! when WTS reports the session or its contact changed.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::rules::{AgentFacts, SessionFacts};
use crate::wts::SessionDetails;

#[derive(Debug, Default)]
pub struct SessionCache {
    ttl_ms: i64,
    entries: Mutex<HashMap<String, (SessionFacts, i64)>>,
}

impl SessionCache {
    pub fn new(ttl_ms: i64) -> SessionCache {
        SessionCache {
            ttl_ms,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached details of `session_id`, unless older than the TTL at `now`.
    pub fn get(&self, session_id: &str, now: i64) -> Option<SessionFacts> {
        let mut entries = self.lock();
        match entries.get(session_id) {
            Some((facts, expires_at)) if *expires_at > now => Some(facts.clone()),
            Some(_) => {
                entries.remove(session_id);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, session_id: &str, facts: SessionFacts, now: i64) {
        if self.ttl_ms <= 0 {
            return;
        }
        let mut entries = self.lock();
        // Expired entries go when the map grows, so it never outgrows the live sessions.
        if entries.len() >= 10_000 {
            entries.retain(|_, (_, expires_at)| *expires_at > now);
        }
        entries.insert(session_id.to_string(), (facts, now + self.ttl_ms));
    }

    pub fn forget(&self, session_id: &str) {
        self.lock().remove(session_id);
    }

    /// Drops every entry (a contact changed, and which sessions are its is not known).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (SessionFacts, i64)>> {
        // A panic while holding the lock leaves a plain map behind: still usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the rules see of a session's details.
pub fn session_facts(details: SessionDetails) -> SessionFacts {
    SessionFacts {
        agent: details.agent.map(|agent| AgentFacts {
            id: agent.id,
            name: agent.name,
        }),
        channel_id: details.channel_id,
        department_id: details.department_id,
        contact_id: None,
        contact_name: details.contact_name,
        contact_phone: details.contact_phone,
        contact_tags: details.contact_tags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str) -> SessionFacts {
        SessionFacts {
            contact_name: Some(name.into()),
            ..SessionFacts::default()
        }
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = SessionCache::new(1_000);
        cache.put("s", facts("Maria"), 10_000);
        assert_eq!(cache.get("s", 10_999), Some(facts("Maria")));
        assert_eq!(cache.get("s", 11_000), None);
        assert_eq!(cache.get("s", 10_500), None, "an expired entry is gone");
    }

    #[test]
    fn forget_and_clear_drop_entries() {
        let cache = SessionCache::new(60_000);
        cache.put("a", facts("A"), 0);
        cache.put("b", facts("B"), 0);
        cache.forget("a");
        assert_eq!(cache.get("a", 1), None);
        assert!(cache.get("b", 1).is_some());
        cache.clear();
        assert_eq!(cache.get("b", 1), None);
    }

    #[test]
    fn a_zero_ttl_caches_nothing() {
        let cache = SessionCache::new(0);
        cache.put("s", facts("Maria"), 0);
        assert_eq!(cache.get("s", 0), None);
    }
}
