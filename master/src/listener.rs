//! The master's accept loop: every connection says hello, is admitted or refused, and is then
//! served by the handler for its role until it closes.

use std::net::SocketAddr;
use std::sync::Arc;

use elkfs_proto::chunkserver::{CsCommand, CsCommandResult, CsRequest, CsResponse};
use elkfs_proto::connection::{self, NoMessage};
use elkfs_proto::master::{MasterRequest, MasterResponse};
use elkfs_proto::metalogger::{MlRequest, MlResponse};
use elkfs_proto::tls::TlsServer;
use elkfs_proto::{
    Hello, MASTER_CHUNKSERVER_LIMITS, MASTER_CLIENT_LIMITS, MASTER_METALOGGER_LIMITS, Role,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::client_service::ClientHandler;
use crate::cs_service::CsHandler;
use crate::exports::Exports;
use crate::metalogger_service::MetaloggerHandler;
use crate::state::MasterState;

/// Accepts connections until `stop` is cancelled; with `tls`, only TLS connections.
pub async fn accept_loop(
    listener: TcpListener,
    state: Arc<MasterState>,
    tls: Option<TlsServer>,
    stop: CancellationToken,
) {
    elkfs_proto::peer_limit::accept_loop(listener, stop, |stream, stop| {
        serve_connection(stream, state.clone(), tls.clone(), stop)
    })
    .await;
}

/// Who may connect: chunkservers and metaloggers from anywhere (they prove the cluster key
/// next), clients from an address some line of the exports file names (loopback only without one).
fn admit(hello: &Hello, peer: SocketAddr, exports: &Exports) -> Result<(), String> {
    match hello.role {
        Role::Client if exports.admits_host(peer.ip()) => Ok(()),
        Role::Client => Err(match exports.file() {
            Some(file) => format!(
                "no line of the exports file lets {} in; edit {} on the master",
                peer.ip(),
                file.display()
            ),
            None => format!(
                "elkfs-master lets in loopback clients only (no exports file, see --exports); \
                 {} is not allowed",
                peer.ip()
            ),
        }),
        Role::Chunkserver | Role::Metalogger => Ok(()),
        other => Err(format!(
            "elkfs-master does not accept {other:?} connections"
        )),
    }
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<MasterState>,
    tls: Option<TlsServer>,
    stop: CancellationToken,
) {
    let exports = state.exports();
    let admission = |hello: &Hello, peer| admit(hello, peer, &exports);
    let accepted = match connection::accept(stream, "elkfs-master", tls.as_ref(), admission).await {
        Ok(a) => a,
        Err(reason) => {
            tracing::warn!(%reason, "refused a connection");
            return;
        }
    };
    let peer = accepted.peer;
    let role = accepted.hello.role;
    let result = match role {
        Role::Chunkserver => {
            accepted
                .serve::<CsCommand, CsCommandResult, CsRequest, CsResponse, _>(
                    MASTER_CHUNKSERVER_LIMITS,
                    "chunkserver",
                    stop,
                    |link| CsHandler::new(state, link, peer),
                )
                .await
        }
        Role::Metalogger => {
            accepted
                .serve::<NoMessage, NoMessage, MlRequest, MlResponse, _>(
                    MASTER_METALOGGER_LIMITS,
                    "metalogger",
                    stop,
                    |_| MetaloggerHandler::new(state, peer),
                )
                .await
        }
        _ => {
            let close = stop.child_token();
            accepted
                .serve::<NoMessage, NoMessage, MasterRequest, MasterResponse, _>(
                    MASTER_CLIENT_LIMITS,
                    "client",
                    close.clone(),
                    |_| ClientHandler::new(state, peer, close),
                )
                .await
        }
    };
    if let Err(reason) = result {
        tracing::warn!(%peer, ?role, %reason, "closed a connection");
    }
}
