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
    /// The cluster authority's certificate the mount trusts, when it uses TLS.
    pub tls_ca: Option<String>,
}

impl MountInfo {
    /// The attribute's value.
    pub fn encode(&self) -> String {
        let mut text = format!(
            "master={}\nsubdir={}\ninode={}\n",
            self.master, self.subdir, self.inode.0
        );
        if let Some(ca) = &self.tls_ca {
            text.push_str(&format!("tlsca={ca}\n"));
        }
        text
    }

    /// Reads the attribute's value.
    pub fn parse(text: &str) -> Result<MountInfo, String> {
        let mut master = None;
        let mut subdir = None;
        let mut inode = None;
        let mut tls_ca = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("master", v)) => master = Some(v.to_string()),
                Some(("subdir", v)) => subdir = Some(v.to_string()),
                Some(("inode", v)) => inode = v.parse().ok().map(InodeId),
                Some(("tlsca", v)) => tls_ca = Some(v.to_string()),
                _ => {}
            }
        }
        match (master, subdir, inode) {
            (Some(master), Some(subdir), Some(inode)) => Ok(MountInfo {
                master,
                subdir,
                inode,
                tls_ca,
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
            tls_ca: None,
        };
        assert_eq!(MountInfo::parse(&info.encode()).unwrap(), info);
        let secured = MountInfo {
            tls_ca: Some("/etc/elkfs/ca.crt".into()),
            ..info
        };
        assert_eq!(MountInfo::parse(&secured.encode()).unwrap(), secured);
        assert!(MountInfo::parse("nonsense").is_err());
    }
}
