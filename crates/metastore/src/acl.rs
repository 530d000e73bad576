//! POSIX ACL inheritance for new inodes: a directory's default ACL becomes the new inode's
//! access ACL (masked by the create mode) and, for directories, their default ACL too; without
//! one, the umask applies. The kernel enforces ACLs; this is the part left to the filesystem.
//!
//! ACLs are stored as the `system.posix_acl_*` extended attributes in Linux's xattr format:
//! `u32 version (2)`, then entries of `u16 tag | u16 perm | u32 id`, all little-endian.

/// Name of the access ACL attribute.
pub const ACCESS: &[u8] = b"system.posix_acl_access";
/// Name of the default ACL attribute (directories).
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

fn parse(bytes: &[u8]) -> Option<Vec<Entry>> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*head) != VERSION || rest.len() % 8 != 0 {
        return None;
    }
    Some(
        rest.chunks_exact(8)
            .map(|e| Entry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]),
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect(),
    )
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = VERSION.to_le_bytes().to_vec();
    for e in entries {
        out.extend_from_slice(&e.tag.to_le_bytes());
        out.extend_from_slice(&e.perm.to_le_bytes());
        out.extend_from_slice(&e.id.to_le_bytes());
    }
    out
}

/// What a new inode gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inherited {
    /// Its permission bits.
    pub mode: u32,
    /// Its access ACL, when the inherited one says more than the mode bits can.
    pub access: Option<Vec<u8>>,
    /// Its default ACL (new directories under a directory with one).
    pub default: Option<Vec<u8>>,
}

/// Computes a new inode's mode and ACLs from the create `mode`, the caller's `umask` and the
/// parent's default ACL (if it has a valid one).
pub fn inherit(mode: u32, umask: u32, parent_default: Option<&[u8]>, is_dir: bool) -> Inherited {
    let special = mode & 0o7000;
    let Some(mut entries) = parent_default.and_then(parse).filter(|e| !e.is_empty()) else {
        return Inherited {
            mode: mode & !umask & 0o7777,
            access: None,
            default: None,
        };
    };
    let default = is_dir.then(|| encode(&entries));
    // The kernel's posix_acl_create_masq: the entries are cut to the create mode and the mode
    // to the entries.
    let mut m = mode & 0o777;
    let mut not_equivalent = false;
    let mut group_obj = None;
    let mut mask = None;
    for (i, e) in entries.iter_mut().enumerate() {
        match e.tag {
            USER_OBJ => {
                e.perm &= ((m >> 6) & 7) as u16;
                m &= ((e.perm as u32) << 6) | 0o077;
            }
            USER | GROUP => not_equivalent = true,
            GROUP_OBJ => group_obj = Some(i),
            OTHER => {
                e.perm &= (m & 7) as u16;
                m &= e.perm as u32 | 0o770;
            }
            MASK => {
                mask = Some(i);
                not_equivalent = true;
            }
            _ => {}
        }
    }
    if let Some(i) = mask.or(group_obj) {
        let e = &mut entries[i];
        e.perm &= ((m >> 3) & 7) as u16;
        m &= ((e.perm as u32) << 3) | 0o707;
    }
    Inherited {
        mode: special | m,
        access: not_equivalent.then(|| encode(&entries)),
        default,
    }
}

/// The permission bits an access ACL stands for, and whether it says no more than they do (only
/// owner, group and other entries). `None` when the value is not a valid ACL.
pub fn mode_of(access: &[u8]) -> Option<(u32, bool)> {
    let entries = parse(access)?;
    let mut mode = 0u32;
    let mut equivalent = true;
    let mut group = None;
    let mut mask = None;
    for e in &entries {
        let perm = (e.perm & 7) as u32;
        match e.tag {
            USER_OBJ => mode |= perm << 6,
            GROUP_OBJ => group = Some(perm),
            MASK => {
                mask = Some(perm);
                equivalent = false;
            }
            OTHER => mode |= perm,
            USER | GROUP => equivalent = false,
            _ => return None,
        }
    }
    mode |= mask.or(group)? << 3;
    Some((mode, equivalent))
}

/// An access ACL brought in line with new mode bits after a `chmod` (the kernel's
/// `posix_acl_chmod`): owner, mask (or group) and other entries take the mode's bits. `None`
/// when the stored value is not a valid ACL.
pub fn chmod(access: &[u8], mode: u32) -> Option<Vec<u8>> {
    let mut entries = parse(access)?;
    let has_mask = entries.iter().any(|e| e.tag == MASK);
    for e in entries.iter_mut() {
        match e.tag {
            USER_OBJ => e.perm = ((mode >> 6) & 7) as u16,
            MASK => e.perm = ((mode >> 3) & 7) as u16,
            GROUP_OBJ if !has_mask => e.perm = ((mode >> 3) & 7) as u16,
            OTHER => e.perm = (mode & 7) as u16,
            _ => {}
        }
    }
    Some(encode(&entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        encode(
            &entries
                .iter()
                .map(|&(tag, perm, id)| Entry { tag, perm, id })
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn without_a_default_acl_the_umask_applies() {
        let r = inherit(0o666, 0o022, None, false);
        assert_eq!(r.mode, 0o644);
        assert!(r.access.is_none() && r.default.is_none());
    }

    #[test]
    fn a_default_acl_replaces_the_umask_and_is_masked_by_the_mode() {
        // default: u::rwx, u:1000:rwx, g::r-x, m::rwx, o::---
        let d = acl(&[
            (USER_OBJ, 7, 0),
            (USER, 7, 1000),
            (GROUP_OBJ, 5, 0),
            (MASK, 7, 0),
            (OTHER, 0, 0),
        ]);
        let file = inherit(0o666, 0o077, Some(&d), false);
        assert_eq!(
            file.mode, 0o660,
            "mask limited to rw- by the create mode; umask ignored"
        );
        let access = parse(file.access.as_ref().unwrap()).unwrap();
        assert!(access.contains(&Entry {
            tag: MASK,
            perm: 6,
            id: 0
        }));
        assert!(
            access.contains(&Entry {
                tag: USER,
                perm: 7,
                id: 1000
            }),
            "named entries keep their bits; the mask limits them"
        );
        assert!(file.default.is_none());
        let dir = inherit(0o777, 0o077, Some(&d), true);
        assert_eq!(dir.mode, 0o770);
        assert_eq!(dir.default.as_deref(), Some(&d[..]));
    }

    #[test]
    fn a_minimal_default_acl_gives_plain_mode_bits() {
        let d = acl(&[(USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 5, 0)]);
        let r = inherit(0o666, 0o077, Some(&d), false);
        assert_eq!(r.mode, 0o644);
        assert!(r.access.is_none());
    }

    #[test]
    fn chmod_moves_the_mask_not_the_group_entry() {
        let a = acl(&[
            (USER_OBJ, 6, 0),
            (USER, 7, 1000),
            (GROUP_OBJ, 5, 0),
            (MASK, 6, 0),
            (OTHER, 4, 0),
        ]);
        let after = parse(&chmod(&a, 0o600).unwrap()).unwrap();
        assert!(after.contains(&Entry {
            tag: MASK,
            perm: 0,
            id: 0
        }));
        assert!(after.contains(&Entry {
            tag: GROUP_OBJ,
            perm: 5,
            id: 0
        }));
        assert!(after.contains(&Entry {
            tag: OTHER,
            perm: 0,
            id: 0
        }));
    }

    #[test]
    fn an_acl_gives_mode_bits_and_says_whether_it_is_more() {
        let minimal = acl(&[(USER_OBJ, 6, 0), (GROUP_OBJ, 4, 0), (OTHER, 0, 0)]);
        assert_eq!(mode_of(&minimal), Some((0o640, true)));
        let extended = acl(&[
            (USER_OBJ, 7, 0),
            (USER, 7, 5),
            (GROUP_OBJ, 5, 0),
            (MASK, 1, 0),
            (OTHER, 4, 0),
        ]);
        assert_eq!(mode_of(&extended), Some((0o714, false)));
        assert_eq!(mode_of(b"junk"), None);
    }

    #[test]
    fn garbage_is_ignored_like_no_acl() {
        assert_eq!(inherit(0o666, 0o022, Some(b"xx"), false).mode, 0o644);
    }
}
