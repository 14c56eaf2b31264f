//! The background driver: every active move that no process drives.

use std::{
    collections::HashSet,
    sync::{Arc, mpsc},
    time::Duration,
};

use parking_lot::Mutex;

use super::drive;
use crate::{
    db::{ids::RunId, platform::moves::Move},
    tenancy::Tenancy,
};

/// How often a [`Mover`] looks for moves nobody drives (a process that
/// died, a move recorded by the CLI).
const POLL: Duration = Duration::from_secs(5);

/// Drives every active move nobody else drives, in threads of its own;
/// woken at once by [`Mover::wake`]. Stops when dropped.
pub struct Mover {
    wake: Mutex<mpsc::Sender<()>>,
}

impl Mover {
    pub fn spawn(app: Tenancy) -> Mover {
        let (tx, rx) = mpsc::channel::<()>();
        let driving: Arc<Mutex<HashSet<RunId>>> = Arc::default();
        let spawned = std::thread::Builder::new()
            .name("posd-mover".into())
            .spawn(move || {
                // Listing runs through the platform pool, which needs a runtime.
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "the tier move driver cannot start");
                        return;
                    }
                };
                loop {
                    let active = rt.block_on(app.platform(|p| Ok(Move::all_active(p)?)));
                    match active {
                        Ok(moves) => {
                            for mv in moves {
                                if driving.lock().insert(mv.id) {
                                    let (app, mine) = (app.clone(), driving.clone());
                                    let spawned = std::thread::Builder::new()
                                        .name("posd-move".into())
                                        .spawn(move || {
                                            if let Err(e) = drive(&app, mv.id) {
                                                tracing::error!(run = %mv.id, error = %e, "tier move driver stopped");
                                            }
                                            mine.lock().remove(&mv.id);
                                        });
                                    if spawned.is_err() {
                                        driving.lock().remove(&mv.id);
                                    }
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "could not list tier moves"),
                    }
                    match rx.recv_timeout(POLL) {
                        Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the tier move driver");
        }
        Mover {
            wake: Mutex::new(tx),
        }
    }

    /// Looks for moves to drive now.
    pub fn wake(&self) {
        let _ = self.wake.lock().send(());
    }
}
