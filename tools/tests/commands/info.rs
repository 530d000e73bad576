//! `fileinfo`, `checkfile` and `dirinfo`: MooseFS's output, and what they say checked against
//! the chunk files on the chunkservers' disks.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use elkfs_testkit::Cluster;

use crate::support::{MIB, chunk_files, data, eventually, fails, ok, write};

/// `fileinfo` output with chunk names and servers replaced by `<chunk>` and `<server>` after
/// checking that each names a chunk file on that server's disk. Returns the normalised text
/// and, per chunk index, its id.
fn checked_fileinfo(cluster: &Cluster, text: &str) -> (String, BTreeMap<u32, u64>) {
    let servers: BTreeMap<SocketAddr, usize> = (0..cluster.chunkserver_count())
        .map(|i| (cluster.chunkserver(i).addr(), i))
        .collect();
    let on_disk = chunk_files(cluster);
    let mut ids = BTreeMap::new();
    let mut current: Option<u64> = None;
    let mut out = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("\tchunk ") {
            let (index, what) = rest.split_once(": ").expect("chunk N: ...");
            if what == "empty" {
                out.push_str(line);
                out.push('\n');
                current = None;
                continue;
            }
            // 00000000000000CB_00000001 / (id:203 ver:1)
            let (name, ids_part) = what.split_once(" / ").expect("NAME / (id ver)");
            let (hex_id, hex_ver) = name.split_once('_').expect("ID_VERSION");
            let id = u64::from_str_radix(hex_id, 16).expect("hex id");
            let ver = u32::from_str_radix(hex_ver, 16).expect("hex version");
            assert_eq!(hex_id.len(), 16, "{line}");
            assert_eq!(hex_ver.len(), 8, "{line}");
            assert_eq!(ids_part, format!("(id:{id} ver:{ver})"), "{line}");
            ids.insert(index.parse().expect("chunk index"), id);
            current = Some(id);
            out.push_str(&format!("\tchunk {index}: <chunk>\n"));
        } else if let Some(rest) = line.strip_prefix("\t\tcopy ") {
            let (n, what) = rest.split_once(": ").expect("copy N: ...");
            let (addr, status) = what.split_once(' ').expect("ADDR (status:...)");
            let addr: SocketAddr = addr.parse().expect("a server address");
            let server = servers[&addr];
            let id = current.expect("a copy line under a chunk");
            assert!(
                on_disk.contains(&(server, id)),
                "fileinfo lists chunk {id} on {addr}, which has no such file"
            );
            out.push_str(&format!("\t\tcopy {n}: <server> {status}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    (out, ids)
}

#[test]
fn fileinfo_checkfile_and_dirinfo_print_what_mfsfileinfo_mfscheckfile_and_mfsdirinfo_print() {
    let mut cluster = Cluster::builder().chunkservers(3).start();
    let mnt = cluster.mount_path(0).to_path_buf();
    write(&mnt.join("d/a"), b"hello\n");
    write(&mnt.join("d/sub/b"), &data(70 * MIB, 2));
    write(&mnt.join("d/empty"), b"");
    // A sparse file: chunks 0 and 1 are holes, chunk 2 has data, chunk 3 is a hole at the end.
    {
        let mut f = std::fs::File::create(mnt.join("sparse")).expect("create sparse");
        f.set_len(200 * MIB as u64).expect("set_len");
        f.seek(SeekFrom::Start(130 * MIB as u64)).expect("seek");
        f.write_all(&data(MIB, 3)).expect("write");
    }

    let text = ok(&mnt, &["fileinfo", "d/a", "d/sub/b", "d/empty", "sparse"]);
    let (normal, _) = checked_fileinfo(&cluster, &text);
    assert_eq!(
        normal,
        "d/a:\n\
         \tchunk 0: <chunk>\n\
         \t\tcopy 1: <server> (status:VALID)\n\
         \t\tcopy 2: <server> (status:VALID)\n\
         d/sub/b:\n\
         \tchunk 0: <chunk>\n\
         \t\tcopy 1: <server> (status:VALID)\n\
         \t\tcopy 2: <server> (status:VALID)\n\
         \tchunk 1: <chunk>\n\
         \t\tcopy 1: <server> (status:VALID)\n\
         \t\tcopy 2: <server> (status:VALID)\n\
         d/empty:\n\
         \tno chunks - empty file\n\
         sparse:\n\
         \tchunk 0: empty\n\
         \tchunk 1: empty\n\
         \tchunk 2: <chunk>\n\
         \t\tcopy 1: <server> (status:VALID)\n\
         \t\tcopy 2: <server> (status:VALID)\n",
        "from:\n{text}"
    );

    assert_eq!(
        ok(&mnt, &["checkfile", "d/a", "d/sub/b", "d/empty", "sparse"]),
        "d/a:\n\
         \x20chunks with 2 copies:            1\n\
         d/sub/b:\n\
         \x20chunks with 2 copies:            2\n\
         d/empty:\n\
         sparse:\n\
         \x20chunks with 2 copies:            1\n\
         \x20empty (zero) chunks:             2\n"
    );

    // Sizes count whole 64 KiB blocks; realsize is size times the goal (2).
    assert_eq!(
        ok(&mnt, &["dirinfo", "d"]),
        "d:\n\
         \x20inodes:                          5\n\
         \x20\x20directories:                    2\n\
         \x20\x20files:                          3\n\
         \x20chunks:                          3\n\
         \x20length:                   73400326\n\
         \x20size:                     73465856\n\
         \x20realsize:                146931712\n"
    );

    let (stdout, stderr) = fails(&mnt, &["fileinfo", "d", "d/a"]);
    assert!(stdout.starts_with("d/a:\n"), "{stdout}");
    assert_eq!(stderr, "elkfs: d: not a file\n");

    // With one chunkserver gone, the chunks it held have one copy left.
    let (_, ids) = checked_fileinfo(&cluster, &ok(&mnt, &["fileinfo", "d/sub/b"]));
    let holder = chunk_files(&cluster)
        .into_iter()
        .find(|(_, id)| *id == ids[&0])
        .map(|(server, _)| server)
        .expect("chunk 0 of d/sub/b is on some server");
    let on_holder = ids
        .values()
        .filter(|id| chunk_files(&cluster).contains(&(holder, **id)))
        .count();
    cluster.stop_chunkserver(holder);
    let expected = if on_holder == 2 {
        "d/sub/b:\n chunks with 1 copy:              2\n".to_string()
    } else {
        "d/sub/b:\n chunks with 1 copy:              1\n chunks with 2 copies:            1\n"
            .to_string()
    };
    eventually(
        Duration::from_secs(10),
        "checkfile counts one copy of what the stopped server held",
        || ok(&mnt, &["checkfile", "d/sub/b"]) == expected,
    );
}

#[test]
fn commands_name_the_path_when_it_is_not_on_elkfs() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("f"), b"x").expect("write");
    for command in [
        "getgoal",
        "gettrashtime",
        "geteattr",
        "fileinfo",
        "checkfile",
        "dirinfo",
    ] {
        let (stdout, stderr) = fails(dir.path(), &[command, "f"]);
        assert_eq!(stdout, "");
        assert_eq!(stderr, "elkfs: f: not on an ElkFS mount\n", "{command}");
    }
    let (_, stderr) = fails(
        Path::new("/"),
        &["setgoal", "-r", "2", "/nonexistent-elkfs-path"],
    );
    assert_eq!(
        stderr,
        "elkfs: /nonexistent-elkfs-path: no such file or directory\n"
    );
}
