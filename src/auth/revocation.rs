//! What a staff token may still do after it was issued.
//!
//! A token carries the role its holder had at login and stays valid until
//! it expires. The `Staff` guard checks each staff user's current state in
//! the platform database: a deactivated user's token answers 401 and a
//! demoted user acts with the lower role. The answer is cached per process
//! for [`TTL`]; `PATCH /staff/{id}` drops the entry at once on the instance
//! that served it, other instances see the change within [`TTL`].
//!
//! An id with no staff row (nothing issues one today) keeps the token's
//! role: the check revokes, it does not authenticate.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use super::Role;
use crate::db::ids::StaffId;

/// How long a looked-up state is trusted.
pub const TTL: Duration = Duration::from_secs(30);
/// Entries kept at most; beyond it, expired entries go, then all.
const CAPACITY: usize = 10_000;

/// A staff user's state as the guard needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffState {
    /// Active, with this role.
    Active(Role),
    Inactive,
    /// No such staff user.
    Unknown,
}

/// Per-process cache of staff states (Rocket managed state).
#[derive(Default)]
pub struct StaffStates {
    entries: Mutex<HashMap<StaffId, (Instant, StaffState)>>,
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
