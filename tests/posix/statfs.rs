//! statfs on a mount reports the cluster's real space and inode use, as `df` shows it.

use elkfs_e2e::pseudo_random;
use std::time::Duration;

use elkfs_testkit::{Cluster, wait_until};

use crate::sys;

#[test]
fn statfs_reports_the_space_of_the_clusters_disks_and_counts_inodes() {
    let cluster = Cluster::builder().chunkservers(3).start();
    let m = cluster.mount_path(0);
    // Every chunkserver's data dir is on the local disk here; each counts its disk once.
    let mut total = 0u128;
    let mut avail = 0u128;
    for i in 0..cluster.chunkserver_count() {
        let st = sys::statvfs(&cluster.chunkserver_data_dirs(i)[0]).unwrap();
        total += u128::from(st.f_blocks) * u128::from(st.f_frsize);
        avail += u128::from(st.f_bavail) * u128::from(st.f_frsize);
    }
    let st = sys::statvfs(m).unwrap();
    let elk_total = u128::from(st.f_blocks) * u128::from(st.f_frsize);
    let elk_avail = u128::from(st.f_bavail) * u128::from(st.f_frsize);
    let elk_free = u128::from(st.f_bfree) * u128::from(st.f_frsize);
    let gib = |b: u128| b as f64 / (1u128 << 30) as f64;
    let report = format!(
        "chunkservers' disks: total {:.1} GiB, available {:.1} GiB; ElkFS statfs: total {:.1} GiB, \
         free {:.1} GiB, available {:.1} GiB (frsize {}, bsize {})",
        gib(total),
        gib(avail),
        gib(elk_total),
        gib(elk_free),
        gib(elk_avail),
        st.f_frsize,
        st.f_bsize
    );
    eprintln!("{report}");
    assert!(st.f_frsize > 0 && st.f_bsize > 0, "{report}");
    let close = |a: u128, b: u128| a.abs_diff(b) * 100 <= b * 3 + (1 << 30) * 100;
    assert!(close(elk_total, total), "total space: {report}");
    assert!(close(elk_avail, avail), "available space: {report}");
    assert!(elk_free >= elk_avail, "free >= available: {report}");
    assert_eq!(st.f_namemax, 255, "{report}");

    // Inodes: creating files uses inodes as df -i shows them.
    let used_before = st.f_files - st.f_ffree;
    for i in 0..20 {
        std::fs::write(m.join(format!("f{i}")), b"x").unwrap();
    }
    std::fs::create_dir(m.join("d")).unwrap();
    let st = sys::statvfs(m).unwrap();
    assert_eq!(
        st.f_files - st.f_ffree,
        used_before + 21,
        "inodes in use after 21 creates"
    );

    // Written data shows as used space (goal 2 by default: two copies of 64 MiB).
    // (Chunkservers report their disks now and then: give it a few seconds.)
    let used = |s: &libc::statvfs| (s.f_blocks - s.f_bfree) as u128 * s.f_frsize as u128;
    let before = used(&sys::statvfs(m).unwrap());
    std::fs::write(m.join("big"), pseudo_random(64 << 20, 1)).unwrap();
    wait_until(
        Duration::from_secs(10),
        "64 MiB written shows as used space",
        || used(&sys::statvfs(m).unwrap()).saturating_sub(before) >= 64 << 20,
    );
}
