//! A stub upstream DNS server for the forwarding tests: on loopback only.

/// A stub upstream on a loopback address of this test's own (port 53): answers every A
/// question with `answer` (TTL 300, so the agent caches it), other types with no records;
/// counts the queries it got.
pub struct Stub {
    queries: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Stub {
    pub fn start(at: std::net::Ipv4Addr, answer: std::net::Ipv4Addr) -> Stub {
        use hickory_proto::op::{Message, MessageType, OpCode};
        use hickory_proto::rr::rdata::A;
        use hickory_proto::rr::{RData, Record, RecordType};
        use std::sync::atomic::Ordering;
        let sock = std::net::UdpSocket::bind((at, 53)).expect("bind the stub upstream");
        sock.set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        let stub = Stub {
            queries: Default::default(),
            stop: Default::default(),
        };
        let (queries, stop) = (stub.queries.clone(), stub.stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                queries.fetch_add(1, Ordering::Relaxed);
                let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                r.metadata.recursion_desired = q.metadata.recursion_desired;
                r.metadata.recursion_available = true;
                r.add_queries(q.queries.clone());
                if let Some(question) = q.queries.first() {
                    if question.query_type() == RecordType::A {
                        r.add_answer(Record::from_rdata(
                            question.name().clone(),
                            300,
                            RData::A(A(answer)),
                        ));
                    }
                }
                let _ = sock.send_to(&r.to_vec().unwrap(), from);
            }
        });
        stub
    }

    pub fn count(&self) -> usize {
        self.queries.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
