//! How the CLI finds the cluster behind a path: the mount answers a special extended attribute
//! on every inode with the master's address and the inode's number there.

use elkfs_proto::InodeId;

/// The extended attribute the mount answers itself (it is never stored).
pub const XATTR: &str = "elkfs.info";

/// What the mount says about a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// The master, as the mount was given it (`HOST[:PORT]`).
    pub master: String,
    /// The subdirectory of the namespace the mount shows.
    pub subdir: String,
    /// The path's inode on the master.
    pub inode: InodeId,
}

impl MountInfo {
    /// The attribute's value.
    pub fn encode(&self) -> String {
        format!(
            "master={}\nsubdir={}\ninode={}\n",
            self.master, self.subdir, self.inode.0
        )
    }

    /// Reads the attribute's value.
    pub fn parse(text: &str) -> Result<MountInfo, String> {
        let mut master = None;
        let mut subdir = None;
        let mut inode = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("master", v)) => master = Some(v.to_string()),
                Some(("subdir", v)) => subdir = Some(v.to_string()),
                Some(("inode", v)) => inode = v.parse().ok().map(InodeId),
                _ => {}
            }
        }
        match (master, subdir, inode) {
            (Some(master), Some(subdir), Some(inode)) => Ok(MountInfo {
                master,
                subdir,
                inode,
            }),
            _ => Err(format!("not an ElkFS mount description: {text:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_info_round_trips() {
        let info = MountInfo {
            master: "10.0.0.1:9421".into(),
            subdir: "/a".into(),
            inode: InodeId(77),
        };
        assert_eq!(MountInfo::parse(&info.encode()).unwrap(), info);
        assert!(MountInfo::parse("nonsense").is_err());
    }
}
