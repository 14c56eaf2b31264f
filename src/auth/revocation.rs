//! What a staff token may still do after it was issued.
//!
//! A token carries the role its holder had at login and stays valid until
//! it expires. The `Staff` guard checks each staff user's current state in
//! the platform database: a deactivated user's token answers 401 and a
//! demoted user acts with the lower role. The answer is cached per process
//! for [`TTL`]; a change of a staff user's role or active flag makes the
//! platform database NOTIFY `posd_staff`, and every instance drops its
//! entry at once ([`crate::invalidation`]); the TTL is the fallback.
//!
//! The token's `sub` must name a staff user that exists, is active and
//! belongs to the token's merchant (`mid`); anything else answers 401, so a
//! token outlives neither its user nor a deletion.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use rocket::tokio::sync::broadcast;

use super::Role;
use crate::db::ids::{MerchantId, StaffId};

/// How long a looked-up state is trusted.
pub const TTL: Duration = Duration::from_secs(30);
/// Entries kept at most; beyond it, expired entries go, then all.
const CAPACITY: usize = 10_000;

/// A staff user's state as the guard needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffState {
    /// Active, with this role, at this merchant.
    Active(Role, MerchantId),
    Inactive,
    /// No such staff user.
    Unknown,
}

/// Per-process cache of staff states.
pub struct StaffStates {
    entries: Mutex<HashMap<StaffId, (Instant, StaffState)>>,
    events: broadcast::Sender<Option<StaffId>>,
}

impl Default for StaffStates {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            events: broadcast::channel(256).0,
        }
    }
}

impl StaffStates {
    /// The cached state, if fresh.
    pub fn get(&self, id: StaffId) -> Option<StaffState> {
        let entries = self.entries.lock();
        entries
            .get(&id)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, s)| *s)
    }

    pub fn put(&self, id: StaffId, state: StaffState) {
        let mut entries = self.entries.lock();
        if entries.len() >= CAPACITY {
            entries.retain(|_, (at, _)| at.elapsed() < TTL);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(id, (Instant::now(), state));
    }

    /// Forgets `id`: its next request reads the database.
    pub fn invalidate(&self, id: StaffId) {
        self.entries.lock().remove(&id);
        let _ = self.events.send(Some(id));
    }

    /// Forgets every state (the listener reconnected and may have missed
    /// notifications).
    pub fn invalidate_all(&self) {
        self.entries.lock().clear();
        let _ = self.events.send(None);
    }

    /// Invalidation events (`None` = everything), for tests and tooling.
    pub fn subscribe(&self) -> broadcast::Receiver<Option<StaffId>> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidate_forgets() {
        let s = StaffStates::default();
        let id = StaffId(uuid::Uuid::new_v4());
        assert_eq!(s.get(id), None);
        s.put(id, StaffState::Inactive);
        assert_eq!(s.get(id), Some(StaffState::Inactive));
        s.invalidate(id);
        assert_eq!(s.get(id), None);
    }
}
