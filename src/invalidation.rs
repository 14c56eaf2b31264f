//! One LISTEN connection per process that keeps the in-memory caches honest
//! across instances: the platform database NOTIFYs `posd_placement` when a
//! merchant's placement or status changes and `posd_staff` when a staff
//! user's role or active flag changes (triggers in `migrations/`); the
//! payload is the id whose entry every instance drops at once. While the
//! connection is down nothing cached is trusted: every (re)connect drops
//! every cache whole. `posd_context` carries changes of plans, limits and
//! feature flags ([`crate::tenancy::context`]): a merchant id, or `*` for
//! all. `posd_hosts` carries changes of merchants' addresses (custom
//! domains, slugs): the whole host cache goes ([`crate::tenancy::hosts`]).
//! The same connection hears `posd_jobs`, which wakes idle job workers
//! ([`crate::tenancy::jobs`]).

use std::{sync::Arc, time::Duration};

use rocket::tokio;
use secrecy::{ExposeSecret, SecretString};

use crate::{
    auth::revocation::StaffStates,
    db::{
        ids::{MerchantId, StaffId},
        platform::jobs,
    },
    tenancy::{
        context::{self, Contexts},
        hosts::{self, Hosts},
        jobs::Queue,
        placement::{self, Directory},
        pools::TenantPools,
    },
};

/// The channel of staff state changes.
pub const STAFF_CHANNEL: &str = "posd_staff";

/// The caches the listener keeps.
#[derive(Clone)]
pub struct Caches {
    pub directory: Arc<Directory>,
    pub contexts: Arc<Contexts>,
    pub staff: Arc<StaffStates>,
    pub hosts: Arc<Hosts>,
    /// A merchant whose row changed loses its dedicated pool too: after a
    /// move, no connection of the service stays open on the old database.
    pub pools: Arc<TenantPools>,
    /// Not a cache: `posd_jobs` wakes this instance's idle job workers.
    pub jobs: Arc<Queue>,
}

impl Caches {
    fn drop_all(&self) {
        self.directory.invalidate_all();
        self.staff.invalidate_all();
        self.contexts.invalidate_all();
        self.hosts.cache.invalidate_all();
    }

    fn notified(&self, channel: &str, payload: &str) {
        let id = uuid::Uuid::parse_str(payload).ok();
        match (channel, id) {
            (placement::CHANNEL, Some(id)) => {
                self.directory.invalidate(MerchantId(id));
                self.pools.evict(MerchantId(id));
            }
            (placement::CHANNEL, None) => self.directory.invalidate_all(),
            (STAFF_CHANNEL, Some(id)) => self.staff.invalidate(StaffId(id)),
            (STAFF_CHANNEL, None) => self.staff.invalidate_all(),
            (context::CHANNEL, Some(id)) => self.contexts.invalidate(&MerchantId(id)),
            // `*`: a plan or a flag changed.
            (context::CHANNEL, None) => self.contexts.invalidate_all(),
            (hosts::CHANNEL, _) => self.hosts.cache.invalidate_all(),
            (jobs::CHANNEL, _) => self.jobs.wake(),
            _ => {}
        }
    }
}

/// The LISTEN connection's configuration: `url`, named for operators
/// (`application_name` `posd-listen-<process id>` in `pg_stat_activity`).
fn listen_config(url: &SecretString) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.expose_secret().parse()?;
    config.application_name(format!("posd-listen-{}", std::process::id()));
    Ok(config)
}

/// Keeps the LISTEN connection open for as long as the runtime runs,
/// reconnecting with backoff.
pub fn spawn_listener(url: SecretString, caches: Caches) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let result = listen(&url, &caches).await;
            caches.directory.set_listening(false);
            caches.drop_all();
            match result {
                Ok(()) => tracing::warn!("cache invalidation listener closed; reconnecting"),
                Err(e) => {
                    tracing::warn!(error = %e, "cache invalidation listener failed; reconnecting");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    });
}

async fn listen(url: &SecretString, caches: &Caches) -> Result<(), tokio_postgres::Error> {
    use futures_util::StreamExt;
    use tokio_postgres::AsyncMessage;

    let (client, mut connection) = listen_config(url)?.connect(tokio_postgres::NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            if let AsyncMessage::Notification(n) = message? {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
        Ok::<(), tokio_postgres::Error>(())
    });
    client
        .batch_execute(&format!(
            "LISTEN {}; LISTEN {STAFF_CHANNEL}; LISTEN {}; LISTEN {}; LISTEN {}",
            placement::CHANNEL,
            context::CHANNEL,
            hosts::CHANNEL,
            jobs::CHANNEL
        ))
        .await?;
    // Anything cached before this point may have missed a notification.
    caches.drop_all();
    caches.directory.set_listening(true);
    while let Some((channel, payload)) = rx.recv().await {
        caches.notified(&channel, &payload);
    }
    drop(client);
    match driver.await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}
