//! Writes that need the master's help to land in the right place: appends that must go to the
//! end of the file as every mount sees it, and holes punched into a file.

use std::sync::Arc;

use bytes::Bytes;
use elkfs_proto::geometry::{CHUNK_SIZE, MAX_DATA_PAYLOAD};
use elkfs_proto::master::{MasterReply, MasterRequest};
use elkfs_proto::types::{Caller, SetAttr};
use elkfs_proto::{InodeId, Status};

use crate::Client;

impl Client {
    /// Appends `data` at the end of the file as the master knows it, one appender at a time
    /// across all mounts (an `O_APPEND` write); returns the offset it landed at.
    pub async fn append(self: &Arc<Self>, inode: InodeId, data: Bytes) -> Result<u64, Status> {
        let writer = self.writer(inode);
        writer.flush().await?;
        let at = match self
            .master
            .request(&MasterRequest::AppendBegin { inode })
            .await?
        {
            MasterReply::AppendAt(n) => n,
            _ => return Err(Status::Protocol),
        };
        let written = async {
            writer.write(at, data).await?;
            writer.flush().await
        }
        .await;
        if let Err(status) = self
            .master
            .request(&MasterRequest::AppendEnd { inode })
            .await
        {
            tracing::debug!(%inode, %status, "cannot end an append");
        }
        self.forget_locations(inode);
        written.map(|()| at)
    }

    /// Makes `length` bytes at `offset` read as zeros: whole chunks are dropped, the parts of
    /// chunks around them overwritten with zeros. The file's length grows to cover the range
    /// unless `keep_size`.
    pub async fn zero_range(
        self: &Arc<Self>,
        inode: InodeId,
        offset: u64,
        length: u64,
        keep_size: bool,
        caller: Caller,
    ) -> Result<(), Status> {
        let end = offset.checked_add(length).ok_or(Status::TooBig)?;
        let writer = self.writer(inode);
        writer.flush().await?;
        let size = self.getattr(inode).await?.size;
        let first_whole = offset.div_ceil(CHUNK_SIZE);
        let end_whole = end / CHUNK_SIZE;
        let mut partial = Vec::new();
        if first_whole < end_whole {
            let request = MasterRequest::ClearChunks {
                inode,
                first: first_whole as u32,
                end: end_whole as u32,
            };
            self.master.request(&request).await?;
            partial.push((offset, first_whole * CHUNK_SIZE));
            partial.push((end_whole * CHUNK_SIZE, end));
        } else {
            partial.push((offset, end));
        }
        let zeros = Bytes::from(vec![0u8; MAX_DATA_PAYLOAD as usize]);
        for (from, to) in partial {
            // Past the end of the file there is nothing to zero.
            let to = to.min(size);
            let mut at = from;
            while at < to {
                let n = ((to - at) as usize).min(zeros.len());
                writer.write(at, zeros.slice(..n)).await?;
                at += n as u64;
            }
        }
        writer.flush().await?;
        self.forget_locations(inode);
        if !keep_size && end > size {
            let grow = SetAttr {
                size: Some(end),
                ..Default::default()
            };
            self.setattr(inode, grow, caller).await?;
        }
        Ok(())
    }
}
