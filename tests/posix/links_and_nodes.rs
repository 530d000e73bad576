//! Hard links, symbolic links, FIFOs, sockets and device nodes behave as on a local filesystem;
//! FIFOs, sockets and devices are metadata only (the kernel does the rest).

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use elkfs_testkit::{Cluster, wait_until};

use crate::sys::{self, Errno};

#[test]
fn hard_links_share_one_inode_its_data_and_its_link_count() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let m = cluster.mount_path(0);
    std::fs::create_dir(m.join("d")).unwrap();
    std::fs::write(m.join("one"), b"shared data").unwrap();
    let before = sys::lstat(&m.join("one")).unwrap();
    std::thread::sleep(Duration::from_millis(20));

    sys::link(&m.join("one"), &m.join("d/two")).unwrap();
    let (a, b) = (
        sys::lstat(&m.join("one")).unwrap(),
        sys::lstat(&m.join("d/two")).unwrap(),
    );
    assert_eq!(a.st_ino, b.st_ino, "both names are one inode");
    assert_eq!((a.st_nlink, b.st_nlink), (2, 2));
    assert!(
        (a.st_ctime, a.st_ctime_nsec) > (before.st_ctime, before.st_ctime_nsec),
        "link changes the inode's ctime"
    );

    std::fs::OpenOptions::new()
        .append(true)
        .open(m.join("d/two"))
        .unwrap()
        .write_all(b" and more")
        .unwrap();
    assert_eq!(
        std::fs::read(m.join("one")).unwrap(),
        b"shared data and more"
    );

    assert_eq!(
        sys::link(&m.join("one"), &m.join("d/two")),
        Err(Errno(libc::EEXIST))
    );
    assert_eq!(
        sys::link(&m.join("d"), &m.join("dirlink")),
        Err(Errno(libc::EPERM)),
        "hard links to directories are refused"
    );
    assert_eq!(
        sys::link(&m.join("missing"), &m.join("x")),
        Err(Errno(libc::ENOENT))
    );

    std::fs::remove_file(m.join("one")).unwrap();
    assert_eq!(sys::lstat(&m.join("d/two")).unwrap().st_nlink, 1);
    assert_eq!(
        std::fs::read(m.join("d/two")).unwrap(),
        b"shared data and more"
    );

    // Many links, then all but one removed: the count follows.
    for i in 0..50 {
        sys::link(&m.join("d/two"), &m.join(format!("d/l{i}"))).unwrap();
    }
    assert_eq!(sys::lstat(&m.join("d/two")).unwrap().st_nlink, 51);
    for i in 0..50 {
        sys::unlink(&m.join(format!("d/l{i}"))).unwrap();
    }
    assert_eq!(sys::lstat(&m.join("d/two")).unwrap().st_nlink, 1);
}

#[test]
fn hard_links_are_seen_from_another_mount() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let (a, b) = (cluster.mount_path(0), cluster.mount_path(1));
    std::fs::write(a.join("f"), b"data").unwrap();
    sys::link(&a.join("f"), &a.join("g")).unwrap();
    wait_until(
        Duration::from_secs(2),
        "the other mount sees 2 links",
        || sys::lstat(&b.join("f")).is_ok_and(|s| s.st_nlink == 2),
    );
    assert_eq!(
        sys::lstat(&b.join("f")).unwrap().st_ino,
        sys::lstat(&b.join("g")).unwrap().st_ino
    );
    assert_eq!(std::fs::read(b.join("g")).unwrap(), b"data");
}

#[test]
fn symlinks_keep_their_target_and_resolve_like_on_linux() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let m = cluster.mount_path(0);
    std::fs::create_dir(m.join("dir")).unwrap();
    std::fs::write(m.join("dir/file"), b"through the link").unwrap();

    sys::symlink("dir/file", &m.join("rel")).unwrap();
    let abs = m.join("dir/file").to_string_lossy().into_owned();
    sys::symlink(&abs, &m.join("abs")).unwrap();
    sys::symlink("nowhere", &m.join("dangling")).unwrap();
    sys::symlink("loop", &m.join("loop")).unwrap();
    sys::symlink("dir", &m.join("dirlink")).unwrap();

    let st = sys::lstat(&m.join("rel")).unwrap();
    assert_eq!(sys::kind(st.st_mode), "symlink");
    assert_eq!(st.st_mode & 0o777, 0o777, "symlinks are mode 0777 on Linux");
    assert_eq!(
        st.st_size,
        "dir/file".len() as i64,
        "a symlink's size is its target's length"
    );
    assert_eq!(sys::readlink(&m.join("rel")).unwrap(), b"dir/file");
    assert_eq!(sys::readlink(&m.join("abs")).unwrap(), abs.as_bytes());
    assert_eq!(std::fs::read(m.join("rel")).unwrap(), b"through the link");
    assert_eq!(std::fs::read(m.join("abs")).unwrap(), b"through the link");
    assert_eq!(
        std::fs::read(m.join("dirlink/file")).unwrap(),
        b"through the link"
    );

    assert_eq!(
        sys::io_errno(std::fs::read(m.join("dangling"))),
        Err(Errno(libc::ENOENT))
    );
    assert_eq!(
        sys::stat(&m.join("loop")).map(drop),
        Err(Errno(libc::ELOOP))
    );
    assert_eq!(
        sys::open(&m.join("rel"), libc::O_RDONLY | libc::O_NOFOLLOW, 0).map(drop),
        Err(Errno(libc::ELOOP))
    );
    assert_eq!(
        sys::readlink(&m.join("dir/file")),
        Err(Errno(libc::EINVAL)),
        "readlink of a regular file"
    );
    assert_eq!(sys::symlink("x", &m.join("rel")), Err(Errno(libc::EEXIST)));

    // Writing through a dangling symlink creates its target (O_CREAT follows the link).
    std::fs::write(m.join("dangling"), b"now it exists").unwrap();
    assert_eq!(std::fs::read(m.join("nowhere")).unwrap(), b"now it exists");

    // Long targets (ext4 allows up to 4095 bytes) come back intact.
    let long = "x/".repeat(2000) + "end";
    sys::symlink(&long, &m.join("long")).unwrap();
    assert_eq!(sys::readlink(&m.join("long")).unwrap(), long.as_bytes());

    // Unlinking a symlink removes the link, not its target.
    std::fs::remove_file(m.join("rel")).unwrap();
    assert!(m.join("dir/file").exists());
    // rmdir through a symlink to a directory is ENOTDIR, as on Linux.
    assert_eq!(sys::rmdir(&m.join("dirlink")), Err(Errno(libc::ENOTDIR)));
}

#[test]
fn fifos_carry_data_between_processes_and_persist_as_metadata() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let m = cluster.mount_path(0);
    let fifo = m.join("pipe");
    sys::mknod(&fifo, libc::S_IFIFO | 0o640, 0).unwrap();
    let st = sys::lstat(&fifo).unwrap();
    assert_eq!(sys::kind(st.st_mode), "fifo");
    assert_eq!(st.st_mode & 0o7777, 0o640 & !current_umask());
    assert_eq!(st.st_size, 0);
    assert_eq!(
        sys::mknod(&fifo, libc::S_IFIFO | 0o600, 0),
        Err(Errno(libc::EEXIST))
    );

    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(writer_path)
            .unwrap();
        w.write_all(b"through a fifo on ElkFS").unwrap();
    });
    let mut got = String::new();
    std::fs::File::open(&fifo)
        .unwrap()
        .read_to_string(&mut got)
        .unwrap();
    writer.join().unwrap();
    assert_eq!(got, "through a fifo on ElkFS");

    let other = cluster.mount_path(1).join("pipe");
    wait_until(
        Duration::from_secs(2),
        "the other mount sees the fifo",
        || sys::lstat(&other).is_ok_and(|s| sys::kind(s.st_mode) == "fifo"),
    );
}

#[test]
fn unix_sockets_can_be_bound_and_connected_on_the_mount() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let path = cluster.mount_path(0).join("sock");
    let listener = UnixListener::bind(&path).expect("bind a unix socket on the mount");
    assert_eq!(sys::kind(sys::lstat(&path).unwrap().st_mode), "socket");
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&buf).unwrap();
    });
    let mut client = UnixStream::connect(&path).expect("connect through the socket file");
    client.write_all(b"hello").unwrap();
    let mut echo = [0u8; 5];
    client.read_exact(&mut echo).unwrap();
    server.join().unwrap();
    assert_eq!(&echo, b"hello");
    assert_eq!(
        UnixListener::bind(&path)
            .map(drop)
            .map_err(|e| e.raw_os_error()),
        Err(Some(libc::EADDRINUSE))
    );
    std::fs::remove_file(&path).unwrap();
    assert!(!path.exists());
}

#[test]
fn device_nodes_keep_their_type_and_numbers() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let m = cluster.mount_path(0);
    let null = m.join("null");
    let blk = m.join("blk");
    sys::mknod(&null, libc::S_IFCHR | 0o666, libc::makedev(1, 3)).unwrap();
    sys::mknod(&blk, libc::S_IFBLK | 0o600, libc::makedev(7, 200)).unwrap();

    let st = sys::lstat(&null).unwrap();
    assert_eq!(sys::kind(st.st_mode), "chr");
    assert_eq!((libc::major(st.st_rdev), libc::minor(st.st_rdev)), (1, 3));
    let st = sys::lstat(&blk).unwrap();
    assert_eq!(sys::kind(st.st_mode), "blk");
    assert_eq!((libc::major(st.st_rdev), libc::minor(st.st_rdev)), (7, 200));
    // Large device numbers survive too.
    let big = m.join("big");
    sys::mknod(&big, libc::S_IFCHR | 0o600, libc::makedev(300, 70000)).unwrap();
    let st = sys::lstat(&big).unwrap();
    assert_eq!(
        (libc::major(st.st_rdev), libc::minor(st.st_rdev)),
        (300, 70000)
    );

    // FUSE mounts are nodev, as with every FUSE filesystem: the node is metadata only.
    assert_eq!(
        sys::open(&null, libc::O_WRONLY, 0).map(drop),
        Err(Errno(libc::EACCES))
    );
    assert_eq!(
        sys::mknod(&null, libc::S_IFCHR | 0o666, libc::makedev(1, 3)),
        Err(Errno(libc::EEXIST))
    );

    // Another mount sees the same numbers.
    let other = cluster.mount_path(1).join("blk");
    wait_until(
        Duration::from_secs(2),
        "the other mount sees the node",
        || sys::lstat(&other).is_ok(),
    );
    let meta = std::fs::symlink_metadata(&other).unwrap();
    assert_eq!(meta.rdev(), libc::makedev(7, 200));
}

fn current_umask() -> u32 {
    crate::host::umask()
}
