//! [`ClusterStore`] on etcd (v3 API over gRPC: tonic's client, with the API's messages compiled
//! from `proto/` by build.rs).
//!
//! One channel per member, and calls go to the current one; a call that fails for want of a
//! member (connection refused, reset, deadline, no leader) moves on to the next member and is
//! retried, with a short backoff after each full round, until `retry_for` has passed, so one
//! member dying costs a retry, not an error. (A balanced channel over all the members would keep
//! picking a dead one: it has no health check.) Transactions are retried too: callers make their
//! conditions such that a retry of a transaction that did apply is recognisable (see
//! `Cluster::claim`).
//!
//! We speak gRPC ourselves rather than through the etcd-client crate because that crate compiles
//! etcd's protobufs with `protoc` at build time, which a fresh machine does not have.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tonic::codegen::InterceptedService;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use super::store::{
    Batch, Change, ClusterStore, Cond, Kv, LeaseId, Op, Result, Revision, StoreError,
};

/// etcd's v3 API messages and clients, generated at build time.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

use pb::etcdserverpb::auth_client::AuthClient;
use pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::etcdserverpb::kv_client::KvClient;
use pb::etcdserverpb::lease_client::LeaseClient;
use pb::etcdserverpb::request_op::Request as TxnRequestOp;
use pb::etcdserverpb::watch_client::WatchClient;
use pb::etcdserverpb::watch_request::RequestUnion;
use pb::etcdserverpb::{
    AuthenticateRequest, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest,
    LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use pb::mvccpb::event::EventType;
use pb::mvccpb::KeyValue;

/// How long one request may take before it is tried again (on another member, if one is
/// down): a dead member's TCP connection otherwise hangs until the kernel gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest response accepted. A snapshot of a big cluster's endpoints can pass tonic's
/// default of 4 MiB; etcd itself sends up to 2 GiB. 256 MiB is far past any real cluster here
/// and still a bound.
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Adds what every request carries: etcd's "require leader" flag, so a member cut off from the
/// others refuses (and we move on) instead of serving stale reads and watches; and the auth
/// token, once one was obtained (etcd RBAC).
#[derive(Clone, Debug, Default)]
struct RequestMetadata {
    token: Arc<RwLock<Option<MetadataValue<Ascii>>>>,
}

impl Interceptor for RequestMetadata {
    fn call(&mut self, mut request: Request<()>) -> std::result::Result<Request<()>, Status> {
        let md = request.metadata_mut();
        md.insert("hasleader", MetadataValue::from_static("true"));
        let token = self
            .token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(t) = token.as_ref() {
            md.insert("token", t.clone());
        }
        Ok(request)
    }
}

/// How the members are reached, beyond their addresses: TLS (the CA of their certificates,
/// this host's certificate for mutual TLS) and an etcd user. Files are read at connect; each
/// error names the setting it comes from.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// TLS: the CA's PEM file.
    pub ca_file: Option<PathBuf>,
    /// Mutual TLS: certificate and key PEM files.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// etcd RBAC: the user and the file holding its password.
    pub user: Option<(String, PathBuf)>,
}

impl Security {
    pub fn tls(&self) -> bool {
        self.ca_file.is_some()
    }
}

const STORE_SETTING: &str = "store (--cluster-store)";
const CA_SETTING: &str = "ca_file (--cluster-ca)";
const CERT_SETTING: &str = "cert_file (--cluster-cert)";
const KEY_SETTING: &str = "key_file (--cluster-key)";
const USER_SETTING: &str = "username (--cluster-user) / password_file (--cluster-password-file)";

fn setting(setting: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Setting {
        setting,
        detail: detail.into(),
    }
}

/// A PEM file that holds what it should (`what`: "CERTIFICATE", "PRIVATE KEY").
fn read_pem(path: &Path, what: &str, name: &'static str) -> Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).map_err(|e| setting(name, format!("{}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN ") || !text.contains(&format!("{what}-----")) {
        return Err(setting(
            name,
            format!("{}: no PEM {what} in it", path.display()),
        ));
    }
    Ok(bytes)
}

/// Every message of an error and its sources, for telling TLS failures apart.
fn chain(s: &Status) -> String {
    let mut out = s.message().to_string();
    let mut next = std::error::Error::source(s);
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}

/// A failure that names a setting (a certificate the store does not accept, a wrong password):
/// retrying cannot help, and the message says what to change.
fn misconfigured(s: &Status, have_cert: bool) -> Option<StoreError> {
    let all = chain(s);
    if all.contains("invalid peer certificate") {
        return Some(setting(
            CA_SETTING,
            format!("the store's certificate does not verify against this CA: {all}"),
        ));
    }
    if all.contains("CertificateRequired") || (!have_cert && all.contains("BadCertificate")) {
        return Some(setting(
            CERT_SETTING,
            format!("the store asks for a client certificate: give cert_file and key_file (--cluster-cert, --cluster-key): {all}"),
        ));
    }
    for alert in [
        "BadCertificate",
        "CertificateExpired",
        "UnknownCA",
        "CertificateUnknown",
        "CertificateRevoked",
    ] {
        if all.contains(alert) {
            return Some(setting(
                CERT_SETTING,
                format!("the store refused this host's certificate (expired, or not signed by the store's CA?): {all}"),
            ));
        }
    }
    if all.contains("InvalidContentType") || all.contains("corrupt message") {
        return Some(setting(
            CA_SETTING,
            format!("the member does not speak TLS (use etcd:// for a plain store): {all}"),
        ));
    }
    if s.code() == Code::InvalidArgument && all.contains("authentication failed") {
        return Some(setting(
            USER_SETTING,
            format!("etcd refused the user or password: {all}"),
        ));
    }
    if s.code() == Code::FailedPrecondition && all.contains("authentication is not enabled") {
        return Some(setting(
            USER_SETTING,
            format!("a user is given but the store has no authentication enabled: {all}"),
        ));
    }
    None
}

type Service = InterceptedService<Channel, RequestMetadata>;

/// One member: its address as given, and a channel to it (connected lazily and reconnected by
/// tonic after a failure; cheap to clone).
struct Member {
    name: String,
    channel: Channel,
    metadata: RequestMetadata,
}

impl Member {
    fn kv(&self) -> KvClient<Service> {
        KvClient::with_interceptor(self.channel.clone(), self.metadata.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }
    fn lease(&self) -> LeaseClient<Service> {
        LeaseClient::with_interceptor(self.channel.clone(), self.metadata.clone())
    }
    fn watch(&self) -> WatchClient<Service> {
        WatchClient::with_interceptor(self.channel.clone(), self.metadata.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }
    fn auth(&self) -> AuthClient<Service> {
        AuthClient::with_interceptor(self.channel.clone(), self.metadata.clone())
    }
}

pub struct EtcdStore {
    /// In the order given.
    members: Vec<Member>,
    /// The member calls go to; moved on when it fails.
    current: AtomicUsize,
    retry_for: Duration,
    /// The token every member's requests carry (shared with their interceptors).
    token: Arc<RwLock<Option<MetadataValue<Ascii>>>>,
    /// User and password, to authenticate again when the token expires.
    user: Option<(String, String)>,
    have_cert: bool,
    tls: bool,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
        f.debug_struct("EtcdStore")
            .field("members", &names)
            .finish_non_exhaustive()
    }
}

/// etcd's answer for a lease that no longer exists (`etcdserver: requested lease not found`),
/// to a put on it as to a revoke.
fn lease_gone(s: &Status) -> bool {
    s.code() == Code::NotFound
}

/// Whether an error says "this member, now" rather than "this request": worth a retry.
/// tonic reports a member it cannot reach (refused, reset, timed out) as `Unavailable` or
/// `Unknown`; etcd a member without a leader as `Unavailable`.
fn transient(s: &Status) -> bool {
    !lease_gone(s)
        && matches!(
            s.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Unknown
                | Code::Cancelled
                | Code::Aborted
                | Code::Internal
        )
}

/// The error of a call that failed for good: a setting to fix, a permission the etcd user
/// lacks, or the store out of reach.
fn unavailable(what: &str, s: &Status) -> StoreError {
    failure(what, s, true)
}

fn failure(what: &str, s: &Status, have_cert: bool) -> StoreError {
    if let Some(e) = misconfigured(s, have_cert) {
        return e;
    }
    if s.code() == Code::PermissionDenied {
        return StoreError::Denied(format!(
            "{what}: {} (the role of the etcd user, --cluster-user, must allow it)",
            s.message()
        ));
    }
    if s.code() == Code::Unauthenticated {
        return setting(USER_SETTING, format!("{what}: {}", chain(s)));
    }
    StoreError::Unavailable(format!("{what}: {}", chain(s)))
}

/// The end of the key range holding every key that starts with `prefix`, as etcd defines it:
/// the prefix with its last byte below 0xff incremented and what follows dropped (`\0`, all
/// keys, when every byte is 0xff).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdStore {
    /// Connect to the members at `endpoints` (`HOST:PORT`) as `security` says; fails when
    /// none answers within `retry_for`, at once when a setting is wrong (a certificate the
    /// store refuses, a wrong password: the error names the setting).
    pub async fn connect(
        endpoints: &[String],
        security: &Security,
        retry_for: Duration,
    ) -> Result<EtcdStore> {
        let mut store = EtcdStore::open(endpoints, security, retry_for)?;
        store.probe(retry_for).await?;
        Ok(store)
    }

    /// Ask the store once whether it answers and takes this host's settings (a token taken
    /// for the user, one read), trying the members for at most `within`: `Unavailable` when
    /// none answered, a setting's error when one refused this host.
    pub async fn probe(&mut self, within: Duration) -> Result<()> {
        let retry_for = std::mem::replace(&mut self.retry_for, within);
        let answered = async {
            if self.user.is_some() {
                self.authenticate().await?;
            }
            self.snapshot("/attach-agent/v1/version-probe")
                .await
                .map(|_| ())
        }
        .await;
        self.retry_for = retry_for;
        answered
    }

    /// The client of the members at `endpoints`, its files read and checked; nothing is sent
    /// (connections are made at the first call: see [`EtcdStore::probe`]).
    pub fn open(
        endpoints: &[String],
        security: &Security,
        retry_for: Duration,
    ) -> Result<EtcdStore> {
        let tls =
            match &security.ca_file {
                None => None,
                Some(ca) => {
                    let mut t = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(
                        read_pem(ca, "CERTIFICATE", CA_SETTING)?,
                    ));
                    if let Some((cert, key)) = &security.identity {
                        let cert = read_pem(cert, "CERTIFICATE", CERT_SETTING)?;
                        let key = read_pem(key, "PRIVATE KEY", KEY_SETTING)?;
                        t = t.identity(Identity::from_pem(cert, key));
                    }
                    Some(t)
                }
            };
        let user = match &security.user {
            None => None,
            Some((name, file)) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| setting(USER_SETTING, format!("{}: {e}", file.display())))?;
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(file).map_or(0, |m| m.permissions().mode());
                if mode & 0o077 != 0 {
                    tracing::warn!(file = %file.display(), mode = format!("{:o}", mode & 0o777), "the cluster password file is readable by others than its owner (chmod 600 it)");
                }
                let password = text.lines().next().unwrap_or_default().to_string();
                if password.is_empty() {
                    return Err(setting(
                        USER_SETTING,
                        format!("{}: the first line is empty", file.display()),
                    ));
                }
                Some((name.clone(), password))
            }
        };
        let token = Arc::new(RwLock::new(None));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut members = Vec::new();
        for name in endpoints {
            let mut endpoint = Endpoint::from_shared(format!("{scheme}://{name}"))
                .map_err(|e| StoreError::Unavailable(format!("cluster store {name}: {e}")))?;
            if let Some(t) = &tls {
                endpoint = endpoint
                    .tls_config(t.clone())
                    .map_err(|e| setting(CA_SETTING, format!("{name}: {e}")))?;
            }
            let endpoint = endpoint
                .connect_timeout(REQUEST_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(REQUEST_TIMEOUT)
                .keep_alive_while_idle(true);
            // Connecting is lazy: a member down now is only skipped at the first call.
            members.push(Member {
                name: name.clone(),
                channel: endpoint.connect_lazy(),
                metadata: RequestMetadata {
                    token: token.clone(),
                },
            });
        }
        if members.is_empty() {
            return Err(StoreError::Unavailable(
                "no cluster store member given".into(),
            ));
        }
        Ok(EtcdStore {
            members,
            current: AtomicUsize::new(0),
            retry_for,
            token,
            user,
            have_cert: security.identity.is_some(),
            tls: security.tls(),
        })
    }

    /// Get a token for the user (etcd's simple tokens expire after minutes of disuse, JWTs
    /// at their TTL: again whenever a request says it is no longer valid).
    async fn authenticate(&self) -> Result<()> {
        let Some((name, password)) = self.user.clone() else {
            return Ok(());
        };
        // An expired token must not go along (older etcd releases refuse the request then).
        *self
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let deadline = Instant::now() + self.retry_for;
        let n = self.members.len();
        loop {
            let i = self.current.load(Ordering::Relaxed) % n;
            let request = AuthenticateRequest {
                name: name.clone(),
                password: password.clone(),
            };
            match self.members[i].auth().authenticate(request).await {
                Ok(r) => {
                    let t = MetadataValue::try_from(r.into_inner().token)
                        .map_err(|e| StoreError::Unavailable(format!("auth token: {e}")))?;
                    *self
                        .token
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(t);
                    return Ok(());
                }
                Err(s) => {
                    if let Some(e) = misconfigured(&s, self.have_cert) {
                        return Err(e);
                    }
                    if !transient(&s) || Instant::now() > deadline {
                        return Err(self.fail("authenticate", &s));
                    }
                    let _ = self.current.compare_exchange(
                        i,
                        (i + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Compact the store's history up to now (an operator's task; the tests use it to send
    /// watchers down the full-reload path). Returns the revision compacted to.
    pub async fn compact_now(&self) -> Result<Revision> {
        let (_, revision) = self.snapshot("/attach-agent/v1/").await?;
        self.retry("compact", |m| {
            let mut kv = m.kv();
            async move {
                kv.compact(CompactionRequest {
                    revision,
                    physical: true,
                })
                .await
            }
            .boxed()
        })
        .await
        .map_err(|s| self.fail("compact", &s))?;
        Ok(revision)
    }

    /// The error of a call that failed for good (see [`failure`]). A plain client whose
    /// connections a member closes at once is most likely talking to a TLS member.
    fn fail(&self, what: &str, s: &Status) -> StoreError {
        let e = failure(what, s, self.have_cert);
        match e {
            StoreError::Unavailable(detail) if !self.tls && closed_by_member(s) => setting(
                STORE_SETTING,
                format!(
                    "{detail} (a member that speaks TLS needs an https:// store and --cluster-ca)"
                ),
            ),
            e => e,
        }
    }

    /// Put raw bytes under a raw key, on `lease` (0: none): what any other writer of the store
    /// can do, keys that are not UTF-8 included — the tests of what an agent believes use it
    /// to write what this agent never would.
    pub async fn put_bytes(&self, key: Vec<u8>, value: Vec<u8>, lease: LeaseId) -> Result<()> {
        let request = PutRequest {
            key,
            value,
            lease,
            ..Default::default()
        };
        self.retry("put", |m| {
            let mut kv = m.kv();
            let request = request.clone();
            async move { kv.put(request).await }.boxed()
        })
        .await
        .map_err(|s| self.fail("put", &s))?;
        Ok(())
    }

    /// Run `call` on the current member, moving on to the next while it fails transiently and
    /// `retry_for` has not passed. The error is the last one seen.
    async fn retry<T, F>(&self, what: &str, mut call: F) -> std::result::Result<T, Status>
    where
        F: FnMut(&Member) -> BoxFuture<'static, std::result::Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.retry_for;
        let mut pause = Duration::from_millis(20);
        let n = self.members.len();
        let mut tried = 0;
        let mut authenticated_again = false;
        // Members in a row that refused this host's settings (a certificate, say): one member
        // with a rotated certificate is moved past, every member refusing is the answer.
        let mut refusing = 0;
        // The most telling failure so far (see the end of the loop).
        let mut closed: Option<Status> = None;
        loop {
            let i = self.current.load(Ordering::Relaxed) % n;
            let member = &self.members[i];
            match call(member).await {
                Ok(v) => return Ok(v.into_inner()),
                Err(e) if misconfigured(&e, self.have_cert).is_some() => {
                    refusing += 1;
                    if refusing >= n {
                        return Err(e);
                    }
                    tracing::warn!(what, member = %member.name, error = %e, "cluster store member refused this host's settings; trying the next");
                    let _ = self.current.compare_exchange(
                        i,
                        (i + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                // The token expired (or the store was restarted): once more with a new one.
                Err(e)
                    if e.code() == Code::Unauthenticated
                        && self.user.is_some()
                        && !authenticated_again =>
                {
                    authenticated_again = true;
                    if let Err(err) = self.authenticate().await {
                        return Err(Status::unauthenticated(err.to_string()));
                    }
                }
                Err(e) if transient(&e) && Instant::now() + pause < deadline => {
                    tracing::debug!(what, member = %member.name, error = %e, "cluster store call failed; trying the next member");
                    if closed_by_member(&e) {
                        closed = Some(e);
                    }
                    // Move on, unless another call moved already.
                    let _ = self.current.compare_exchange(
                        i,
                        (i + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    tried += 1;
                    if tried % n == 0 {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(500));
                    }
                }
                // Of the failures, the one that says the most: a member closing the connection
                // at once (a plain client talking to a TLS member) rather than whatever the
                // last attempt happened to meet.
                Err(e) if transient(&e) && !closed_by_member(&e) => return Err(closed.unwrap_or(e)),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether a call failed because the member closed the connection at once.
fn closed_by_member(s: &Status) -> bool {
    let all = chain(s);
    all.contains("broken pipe") || all.contains("connection reset")
}

fn compare(c: &Cond) -> Compare {
    let version_zero = |key: &str, result: CompareResult, range_end: Vec<u8>| Compare {
        result: result as i32,
        target: CompareTarget::Version as i32,
        key: key.as_bytes().to_vec(),
        range_end,
        target_union: Some(TargetUnion::Version(0)),
    };
    match c {
        Cond::Absent(k) => version_zero(k, CompareResult::Equal, Vec::new()),
        Cond::Present(k) => version_zero(k, CompareResult::Greater, Vec::new()),
        // Over a range, etcd compares every key in it; an empty range compares as one key
        // of version 0.
        Cond::NoneUnder(p) => version_zero(p, CompareResult::Equal, prefix_end(p.as_bytes())),
        Cond::ValueIs(k, v) => Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: k.as_bytes().to_vec(),
            range_end: Vec::new(),
            target_union: Some(TargetUnion::Value(v.clone())),
        },
    }
}

fn operation(o: &Op) -> RequestOp {
    let request = match o {
        Op::Put { key, value, lease } => TxnRequestOp::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.clone(),
            lease: lease.unwrap_or(0),
            ..Default::default()
        }),
        Op::Delete(k) => TxnRequestOp::RequestDeleteRange(DeleteRangeRequest {
            key: k.as_bytes().to_vec(),
            ..Default::default()
        }),
        Op::DeleteUnder(p) => TxnRequestOp::RequestDeleteRange(DeleteRangeRequest {
            key: p.as_bytes().to_vec(),
            range_end: prefix_end(p.as_bytes()),
            ..Default::default()
        }),
    };
    RequestOp {
        request: Some(request),
    }
}

/// A key-value from etcd, or `None` (logged once, naming the key) for a key that is not UTF-8:
/// nothing this agent writes, so nothing it reads — skipping it keeps a snapshot loading and
/// a watch moving past it.
fn kv(k: KeyValue) -> Option<Kv> {
    match String::from_utf8(k.key) {
        Ok(key) => Some(Kv {
            key,
            value: k.value,
            lease: k.lease,
        }),
        Err(e) => {
            tracing::warn!(key = %e.as_bytes().escape_ascii(), "ignoring a cluster store key that is not UTF-8");
            None
        }
    }
}

/// How often a watch asks etcd how far it has got (a progress notification: every change up
/// to the store's revision then has been sent): what the revision-lag metric measures
/// against, on a store other prefixes write to as on one of its own.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// One watch response as a batch of changes: `None` for those that carry none and say
/// nothing (created), a batch without changes for a progress notification (the watch is
/// complete up to its header's revision), an error when the watch ended (compacted,
/// cancelled).
fn batch(resp: WatchResponse) -> Option<Result<Batch>> {
    if resp.compact_revision > 0 {
        return Some(Err(StoreError::Compacted(resp.compact_revision)));
    }
    if resp.canceled {
        return Some(Err(StoreError::Unavailable(format!(
            "watch cancelled: {}",
            resp.cancel_reason
        ))));
    }
    if resp.events.is_empty() {
        if resp.created {
            return None;
        }
        let revision = resp.header.map_or(0, |h| h.revision);
        return (revision > 0).then(|| {
            Ok(Batch {
                revision,
                changes: Vec::new(),
            })
        });
    }
    let mut changes = Vec::with_capacity(resp.events.len());
    let mut revision = 0;
    for ev in resp.events {
        let deleted = ev.r#type() == EventType::Delete;
        let Some(k) = ev.kv else { continue };
        revision = revision.max(k.mod_revision);
        let change = match kv(k) {
            Some(k) if deleted => Change::Delete(k.key),
            Some(k) => Change::Put(k),
            None => continue,
        };
        changes.push(change);
    }
    // A batch of skipped keys still moves the watch's revision on.
    Some(Ok(Batch { revision, changes }))
}

impl ClusterStore for EtcdStore {
    fn snapshot(&self, prefix: &str) -> BoxFuture<'_, Result<(Vec<Kv>, Revision)>> {
        let request = RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            ..Default::default()
        };
        async move {
            let resp = self
                .retry("get", |m| {
                    let mut kv = m.kv();
                    let request = request.clone();
                    async move { kv.range(request).await }.boxed()
                })
                .await
                .map_err(|s| self.fail("get", &s))?;
            let rev = resp.header.map(|h| h.revision).unwrap_or(0);
            let kvs = resp.kvs.into_iter().filter_map(kv).collect();
            Ok((kvs, rev))
        }
        .boxed()
    }

    fn txn(&self, when: Vec<Cond>, then: Vec<Op>) -> BoxFuture<'_, Result<bool>> {
        async move {
            let request = TxnRequest {
                compare: when.iter().map(compare).collect(),
                success: then.iter().map(operation).collect(),
                failure: Vec::new(),
            };
            let lease = then.iter().find_map(|o| match o {
                Op::Put { lease, .. } => *lease,
                _ => None,
            });
            match self
                .retry("txn", |m| {
                    let mut kv = m.kv();
                    let request = request.clone();
                    async move { kv.txn(request).await }.boxed()
                })
                .await
            {
                Ok(resp) => Ok(resp.succeeded),
                // A put on a lease that expired.
                Err(s) if lease_gone(&s) => {
                    Err(StoreError::LeaseExpired(lease.unwrap_or_default()))
                }
                Err(s) => Err(self.fail("txn", &s)),
            }
        }
        .boxed()
    }

    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId>> {
        async move {
            let ttl = ttl.as_secs().max(1) as i64;
            let resp = self
                .retry("lease grant", |m| {
                    let mut lease = m.lease();
                    async move { lease.lease_grant(LeaseGrantRequest { ttl, id: 0 }).await }.boxed()
                })
                .await
                .map_err(|s| self.fail("lease grant", &s))?;
            if resp.id == 0 {
                return Err(StoreError::Unavailable(format!(
                    "lease grant: {}",
                    resp.error
                )));
            }
            Ok(resp.id)
        }
        .boxed()
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<Revision>> {
        async move {
            // One renewal on a stream of its own: etcd answers each request on the stream, and
            // a lease that is gone with a TTL of 0.
            let resp = self
                .retry("lease keep-alive", |m| {
                    let mut client = m.lease();
                    async move {
                        let requests = futures::stream::iter([LeaseKeepAliveRequest { id: lease }]);
                        let mut replies = client.lease_keep_alive(requests).await?.into_inner();
                        match replies.message().await? {
                            Some(reply) => Ok(tonic::Response::new(reply)),
                            None => Err(Status::unavailable("keep-alive stream closed")),
                        }
                    }
                    .boxed()
                })
                .await;
            match resp {
                Ok(reply) if reply.ttl > 0 => Ok(reply.header.map_or(0, |h| h.revision)),
                Ok(_) => Err(StoreError::LeaseExpired(lease)),
                Err(s) if lease_gone(&s) => Err(StoreError::LeaseExpired(lease)),
                Err(s) => Err(self.fail("lease keep-alive", &s)),
            }
        }
        .boxed()
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<()>> {
        async move {
            let i = self.current.load(Ordering::Relaxed) % self.members.len();
            match self.members[i]
                .lease()
                .lease_revoke(LeaseRevokeRequest { id: lease })
                .await
            {
                Ok(_) => Ok(()),
                Err(s) if lease_gone(&s) => Ok(()),
                Err(s) => Err(self.fail("lease revoke", &s)),
            }
        }
        .boxed()
    }

    fn watch(
        &self,
        prefix: &str,
        from: Revision,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Result<Batch>>>> {
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix.as_bytes()),
                start_revision: from,
                ..Default::default()
            })),
        };
        async move {
            // The watch is created once its first reply arrives (so a member that cannot
            // serve it is skipped here, like any call); the request side stays open for as
            // long as the watch is read, as etcd expects of a watching client.
            let (first, rest) = self
                .retry("watch", |m| {
                    let mut client = m.watch();
                    let progress = WatchRequest {
                        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                    };
                    let asks = futures::stream::unfold(progress, |p| async move {
                        tokio::time::sleep(PROGRESS_EVERY).await;
                        Some((p.clone(), p))
                    });
                    let requests = futures::stream::iter([create.clone()]).chain(asks);
                    async move {
                        let mut replies = client.watch(requests).await?.into_inner();
                        match replies.message().await? {
                            Some(first) => Ok(tonic::Response::new((first, replies))),
                            None => Err(Status::unavailable("watch stream closed")),
                        }
                    }
                    .boxed()
                })
                .await
                .map_err(|s| self.fail("watch", &s))?;
            let replies = futures::stream::iter([Ok(first)]).chain(rest);
            let batches = replies
                .filter_map(|reply| async move {
                    match reply {
                        Ok(r) => batch(r),
                        Err(s) => Some(Err(unavailable("watch", &s))),
                    }
                })
                // A watch that failed is over: stop at its first error.
                .scan(false, |ended, item| {
                    let out = if *ended { None } else { Some(item) };
                    *ended = matches!(out, Some(Err(_)));
                    async move { out }
                });
            Ok(batches.boxed())
        }
        .boxed()
    }
}

#[cfg(test)]
mod unit {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
