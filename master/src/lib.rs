//! The ElkFS master: holds the namespace (changelog + sled), knows where every chunk copy is,
//! hands out write leases and tells chunkservers what to create, bump, truncate and delete.

pub mod chunk_ops;
pub mod client_service;
pub mod cluster;
pub mod config;
pub mod cs_service;
pub mod dir_leases;
pub mod exports;
pub mod failure_log;
pub mod freed_copies;
pub mod info;
pub mod leases;
pub mod listener;
pub mod lock_holders;
pub mod locks;
pub mod meta;
pub mod metalogger_service;
pub mod open_files;
pub mod past_end;
pub mod purges;
pub mod replication;
pub mod requests;
pub mod session_rules;
pub mod snapshot;
pub mod state;
pub mod trash;
pub mod trash_schedule;
pub mod tree;
pub mod truncate;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use elkfs_common::defaults;
use elkfs_common::worker;
use elkfs_metastore::{MetaOp, MetaStore};
use elkfs_proto::capability::CapabilityKey;
use elkfs_proto::cluster_key::{ClusterKey, KEY_FILE};
use elkfs_proto::tls::{ClusterAuthority, ServerRole, TlsServer};
use elkfs_proto::types::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::chunk_ops::ChunkOps;
use crate::cluster::Cluster;
use crate::config::MasterConfig;
use crate::exports::Exports;
use crate::leases::Leases;
use crate::lock_holders::LockHolders;
use crate::meta::{ImageWorker, Meta};
use crate::replication::ReplicationWorker;
use crate::requests::RequestJanitor;
use crate::state::MasterState;
use crate::trash::TrashWorker;

/// Runs the master until `stop` is cancelled, then syncs the changelog and returns.
pub async fn run(config: MasterConfig, stop: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let _lock = elkfs_common::daemon::lock_data_dir(&config.data_dir)?;
    let dir = config.data_dir.clone();
    let store_config = config.store();
    let (store, report) = tokio::task::spawn_blocking(move || MetaStore::open(&dir, &store_config))
        .await?
        .with_context(|| format!("cannot open the metadata in {}", config.data_dir.display()))?;
    if report.rebuilt {
        tracing::warn!(dir = %config.data_dir.display(), "{report}");
    } else {
        tracing::info!(dir = %config.data_dir.display(), "{report}");
    }
    if report.replay_failures > 0 {
        tracing::error!(
            count = report.replay_failures,
            "changelog records did not apply on replay"
        );
    }
    let new_filesystem = !store.is_formatted()?;
    if new_filesystem {
        store
            .commit(&MetaOp::Format {
                time: Timestamp::now(),
                goal: defaults::ROOT_GOAL,
                trash_time: defaults::ROOT_TRASH_TIME,
            })
            .map_err(|e| anyhow::anyhow!("cannot create the root directory: {e}"))?;
        tracing::info!("created a new filesystem");
    }
    let exports = load_exports(&config)?;
    let cluster_key = load_cluster_key(&config.data_dir)?;
    let tls = tls_server(&config, &cluster_key)?;
    let reserved = store.chunk_ids_reserved()?;
    let meta = Meta::new(store, config.sync_commit);
    let cluster = Arc::new(Cluster::default());
    let state = Arc::new(MasterState::new(
        meta.clone(),
        cluster.clone(),
        Leases::new(
            config.write_lease_timeout(),
            config.unreported_write_grace(),
        ),
        ChunkOps::new(
            meta.clone(),
            cluster,
            reserved,
            config.replication().startup_delay,
            CapabilityKey::new(&cluster_key),
        ),
        config.replications_per_server.max(1),
        exports,
        cluster_key,
        LockHolders::load(&config.data_dir, config.lock_grace()),
        config.reopen_grace(),
        new_filesystem,
    ));
    let grace_state = state.clone();
    let lock_grace = config.lock_grace();
    tokio::spawn(async move {
        tokio::time::sleep(lock_grace).await;
        grace_state
            .lock_holders
            .end_grace(|c| grace_state.locks.has_client(c))
            .await;
    });
    let workers = state.workers.clone();
    let replication = worker::spawn(
        ReplicationWorker::new(state.clone(), config.replication()),
        workers.clone(),
        stop.clone(),
    );
    let images = worker::spawn(
        ImageWorker::new(meta.clone()),
        workers.clone(),
        stop.clone(),
    );
    let trash = worker::spawn(
        TrashWorker::new(state.clone()),
        workers.clone(),
        stop.clone(),
    );
    let purges = worker::spawn(
        crate::purges::PurgeWorker::new(state.clone()),
        workers.clone(),
        stop.clone(),
    );
    let janitor = worker::spawn(RequestJanitor::new(state.clone()), workers, stop.clone());

    let listen = elkfs_common::address::resolve(&config.listen, defaults::MASTER_PORT)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    match &config.exports {
        Some(file) => {
            tracing::info!(addr = %bound, exports = %file.display(), "master listening; mounts are let in as the exports file says")
        }
        None => {
            tracing::info!(addr = %bound, "master listening; only loopback clients are let in (no exports file)")
        }
    }
    if let Some(path) = &config.ready_file {
        elkfs_common::daemon::write_ready_file(path, &bound.to_string())?;
    }

    let syncer = tokio::spawn(sync_changelog(
        meta.clone(),
        config.commit_interval(),
        stop.clone(),
    ));
    tokio::spawn(purge_after_reopen_grace(state.clone(), stop.clone()));
    tokio::spawn(elkfs_common::malloc::return_free_memory(
        std::time::Duration::from_secs(5),
        stop.clone(),
    ));
    if let Some(file) = config.exports.clone() {
        tokio::spawn(reload_exports_on_sighup(state.clone(), file, stop.clone()));
    }
    let stopping = state.clone();
    listener::accept_loop(listener, state, tls, stop.clone()).await;
    // Clients holding no lock now have nothing to claim after the next start.
    stopping
        .lock_holders
        .keep_only(|| stopping.locks.clients_holding())
        .await;
    // An image being written stops at its next page (its temporary file is removed).
    meta.store().stop_images();
    let _ = images.await;
    let _ = syncer.await;
    let _ = replication.await;
    let _ = trash.await;
    let _ = purges.await;
    let _ = janitor.await;
    meta.sync()
        .await
        .context("cannot fsync the changelog at shutdown")?;
    let store = meta.store().clone();
    tokio::task::spawn_blocking(move || store.flush()).await??;
    tracing::info!("master stopped");
    Ok(())
}

/// At the end of the reopen grace after this start, purges the files unlinked before it that no
/// client reopened, and those whose purge came due during it and are still unused, a batch at a
/// time (each holds off opens while it runs).
async fn purge_after_reopen_grace(state: Arc<MasterState>, stop: CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep_until(state.reopen_grace_end()) => {}
        _ = stop.cancelled() => return,
    }
    let leftovers = match state
        .meta
        .read(|s| s.unlinked_inodes().map_err(Into::into))
        .await
    {
        Ok(l) => l,
        Err(status) => {
            tracing::warn!(%status, "cannot list unlinked files");
            Vec::new()
        }
    };
    for batch in leftovers.chunks(state::PUT_ASIDE_PER_CALL) {
        state.purge_all_if_unused(batch.to_vec()).await;
    }
    // Those whose purge fails again are put aside again, for the purge worker's next rounds.
    for _ in 0..state.put_aside().div_ceil(state::PUT_ASIDE_PER_CALL) {
        state.purge_put_aside().await;
    }
}

/// fsyncs the changelog every `interval` while there are new records, and applies the changes
/// held back from sled.
async fn sync_changelog(meta: Meta, interval: std::time::Duration, stop: CancellationToken) {
    let mut synced = meta.store().version();
    let mut ticker = tokio::time::interval(interval);
    let mut fsyncs = failure_log::FailureLog::new("fsyncing the changelog");
    let mut settles =
        failure_log::FailureLog::new("applying held changes to the metadata database");
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => return,
        }
        let version = meta.store().version();
        if version == synced {
            continue;
        }
        match meta.sync().await {
            Ok(()) => {
                synced = version;
                fsyncs.worked();
            }
            Err(e) => fsyncs.failed(&e),
        }
        let store = meta.store().clone();
        match tokio::task::spawn_blocking(move || store.settle()).await {
            Ok(Ok(())) => settles.worked(),
            Ok(Err(e)) => settles.failed(&e),
            Err(e) => settles.failed(&e),
        }
    }
}

/// The cluster key in the data directory, made on the first start. Chunkservers and metaloggers
/// need a copy of the file to join.
/// Writes the cluster authority's certificate (public; mounts copy it to use TLS) and, with
/// `tls` set, makes the master's own certificate.
fn tls_server(config: &MasterConfig, key: &ClusterKey) -> anyhow::Result<Option<TlsServer>> {
    let authority = ClusterAuthority::from_cluster_key(key)?;
    let ca_file = authority.write_certificate(&config.data_dir)?;
    if !config.tls {
        return Ok(None);
    }
    tracing::info!(
        ca = %ca_file.display(),
        "TLS on: every connection is encrypted; mounts need -o tls,tlsca=FILE with a copy of this file"
    );
    Ok(Some(authority.server(ServerRole::Master)?))
}

fn load_cluster_key(data_dir: &std::path::Path) -> anyhow::Result<ClusterKey> {
    let path = data_dir.join(KEY_FILE);
    let (key, created) = ClusterKey::load_or_create(&path, rand::random).map_err(|e| {
        anyhow::anyhow!(
            "{e}; copy the key back from a chunkserver's or metalogger's key file \
                 (every node of the cluster holds the same key)"
        )
    })?;
    if created {
        tracing::info!(key = %path.display(), "created the cluster key; every chunkserver and metalogger needs a copy of this file (--cluster-key)");
    }
    elkfs_proto::cluster_key::warn_if_exposed(&path);
    Ok(key)
}

/// The exports file named in the configuration, or the loopback-only default without one.
fn load_exports(config: &MasterConfig) -> anyhow::Result<Exports> {
    let Some(file) = &config.exports else {
        return Ok(Exports::loopback_only());
    };
    let (exports, warnings) = Exports::load(file)?;
    for warning in warnings {
        tracing::warn!(exports = %file.display(), "{warning}");
    }
    Ok(exports)
}

/// Reads the exports file again on each SIGHUP; a file that does not parse is reported and the
/// rules in force stay.
async fn reload_exports_on_sighup(state: Arc<MasterState>, file: PathBuf, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch for SIGHUP; the exports file will not be reloaded");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hangups.recv() => {}
            _ = stop.cancelled() => return,
        }
        let path = file.clone();
        match tokio::task::spawn_blocking(move || Exports::load(&path)).await {
            Ok(Ok((exports, warnings))) => {
                for warning in warnings {
                    tracing::warn!(exports = %file.display(), "{warning}");
                }
                state.set_exports(exports);
                tracing::info!(exports = %file.display(), "exports file reloaded");
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the exports file was not reloaded; the rules in force stay")
            }
            Err(e) => tracing::error!(error = %e, "reloading the exports file failed"),
        }
    }
}
