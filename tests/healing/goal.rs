//! `setgoal -r` on a tree: raising the goal adds copies, lowering it removes them, files outside
//! the tree keep theirs, and the data stays intact throughout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{
    Admin, Configs, MIB, QUICK_MASTER, check_copies, check_placement, data, eventually, write_file,
};

#[test]
fn setgoal_on_a_tree_from_2_to_3_adds_copies_and_back_to_1_removes_them_with_data_intact() {
    let configs = Configs::new(QUICK_MASTER, "");
    let cluster = configs.builder().chunkservers(4).start();
    let admin = Admin::connect(&cluster);
    let mnt = cluster.mount_path(0).to_path_buf();
    let tree = mnt.join("tree");
    std::fs::create_dir_all(tree.join("a/b")).expect("mkdir -p");
    let sizes: [(&str, usize); 6] = [
        ("big", 70 * MIB),
        ("a/one", MIB),
        ("a/two", 3 * MIB + 5),
        ("a/b/three", 2 * MIB),
        ("a/b/tiny", 100),
        ("a/b/empty", 0),
    ];
    let in_tree: Vec<(PathBuf, Arc<[u8]>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, (name, len))| (tree.join(name), data(*len, 50 + i as u64)))
        .collect();
    let outside = vec![(mnt.join("outside"), data(2 * MIB, 60))];
    for (path, bytes) in in_tree.iter().chain(&outside) {
        write_file(path, bytes).expect("write");
    }
    let all = [0, 1, 2, 3];
    check_placement(&cluster, &admin, &all, &in_tree, 2)
        .unwrap_or_else(|e| panic!("at the root's goal 2: {e}"));
    // The tree: itself, a, a/b and six files.
    let inodes = 3 + in_tree.len() as u64;

    assert_eq!(admin.set_goal(&tree, 3, true), (inodes, 0));
    eventually(
        Duration::from_secs(60),
        "every chunk in the tree has 3 copies, the file outside still 2",
        || {
            check_placement(&cluster, &admin, &all, &in_tree, 3)?;
            check_placement(&cluster, &admin, &all, &outside, 2)
        },
    );
    check_copies(&cluster, &admin, &all, &in_tree, 3).unwrap_or_else(|e| panic!("at goal 3: {e}"));

    assert_eq!(admin.set_goal(&tree, 1, true), (inodes, 0));
    eventually(
        Duration::from_secs(60),
        "every chunk in the tree has 1 copy, the file outside still 2",
        || {
            check_placement(&cluster, &admin, &all, &in_tree, 1)?;
            check_placement(&cluster, &admin, &all, &outside, 2)
        },
    );
    // A file made in the tree now inherits goal 1.
    let late = vec![(tree.join("a/b/late"), data(MIB, 70))];
    write_file(&late[0].0, &late[0].1).expect("write");
    check_placement(&cluster, &admin, &all, &late, 1)
        .unwrap_or_else(|e| panic!("a new file in the tree: {e}"));

    for (path, want) in in_tree.iter().chain(&outside).chain(&late) {
        assert!(
            std::fs::read(path).expect("read") == **want,
            "{} reads back wrong",
            path.display()
        );
    }
    check_copies(&cluster, &admin, &all, &in_tree, 1).unwrap_or_else(|e| panic!("at goal 1: {e}"));
    check_copies(&cluster, &admin, &all, &outside, 2)
        .unwrap_or_else(|e| panic!("outside the tree: {e}"));
}
