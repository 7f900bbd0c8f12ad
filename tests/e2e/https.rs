//! HTTPS (#19). doproxy's commands do not issue certificates yet: the
//! issuance itself is tested inside the crate (src/ops/https_tests.rs) against
//! this same Pebble and a real HAProxy. Here, the test CA the end-to-end
//! tests of those commands will use: Pebble on loopback, its directory
//! trusted through the harness' CA, its issuing root at hand for clients.

use std::process::Command;

use crate::pebble::{Pebble, free_port};
use crate::support::Run;

#[test]
fn pebble_serves_its_acme_directory_and_issuing_root_on_loopback() {
    let pebble = Pebble::start(free_port());
    let directory = Run::from_output(
        Command::new("curl")
            .args(["--silent", "--show-error", "--fail", "--cacert"])
            .arg(pebble.server_ca_file())
            .arg(pebble.directory_url()),
    )
    .success();
    let directory: serde_json::Value = serde_json::from_str(&directory.stdout).unwrap();
    assert!(
        directory["newOrder"]
            .as_str()
            .unwrap()
            .starts_with("https://127.0.0.1:")
    );
    let root = Run::from_output(
        Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-in"])
            .arg(pebble.issuing_root_file()),
    )
    .success();
    assert!(root.stdout.contains("Pebble Root CA"), "{}", root.stdout);
}
