//! The daemon's API: request bodies as a client sends them, decoded as the
//! handlers decode them (axum's `Json` is serde_json over the body) and checked
//! as `POST /vms` checks them before anything is opened; and the boot request a
//! shell decodes from the daemon.

use lightvm_toolstack::api::{CreateRequest, PoolResize};
use lightvm_toolstack::protocol::{self, ShellEvent, ShellRequest};
use lightvm_toolstack::request::{check_request, DefaultMem};

/// The daemon's defaults: pooled unikernels of 2 MiB, Linux programs of 512 MiB.
const POOL_MEM: DefaultMem = DefaultMem {
    unikernel: 2 << 20,
    linux: 512 << 20,
};
/// At most 1 GiB asked for.
const MAX_MEM: u64 = 1 << 30;

/// `api_request`: one body, tried as each request the daemon and a shell accept.
pub fn request(data: &[u8]) {
    if let Ok(request) = serde_json::from_slice::<CreateRequest>(data) {
        if let Ok(checked) = check_request(&request, POOL_MEM, MAX_MEM) {
            // What passed the checks must serialise and parse back unchanged in
            // meaning (the daemon hands it on).
            let line = serde_json::to_vec(&request).expect("a checked request serialises");
            let again: CreateRequest =
                serde_json::from_slice(&line).expect("a checked request parses back");
            assert_eq!(
                check_request(&again, POOL_MEM, MAX_MEM).ok(),
                Some(checked),
                "a request changed meaning on its way through JSON"
            );
        }
    }
    let _ = serde_json::from_slice::<PoolResize>(data);
    if let Ok(ShellRequest::Boot(boot)) = protocol::decode::<ShellRequest>(data) {
        let line = protocol::encode(&ShellRequest::Boot(boot.clone()));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let _ = protocol::decode::<ShellRequest>(&line).expect("an encoded request decodes");
    }
    let _ = protocol::decode::<ShellEvent>(data);
}
