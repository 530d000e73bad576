//! The ElkFS metalogger: receives the master's metadata image once, then follows its changelog
//! record by record, each batch fsynced, reconnecting forever. Its data directory is a valid
//! master data directory: starting `elkfs-master` on it brings the cluster back (promotion).

pub mod config;
pub mod copy;

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use elkfs_common::defaults;
use elkfs_metastore::follow::split_raw;
use elkfs_proto::auth::{Prover, cluster_proof, proofs_match};
use elkfs_proto::cluster_key::{ClusterKey, KEY_FILE};
use elkfs_proto::connection::Dialer;
use elkfs_proto::metalogger::{MlReply, MlRequest, MlResponse};
use elkfs_proto::tls::{ClusterAuthority, ServerRole};
use elkfs_proto::{Connection, Hello, MASTER_METALOGGER_LIMITS, NoRequests, Role, connection};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::config::MetaloggerConfig;
use crate::copy::LocalCopy;

type MasterLink = Connection<MlRequest, MlResponse>;

/// Records asked for at once.
const FETCH_BYTES: u32 = 4 * 1024 * 1024;

/// Image bytes asked for at once.
const IMAGE_PIECE: u32 = 8 * 1024 * 1024;

/// How often the master is asked whether it has a newer image (to trim the local changelog).
const IMAGE_CHECK: Duration = Duration::from_secs(600);

/// Runs the metalogger until `stop` is cancelled.
pub async fn run(config: MetaloggerConfig, stop: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let _lock = elkfs_common::daemon::lock_data_dir(&config.data_dir)?;
    let dir = config.data_dir.clone();
    let file_bytes = config.changelog_file_mib.max(1) * 1024 * 1024;
    let copy = tokio::task::spawn_blocking(move || LocalCopy::open(&dir, file_bytes))
        .await?
        .with_context(|| format!("cannot open the copy in {}", config.data_dir.display()))?;
    tracing::info!(dir = %config.data_dir.display(), version = copy.last(), "metadata copy opened");
    let cluster_key = load_cluster_key(&config)?;
    let dialer = Dialer {
        bind: None,
        tls: match config.tls {
            false => None,
            true => Some(
                ClusterAuthority::from_cluster_key(&cluster_key)?
                    .trust()
                    .client(ServerRole::Master)?,
            ),
        },
    };
    let mut follower = Follow {
        cluster_key,
        dialer,
        copy: Some(copy),
        announced: false,
        config,
    };
    let mut delay = defaults::RECONNECT_MIN;
    loop {
        let session = tokio::select! {
            r = follower.session() => r,
            _ = stop.cancelled() => break,
        };
        match session {
            Ok(()) => {
                delay = defaults::RECONNECT_MIN;
                continue;
            }
            Err(e) if e.downcast_ref::<CopyFailed>().is_some() => {
                tracing::error!(dir = %follower.config.data_dir.display(), error = %format!("{e:#}"), retry_in = ?delay, "cannot update the metadata copy (a full or failing disk?); following the master again from where the copy ends");
            }
            Err(e) => {
                tracing::warn!(master = %follower.config.master, error = %format!("{e:#}"), retry_in = ?delay, "lost the master");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => break,
        }
        delay = (delay * 2).min(defaults::RECONNECT_MAX);
    }
    tracing::info!("metalogger stopped");
    Ok(())
}

/// The cluster key: from `--cluster-key` (then also kept in the data directory, which must be
/// able to serve as a master's) or from the data directory.
fn load_cluster_key(config: &MetaloggerConfig) -> anyhow::Result<ClusterKey> {
    let kept = config.data_dir.join(KEY_FILE);
    let path = config.cluster_key.clone().unwrap_or_else(|| kept.clone());
    let key = ClusterKey::read_member_copy(&path).map_err(anyhow::Error::msg)?;
    if path != kept && ClusterKey::read_file(&kept).ok().as_ref() != Some(&key) {
        match std::fs::remove_file(&kept) {
            Ok(()) => {
                tracing::warn!(key = %kept.display(), "replacing the cluster key kept in the data directory with the one given")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot replace {}", kept.display())),
        }
        key.write_new_file(&kept)?;
    }
    Ok(key)
}

/// The local copy could not be read or written (its disk full or failing), as opposed to the
/// link to the master failing: the error of a session says which, for the log.
#[derive(Debug)]
struct CopyFailed;

impl std::fmt::Display for CopyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the metadata copy")
    }
}

struct Follow {
    cluster_key: ClusterKey,
    dialer: Dialer,
    copy: Option<LocalCopy>,
    announced: bool,
    config: MetaloggerConfig,
}

impl Follow {
    /// Runs the blocking `f` on the copy.
    async fn with_copy<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut LocalCopy) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let mut copy = self.copy.take().context("the copy is gone")?;
        let (copy, result) = tokio::task::spawn_blocking(move || {
            let r = f(&mut copy);
            (copy, r)
        })
        .await?;
        self.copy = Some(copy);
        result.context(CopyFailed)
    }

    fn last(&self) -> u64 {
        self.copy.as_ref().map_or(0, |c| c.last())
    }

    /// One connection to the master: catch up, then follow until the connection fails.
    async fn session(&mut self) -> anyhow::Result<()> {
        let addr = elkfs_common::address::resolve_async(&self.config.master, defaults::MASTER_PORT)
            .await?;
        let link: MasterLink = connection::connect_with(
            &self.dialer,
            addr,
            &Hello::new(Role::Metalogger, "elkfs-metalogger"),
            MASTER_METALOGGER_LIMITS,
            "master",
            NoRequests,
        )
        .await?;
        self.join(&link).await?;
        tracing::info!(master = %addr, version = self.last(), "following the master");
        let mut image_checked = tokio::time::Instant::now();
        loop {
            let (reply, data) = ask(
                &link,
                &MlRequest::Fetch {
                    after: self.last(),
                    max_bytes: FETCH_BYTES,
                },
            )
            .await?;
            match reply {
                MlReply::Records { .. } => {
                    let records = split_raw(&data).map_err(|e| anyhow::anyhow!(e))?;
                    let caught_up = records.is_empty();
                    self.with_copy(move |c| c.append(&records)).await?;
                    if caught_up && !self.announced {
                        self.announced = true;
                        tracing::info!(version = self.last(), "metadata copy is up to date");
                        if let Some(path) = &self.config.ready_file {
                            elkfs_common::daemon::write_ready_file(path, &addr.to_string())?;
                        }
                    }
                }
                MlReply::Gone => {
                    tracing::info!(
                        version = self.last(),
                        "the master's changelog no longer reaches back here; fetching its image"
                    );
                    self.fetch_image(&link, true).await?;
                }
                other => bail!("unexpected reply {other:?}"),
            }
            if image_checked.elapsed() > IMAGE_CHECK {
                image_checked = tokio::time::Instant::now();
                self.fetch_image(&link, false).await?;
            }
        }
    }

    /// Proves the cluster key to the master, after it has proved it to us (a master without
    /// it could feed us another history).
    async fn join(&self, link: &MasterLink) -> anyhow::Result<()> {
        let ours: [u8; 32] = rand::random();
        let (reply, _) = ask(link, &MlRequest::Challenge { nonce: ours }).await?;
        let MlReply::Challenge { proof, nonce } = reply else {
            bail!("unexpected reply to a challenge: {reply:?}");
        };
        if !proofs_match(
            &proof,
            &cluster_proof(&self.cluster_key, Prover::Master, &ours),
        ) {
            bail!(
                "the master does not hold this cluster's key (is --cluster-key the master's cluster.key?)"
            );
        }
        let proof = cluster_proof(&self.cluster_key, Prover::Member, &nonce);
        match link.call(&MlRequest::Join { proof }, Bytes::new()).await? {
            (Ok(MlReply::Joined), _) => Ok(()),
            (Err(elkfs_proto::Status::AccessDenied), _) => bail!(
                "the master refused this metalogger's cluster key (copy the master's cluster.key to --cluster-key)"
            ),
            (other, _) => bail!("unexpected reply to joining: {other:?}"),
        }
    }

    /// Downloads the master's newest image if it is newer than ours (always when `needed`).
    async fn fetch_image(&mut self, link: &MasterLink, needed: bool) -> anyhow::Result<()> {
        let (reply, _) = ask(link, &MlRequest::LatestImage).await?;
        let MlReply::Image { version, size } = reply else {
            bail!("unexpected reply to an image request");
        };
        let ours = self.with_copy(|c| c.newest_image()).await?;
        if version == 0 || version <= ours {
            if needed {
                bail!("the master has no image to start from");
            }
            return Ok(());
        }
        let (path, file) = self.with_copy(move |c| c.image_download(version)).await?;
        let mut file = tokio::fs::File::from_std(file);
        let mut offset = 0u64;
        while offset < size {
            let (reply, data) = ask(
                link,
                &MlRequest::FetchImage {
                    version,
                    offset,
                    length: IMAGE_PIECE,
                },
            )
            .await?;
            if reply != MlReply::ImagePart || data.is_empty() {
                bail!("the image of version {version} ended early");
            }
            file.write_all(&data)
                .await
                .with_context(|| format!("cannot write {}", path.display()))?;
            offset += data.len() as u64;
        }
        file.flush().await?;
        let file = file.into_std().await;
        self.with_copy(move |c| c.install_image(version, path, file))
            .await?;
        tracing::info!(version, bytes = size, "metadata image received");
        Ok(())
    }
}

async fn ask(link: &MasterLink, request: &MlRequest) -> anyhow::Result<(MlReply, Bytes)> {
    let (reply, data) = link.call(request, Bytes::new()).await?;
    match reply {
        Ok(r) => Ok((r, data)),
        Err(status) => bail!("the master refused: {status}"),
    }
}
