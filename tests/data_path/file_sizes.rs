//! Files of every interesting size come back byte for byte, also after a full restart.

use elkfs_e2e::pseudo_random;
use elkfs_testkit::Cluster;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

#[test]
fn files_of_edge_sizes_read_back_identical_also_after_everything_restarted() {
    let mut cluster = Cluster::builder().chunkservers(3).start();
    let sizes = [
        0,
        1,
        64 * KIB - 1,
        64 * KIB,
        64 * KIB + 1,
        64 * MIB - 1,
        64 * MIB,
        64 * MIB + 1,
        200 * MIB,
    ];
    let mnt = cluster.mount_path(0).to_path_buf();
    for (i, &size) in sizes.iter().enumerate() {
        let data = pseudo_random(size, i as u64);
        std::fs::write(mnt.join(format!("f{size}")), &data).unwrap();
        let back = std::fs::read(mnt.join(format!("f{size}"))).unwrap();
        assert!(
            back == data,
            "file of {size} bytes differs right after writing"
        );
    }
    cluster.restart_all();
    let mnt = cluster.mount_path(0).to_path_buf();
    for (i, &size) in sizes.iter().enumerate() {
        let back = std::fs::read(mnt.join(format!("f{size}"))).unwrap();
        assert_eq!(back.len(), size);
        assert!(
            back == pseudo_random(size, i as u64),
            "file of {size} bytes differs after the restart"
        );
    }
}

#[test]
fn overwrites_appends_and_truncates_keep_the_right_bytes() {
    use std::io::{Seek, SeekFrom, Write};
    let cluster = Cluster::builder().chunkservers(2).start();
    let path = cluster.mount_path(0).join("edit");
    let mut model = pseudo_random(3 * MIB, 1);
    std::fs::write(&path, &model).unwrap();

    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(100_000)).unwrap();
    f.write_all(b"overwritten").unwrap();
    model[100_000..100_011].copy_from_slice(b"overwritten");
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(&[7u8; 5000]).unwrap();
    model.extend_from_slice(&[7u8; 5000]);
    drop(f);
    assert!(std::fs::read(&path).unwrap() == model);

    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(70_001).unwrap();
    model.truncate(70_001);
    f.set_len(200_000).unwrap();
    model.resize(200_000, 0);
    drop(f);
    assert!(
        std::fs::read(&path).unwrap() == model,
        "after shrink and grow the tail must read as zeros"
    );
}
