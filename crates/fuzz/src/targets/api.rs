//! The daemon's API: request bodies as a client sends them, decoded as the
//! handlers decode them (axum's `Json` is serde_json over the body) and checked
//! as `POST /vms` checks them before anything is opened; and the boot request a
//! shell decodes from the daemon.

use std::path::PathBuf;

use lightvm_toolstack::api::{CreateRequest, PoolResize};
use lightvm_toolstack::daemon::check_request;
use lightvm_toolstack::protocol::{self, ShellEvent, ShellRequest};
use lightvm_toolstack::DaemonConfig;

fn config() -> DaemonConfig {
    DaemonConfig {
        socket: PathBuf::from("/nonexistent/lightvm.sock"),
        state_dir: PathBuf::from("/nonexistent/state"),
        pool_size: 0,
        pool_mem: 2 << 20,
        max_vms: 1,
        max_mem: 1 << 30,
        shell_exe: PathBuf::from("/nonexistent/lightvm"),
        platform: lightvm_vmm::Platform::Process,
    }
}

/// `api_request`: one body, tried as each request the daemon and a shell accept.
pub fn request(data: &[u8]) {
    if let Ok(request) = serde_json::from_slice::<CreateRequest>(data) {
        let config = config();
        if let Ok(checked) = check_request(&config, &request) {
            // What passed the checks must serialise and parse back unchanged in
            // meaning (the daemon hands it on).
            let line = serde_json::to_vec(&request).expect("a checked request serialises");
            let again: CreateRequest =
                serde_json::from_slice(&line).expect("a checked request parses back");
            assert_eq!(
                check_request(&config, &again).ok(),
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
