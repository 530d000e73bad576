//! The ElkFS chunkserver: keeps chunk files on local directories, serves hash-checked reads,
//! takes part in chained writes, and does what the master tells it.

pub mod capabilities;
pub mod chunk_test;
pub mod config;
pub mod data_service;
pub mod identity;
pub mod master_link;
pub mod replicate;
pub mod sequencer;
pub mod storage;
pub mod sync_worker;

use std::sync::Arc;

use anyhow::Context;
use elkfs_chunkstore::{ChunkStore, DataDirSpec};
use elkfs_common::defaults;
use elkfs_common::worker::{self, WorkerRegistry};
use elkfs_proto::cluster_key::{ClusterKey, KEY_FILE};
use elkfs_proto::connection::Dialer;
use elkfs_proto::tls::{ClusterAuthority, ServerRole, TlsServer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::capabilities::Capabilities;
use crate::chunk_test::ChunkTest;
use crate::config::ChunkserverConfig;
use crate::data_service::DataService;
use crate::master_link::LinkSetup;
use crate::sequencer::Sequencer;
use crate::sync_worker::SyncWorker;

/// The first data directory not marked for removal (where the server id lives).
fn dirs_in_use(data: &[String]) -> anyhow::Result<std::path::PathBuf> {
    data.iter()
        .map(|d| DataDirSpec::parse(d))
        .find(|d| !d.marked_for_removal)
        .or_else(|| data.first().map(|d| DataDirSpec::parse(d)))
        .map(|d| d.path)
        .context("no data directory")
}

/// The cluster key from `--cluster-key`, or from the first data directory.
fn load_cluster_key(
    config: &ChunkserverConfig,
    first_dir: &std::path::Path,
) -> anyhow::Result<ClusterKey> {
    let path = config
        .cluster_key
        .clone()
        .unwrap_or_else(|| first_dir.join(KEY_FILE));
    ClusterKey::read_member_copy(&path).map_err(anyhow::Error::msg)
}

/// How this chunkserver's connections are made: plain TCP, or TLS under the cluster's authority.
struct Transport {
    /// To the master.
    master: Dialer,
    /// To other chunkservers' data ports.
    peers: Dialer,
    /// What the data port accepts with.
    data_port: Option<TlsServer>,
}

impl Transport {
    fn new(tls: bool, key: &ClusterKey) -> anyhow::Result<Transport> {
        if !tls {
            return Ok(Transport {
                master: Dialer::default(),
                peers: Dialer::default(),
                data_port: None,
            });
        }
        let authority = ClusterAuthority::from_cluster_key(key)?;
        let trust = authority.trust();
        Ok(Transport {
            master: Dialer {
                bind: None,
                tls: Some(trust.client(ServerRole::Master)?),
            },
            peers: Dialer {
                bind: None,
                tls: Some(trust.client(ServerRole::Chunkserver)?),
            },
            data_port: Some(authority.server(ServerRole::Chunkserver)?),
        })
    }
}

/// Copy reports waiting to reach the master.
const REPORT_QUEUE: usize = 1024;

/// Runs the chunkserver until `stop` is cancelled.
pub async fn run(config: ChunkserverConfig, stop: CancellationToken) -> anyhow::Result<()> {
    let dirs: Vec<DataDirSpec> = config.data.iter().map(|d| DataDirSpec::parse(d)).collect();
    let mut _locks = Vec::with_capacity(dirs.len());
    for dir in &dirs {
        std::fs::create_dir_all(&dir.path)
            .with_context(|| format!("cannot create {}", dir.path.display()))?;
        _locks.push(elkfs_common::daemon::lock_data_dir(&dir.path)?);
    }
    let (store, report) = tokio::task::spawn_blocking(move || ChunkStore::open(&dirs))
        .await?
        .context("cannot open the data directories")?;
    for (path, reason) in &report.ignored {
        tracing::warn!(path = %path.display(), %reason, "ignored a file in a data directory");
    }
    tracing::info!(chunks = report.chunks, bytes = report.bytes, lost = report.lost, dirs = ?config.data, "data directories scanned");
    let first_dir = dirs_in_use(&config.data)?;
    let server_id = identity::load_or_create(&first_dir)?;
    let cluster_key = load_cluster_key(&config, &first_dir)?;
    let capabilities = Arc::new(Capabilities::new(&cluster_key));
    let transport = Transport::new(config.tls, &cluster_key)?;
    store.set_direct_writes(config.direct_writes);
    store.set_direct_reads(config.direct_reads);
    let store = Arc::new(store);
    let sequencer = Arc::new(Sequencer::default());

    let listen = elkfs_common::address::resolve(&config.listen, defaults::CHUNKSERVER_PORT)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let data_addr = listener.local_addr()?;
    tracing::info!(addr = %data_addr, "data port listening");

    let (reports_tx, reports_rx) = mpsc::channel(REPORT_QUEUE);
    let reports_tx_for_test = reports_tx.clone();
    let reports_tx_for_sync = reports_tx.clone();
    let service = Arc::new(DataService::new(
        store.clone(),
        sequencer.clone(),
        reports_tx,
        capabilities.clone(),
        transport.peers,
    ));
    let workers = WorkerRegistry::default();
    let chunk_test = ChunkTest::new(
        store.clone(),
        reports_tx_for_test,
        config.chunk_test_mib_per_sec.saturating_mul(1 << 20),
    );
    let chunk_test = worker::spawn(chunk_test, workers.clone(), stop.clone());
    let sync = SyncWorker::new(store.clone(), reports_tx_for_sync, config.sync_interval());
    let store_at_stop = store.clone();
    let sync = worker::spawn(sync, workers, stop.clone());
    let link = tokio::spawn(master_link::run(
        LinkSetup {
            server_id,
            master: config.master.clone(),
            data_addr,
            ready_file: config.ready_file.clone(),
            cluster_key,
            capabilities,
            dialer: transport.master,
        },
        store,
        sequencer,
        service.peers.clone(),
        reports_rx,
        stop.clone(),
    ));
    data_service::accept_loop(listener, service, transport.data_port, stop.clone()).await;
    let _ = link.await;
    let _ = chunk_test.await;
    let _ = sync.await;
    // What changed since the last pass reaches the disk before the process is gone.
    let last = tokio::task::spawn_blocking(move || store_at_stop.sync_changed()).await;
    if let Ok(pass) = last
        && !pass.failed.is_empty()
    {
        tracing::warn!(
            chunks = pass.failed.len(),
            "some chunk files could not be synced at stop"
        );
    }
    tracing::info!("chunkserver stopped");
    Ok(())
}
