//! The standalone resolver's records file: TOML text → checked records → table.
//!
//! The contract under test is "a file is checked whole before anything is applied": whatever
//! `Records::parse` accepts, the table must take without an error (a half-applied reload is
//! the failure this prevents), no two endpoints of the file become one in the table, and every
//! registered name must answer from its own network.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use resolver::records::Records;
use resolver::table::Found;
use resolver::Table;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(records) = Records::parse(text) else {
        return;
    };
    let table = Table::new();
    for (spec, _listen) in &records.networks {
        if let Err(e) = table.add_network(spec) {
            panic!("parse accepted a network the table refuses: {e}\n{text}");
        }
    }
    for e in &records.endpoints {
        if let Err(err) = table.upsert_endpoint(e) {
            panic!("parse accepted an endpoint the table refuses: {err}\n{text}");
        }
    }
    // Nothing merged: every endpoint of the file is its own endpoint in the table.
    assert_eq!(
        table.endpoint_keys().len(),
        records.endpoints.len(),
        "endpoints merged by the table\n{text}"
    );
    // Ask for each container's name from the host's listener side (an unknown source).
    for e in &records.endpoints {
        let key = table
            .network_key(&e.network_id)
            .expect("network registered");
        let asker = table.asker(IpAddr::V4(Ipv4Addr::LOCALHOST), None, key);
        let name = e
            .container_name
            .trim_start_matches('/')
            .to_ascii_lowercase();
        let found = table.lookup(&asker, name.as_bytes());
        assert!(
            matches!(found, Found::Here { .. }),
            "{name} registered on {} but not found\n{text}",
            e.network_id
        );
    }
});
