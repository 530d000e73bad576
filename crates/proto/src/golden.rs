//! Golden bytes: the exact encoding of a few messages, so an accidental change of the wire
//! format (a reordered variant, a changed integer encoding) fails here instead of in a mixed
//! cluster.

use std::net::SocketAddr;

use crate::capability::{Access, Capability};
use crate::chunkserver::{CsCommand, CsRequest, Space};
use crate::codec;
use crate::data::{DataError, DataRequest};
use crate::hello::{Hello, Role};
use crate::ids::{ChunkId, ChunkVersion, InodeId};
use crate::master::{MasterReply, MasterRequest};
use crate::status::Status;
use crate::types::{Caller, FileKind};

fn hex<T: serde::Serialize>(value: &T) -> String {
    codec::encode(value)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn addr() -> SocketAddr {
    "127.0.0.1:9422".parse().unwrap()
}

#[test]
fn hello_encoding_is_pinned() {
    let hello = Hello {
        protocol_version: 1,
        role: Role::DataClient,
        software: "x".into(),
    };
    assert_eq!(hex(&hello), "01030178");
}

#[test]
fn master_messages_encoding_is_pinned() {
    let lookup = MasterRequest::Lookup {
        parent: InodeId(1),
        name: b"ab".to_vec(),
    };
    assert_eq!(
        hex(&(0u8, 300u64, &lookup)),
        "00fb2c0101010261 62".replace(' ', "")
    );
    let mknod = MasterRequest::Mknod {
        parent: InodeId(1),
        name: b"f".to_vec(),
        kind: FileKind::File,
        mode: 0o644,
        umask: 0o22,
        rdev: 0,
        caller: Caller {
            uid: 1000,
            gid: 1000,
        },
        open: true,
    };
    assert_eq!(hex(&mknod), "0401016600fba4011200fbe803fbe80301");
    let ahead = MasterRequest::LookupAhead {
        parent: InodeId(7),
        name: b"a".to_vec(),
        limit: 16,
    };
    assert_eq!(hex(&ahead), "2d07016110");
    let refused: Result<MasterReply, Status> = Err(Status::NotEmpty);
    assert_eq!(hex(&refused), "0102");
}

#[test]
fn chunkserver_messages_encoding_is_pinned() {
    let register = CsRequest::Register {
        server_id: 7,
        data_addr: addr(),
        space: Space {
            total: 1 << 20,
            available: 5,
        },
        chunk_count: 2,
        proof: [0; 32],
    };
    assert_eq!(
        hex(&register),
        "0007007f000001fbce24fc0000100005020000000000000000000000000000000000000000000000000000000000000000"
    );
    let cmd = CsCommand::SetVersion {
        chunk: ChunkId(0xCB),
        from: ChunkVersion(1),
        to: ChunkVersion(2),
    };
    assert_eq!(hex(&cmd), "01cb0102");
}

#[test]
fn data_messages_encoding_is_pinned() {
    let write = DataRequest::Write {
        chunk: ChunkId(7),
        version: ChunkVersion(3),
        offset: 65536,
        chain: vec![addr()],
        capability: Capability {
            chunk: ChunkId(7),
            version: ChunkVersion(3),
            access: Access::Create,
            expires: 1,
            mac: [0xAB; 32],
        },
        create: true,
    };
    assert_eq!(
        hex(&write),
        "010703fc0000010001007f000001fbce2407030201abababababababababababababababababababababababababababababababab01"
    );
    let err: Result<(), DataError> = Err(DataError {
        status: Status::Corrupt,
        server: addr(),
    });
    assert_eq!(hex(&err), "010d007f000001fbce24");
}
