//! The DNS request path, bytes in → reply bytes out, against a populated table.
//!
//! First input byte: bit 0 = arrived over TCP (no UDP size limit), bit 1 = asked from a
//! container of another network. The rest is the packet. Checked on every input: no panic;
//! a reply is a well-formed DNS response (hickory-proto decodes it) with the asker's id, the
//! QR bit, and no more bytes than the transport allows; a query handed to the forwarder is one
//! the parser accepted.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use resolver::respond::{Arrival, Outcome, Responder};
use resolver::table::NetKey;
use resolver::{EndpointSpec, Link, NetworkSpec, Table};

struct World {
    responder: Responder,
    net: NetKey,
}

fn endpoint(net: &str, id: &str, name: &str, v4: [u8; 4], v6: Option<u16>) -> EndpointSpec {
    EndpointSpec {
        network_id: net.into(),
        container_id: format!("{id:0>64}"),
        container_name: name.into(),
        hostname: Some(format!("{name}-host")),
        aliases: vec![format!("{name}-alias"), "shared".into()],
        links: vec![],
        ipv4: Some(Ipv4Addr::from(v4)),
        ipv6: v6.map(|t| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, t)),
    }
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let t = Table::new();
    for (id, name) in [("front", "front"), ("back", "back")] {
        t.add_network(&NetworkSpec {
            id: id.into(),
            name: name.into(),
            internal: name == "back",
            bridge_ifindex: None,
            // The host names answer on "front" (the policy's special names get fuzzed too).
            host_addresses: if name == "front" {
                vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()]
            } else {
                vec![]
            },
            dns_servers: vec![],
        })
        .unwrap();
    }
    for i in 0..40u8 {
        t.upsert_endpoint(&endpoint(
            "front",
            &format!("{i:x}"),
            &format!("c{i}"),
            [10, 0, 0, 10 + i],
            Some(10 + u16::from(i)),
        ))
        .unwrap();
    }
    let mut client = endpoint("front", "c1", "client", [10, 0, 0, 2], None);
    client.links = vec![Link {
        target: "hidden".into(),
        alias: "secret".into(),
    }];
    t.upsert_endpoint(&client).unwrap();
    t.upsert_endpoint(&endpoint("back", "b1", "hidden", [10, 1, 0, 3], Some(3)))
        .unwrap();
    t.upsert_endpoint(&endpoint("back", "b2", "other", [10, 1, 0, 4], None))
        .unwrap();
    let net = t.network_key("front").unwrap();
    World {
        responder: Responder::new(t, 600),
        net,
    }
});

fuzz_target!(|data: &[u8]| {
    let Some((&flags, packet)) = data.split_first() else {
        return;
    };
    let w = &*WORLD;
    let tcp = flags & 1 != 0;
    let src = if flags & 2 != 0 {
        [10, 1, 0, 4]
    } else {
        [10, 0, 0, 2]
    };
    let from = Arrival {
        src: IpAddr::V4(Ipv4Addr::from(src)),
        ifindex: None,
        listener: w.net,
        fixed_limit: tcp.then_some(65535),
    };
    let mut out = Vec::new();
    match w.responder.respond(packet, &from, &mut out) {
        Outcome::Reply(_) => {
            assert!(out.len() >= 12, "reply shorter than a header");
            assert_eq!(out[..2], packet[..2], "reply id is the query's");
            assert!(out[2] & 0x80 != 0, "QR set");
            let limit = if tcp {
                65535
            } else {
                match resolver::wire::parse(packet) {
                    Ok(req) => req.udp_limit(),
                    Err(_) => 512,
                }
            };
            assert!(
                out.len() <= limit,
                "reply of {} bytes over the limit {limit}",
                out.len()
            );
            if let Err(e) = hickory_proto::op::Message::from_vec(&out) {
                panic!("reply does not decode: {e}\nquery {packet:02x?}\nreply {out:02x?}");
            }
        }
        Outcome::Forward(_) => {
            assert!(
                resolver::wire::parse(packet).is_ok(),
                "forwarding a packet the parser refused"
            )
        }
        Outcome::Drop => {}
    }
});
