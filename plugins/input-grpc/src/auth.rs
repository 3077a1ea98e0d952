//! Who sends a request, and what they may do: producer tokens, the client
//! certificate's name, and the kinds each producer may write and read.
//!
//! Every request is admitted here before it reaches a service (see
//! [`crate::connection`]), so a service added later is guarded without a
//! line of its own. Only `grpc.health.v1.Health` is open to all: Kubernetes
//! probes and load balancers call it without credentials, and it tells no
//! more than SERVING or NOT_SERVING. Server reflection needs credentials
//! like any service: it reveals the schema, and a producer that has a
//! token can pass it to `grpcurl` as easily as to its own client.
//!
//! With `auth.tokens_file`, a request must carry `authorization: Bearer
//! <token>`; the file lists `[[producers]]` with the SHA-256 of their token
//! (never the token), the kinds they may write (`kinds`, glob patterns,
//! default all) and read back through the event store (`read_kinds`,
//! default none). The presented token's hash is compared with every
//! producer's in constant time. Without a tokens file but with mutual TLS,
//! the verified client certificate's name is the producer, allowed every
//! kind. With neither, requests carry no producer and documents no `source`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use eventstash_plugin_api::LogThrottle;
use glob::Pattern;
use hyper::HeaderMap;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tonic::Status;
use tracing::warn;

use crate::error::GrpcInputError;

/// The service every caller may use without credentials.
const PUBLIC_PREFIX: &str = "/grpc.health.v1.Health/";

/// Event store rpcs that read events back: they need `read_kinds`.
const READ_PATHS: [&str; 2] = ["/hfx.v1.EventStore/Read", "/hfx.v1.EventStore/Replay"];

/// How often refused requests are logged at most.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// An authenticated producer, found in a request's extensions by every
/// service behind the input.
#[derive(Debug)]
pub(crate) struct Producer {
    /// The name written as each of its documents' `source`.
    name: String,
    /// The kinds it may send.
    kinds: Kinds,
    /// The kinds it may read back from the event store.
    read_kinds: Kinds,
}

impl Producer {
    /// A producer known by its client certificate alone: allowed everything.
    pub(crate) fn certified(name: String) -> Producer {
        Producer {
            name,
            kinds: Kinds::All,
            read_kinds: Kinds::All,
        }
    }

    /// The producer's name, recorded as its documents' `source`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether it may write events of `kind`.
    pub(crate) fn may_write(&self, kind: &str) -> bool {
        self.kinds.allows(kind)
    }

    /// Whether it may write every kind, so its streams need no holding back.
    pub(crate) fn writes_every_kind(&self) -> bool {
        matches!(self.kinds, Kinds::All)
    }

    /// Whether it may read events of `kind` from the event store.
    pub(crate) fn may_read(&self, kind: &str) -> bool {
        self.read_kinds.allows(kind)
    }

    /// Whether it may read anything at all.
    pub(crate) fn reads_anything(&self) -> bool {
        !matches!(&self.read_kinds, Kinds::Matching(patterns) if patterns.is_empty())
    }
}

/// The producer of a request, as the services find it.
pub(crate) fn producer_of<T>(request: &tonic::Request<T>) -> Option<&Arc<Producer>> {
    request.extensions().get::<Arc<Producer>>()
}

/// The status a stream gets for an event of a kind its producer may not write.
pub(crate) fn kind_denied(producer: &Producer, kind: &str) -> Status {
    Status::permission_denied(format!(
        "producer `{}` may not write events of kind `{}`: nothing of this stream was stored",
        truncate(producer.name(), 64),
        truncate(kind, 128),
    ))
}

/// The status a `Read` or `Replay` gets for events of a kind its producer
/// may not read.
pub(crate) fn read_denied(producer: &Producer, kind: &str) -> Status {
    Status::permission_denied(format!(
        "producer `{}` may not read events of kind `{}`",
        truncate(producer.name(), 64),
        truncate(kind, 128),
    ))
}

/// Kinds a producer may write or read.
#[derive(Debug, Clone)]
enum Kinds {
    /// Every kind (the pattern `*`).
    All,
    /// Kinds matching one of these patterns; none if empty.
    Matching(Vec<Pattern>),
}

impl Kinds {
    fn parse(patterns: &[String]) -> Result<Kinds, String> {
        if patterns.iter().any(|pattern| pattern == "*") {
            return Ok(Kinds::All);
        }
        patterns
            .iter()
            .map(|pattern| Pattern::new(pattern).map_err(|error| format!("pattern {pattern:?}: {error}")))
            .collect::<Result<_, _>>()
            .map(Kinds::Matching)
    }

    fn allows(&self, kind: &str) -> bool {
        match self {
            Kinds::All => true,
            Kinds::Matching(patterns) => patterns.iter().any(|pattern| pattern.matches(kind)),
        }
    }
}

/// Admits or refuses every request of one input.
pub(crate) struct Authenticator {
    /// The producers of `auth.tokens_file`; `None`: no tokens needed.
    tokens: Option<TokensFile>,
    /// Refusals are logged once per interval, with how many were not.
    refusal_log: LogThrottle,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hashes stay out of logs and `validate` output.
        f.debug_struct("Authenticator")
            .field("tokens_file", &self.tokens.as_ref().map(|tokens| &tokens.path))
            .finish()
    }
}

impl Authenticator {
    /// An authenticator for `tokens_file`, read now; none: no tokens needed.
    pub(crate) fn new(tokens_file: Option<PathBuf>) -> Result<Authenticator, GrpcInputError> {
        let tokens = match tokens_file {
            None => None,
            Some(path) => {
                let producers = read_tokens_file(&path)?;
                Some(TokensFile {
                    path,
                    producers: RwLock::new(producers),
                })
            }
        };
        Ok(Authenticator {
            tokens,
            refusal_log: LogThrottle::new(REFUSAL_LOG_INTERVAL),
        })
    }

    /// The tokens file, if there is one.
    pub(crate) fn tokens_file(&self) -> Option<&Path> {
        self.tokens.as_ref().map(|tokens| tokens.path.as_path())
    }

    /// How many producers the tokens file lists now.
    pub(crate) fn producer_count(&self) -> usize {
        self.tokens.as_ref().map_or(0, |tokens| tokens.current().len())
    }

    /// Reads the tokens file again; on error the producers stay as they were.
    pub(crate) fn reload(&self) -> Result<usize, GrpcInputError> {
        let Some(tokens) = &self.tokens else {
            return Ok(0);
        };
        let producers = read_tokens_file(&tokens.path)?;
        let count = producers.len();
        *tokens
            .producers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = producers;
        Ok(count)
    }

    /// Admits a request to `path`: its producer (`None` when the input asks
    /// for no credentials), or the status that refuses it. `certified` is
    /// the producer named by the connection's client certificate, if any.
    pub(crate) fn admit(
        &self,
        path: &str,
        headers: &HeaderMap,
        certified: Option<&Arc<Producer>>,
        peer: std::net::SocketAddr,
    ) -> Result<Option<Arc<Producer>>, Status> {
        if path.starts_with(PUBLIC_PREFIX) {
            return Ok(None);
        }
        let producer = match &self.tokens {
            Some(tokens) => Some(
                tokens
                    .find(headers)
                    .inspect_err(|status| self.log_refusal(peer, path, status))?,
            ),
            None => certified.cloned(),
        };
        if let Some(producer) = &producer
            && READ_PATHS.contains(&path)
            && !producer.reads_anything()
        {
            let status = Status::permission_denied(format!(
                "producer `{}` may not read events: its `read_kinds` is empty",
                truncate(producer.name(), 64)
            ));
            self.log_refusal(peer, path, &status);
            return Err(status);
        }
        Ok(producer)
    }

    fn log_refusal(&self, peer: std::net::SocketAddr, path: &str, status: &Status) {
        if let Some(suppressed) = self.refusal_log.allow() {
            let path = truncate(path, 128);
            warn!(%peer, path, code = ?status.code(), reason = status.message(), suppressed, "refused a gRPC request");
        }
    }
}

/// The tokens file and the producers last read from it.
struct TokensFile {
    path: PathBuf,
    producers: RwLock<Arc<[TokenEntry]>>,
}

/// One producer of the tokens file.
struct TokenEntry {
    /// SHA-256 of its token.
    token_sha256: [u8; 32],
    producer: Arc<Producer>,
}

impl TokensFile {
    fn current(&self) -> Arc<[TokenEntry]> {
        self.producers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The producer whose token the request carries.
    fn find(&self, headers: &HeaderMap) -> Result<Arc<Producer>, Status> {
        let token = bearer_token(headers).ok_or_else(|| {
            Status::unauthenticated(
                "this agent needs a producer token: send the header `authorization: Bearer <token>`",
            )
        })?;
        let presented: [u8; 32] = Sha256::digest(token).into();
        // Every entry is compared, so the time taken tells nothing of
        // which hash came closest or where the match is.
        let mut found = None;
        for entry in self.current().iter() {
            if bool::from(entry.token_sha256.ct_eq(&presented)) {
                found = Some(entry.producer.clone());
            }
        }
        found.ok_or_else(|| Status::unauthenticated("the producer token is not valid"))
    }
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(hyper::header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The hex SHA-256 of a token, as `token_sha256` holds it
/// (`eventstash token hash`).
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The `auth.tokens_file` format.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFileContent {
    #[serde(default)]
    producers: Vec<ProducerEntry>,
}

/// One `[[producers]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProducerEntry {
    /// Written as `source` on the producer's documents.
    name: String,
    /// Hex SHA-256 of the token (`eventstash token hash`).
    token_sha256: String,
    /// Glob patterns of the kinds it may write; default every kind.
    #[serde(default = "every_kind")]
    kinds: Vec<String>,
    /// Glob patterns of the kinds it may read back; default none.
    #[serde(default)]
    read_kinds: Vec<String>,
}

fn every_kind() -> Vec<String> {
    vec!["*".to_owned()]
}

fn read_tokens_file(path: &Path) -> Result<Arc<[TokenEntry]>, GrpcInputError> {
    let fail = |reason: String| GrpcInputError::TokensFile {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|error| fail(format!("cannot read it: {error}")))?;
    // The parser's message quotes the offending line, and a line of this
    // file may hold a hash; name the position only.
    let content: TokensFileContent = toml::from_str(&text).map_err(|error| {
        let place = error
            .span()
            .map(|span| format!(" at line {}", text[..span.start].lines().count().max(1)))
            .unwrap_or_default();
        fail(format!("not a valid tokens file{place}: {}", error.message()))
    })?;
    parse_producers(content.producers).map_err(fail)
}

fn parse_producers(entries: Vec<ProducerEntry>) -> Result<Arc<[TokenEntry]>, String> {
    let mut producers: Vec<TokenEntry> = Vec::with_capacity(entries.len());
    for (n, entry) in entries.into_iter().enumerate() {
        let at = format!("producers[{n}]");
        if entry.name.trim().is_empty() {
            return Err(format!("{at}: `name` must not be empty"));
        }
        let name = &entry.name;
        let mut token_sha256 = [0u8; 32];
        hex::decode_to_slice(entry.token_sha256.trim(), &mut token_sha256).map_err(|_| {
            format!("{at} ({name}): `token_sha256` must be 64 hex digits, the output of `eventstash token hash`")
        })?;
        let kinds = Kinds::parse(&entry.kinds).map_err(|error| format!("{at} ({name}): `kinds`: {error}"))?;
        let read_kinds =
            Kinds::parse(&entry.read_kinds).map_err(|error| format!("{at} ({name}): `read_kinds`: {error}"))?;
        if let Some(other) = producers.iter().find(|other| other.producer.name == *name) {
            return Err(format!("{at}: the name `{}` is listed twice", other.producer.name));
        }
        if let Some(other) = producers.iter().find(|other| other.token_sha256 == token_sha256) {
            return Err(format!(
                "{at} ({name}): the same token as `{}`: give every producer its own",
                other.producer.name
            ));
        }
        producers.push(TokenEntry {
            token_sha256,
            producer: Arc::new(Producer {
                name: entry.name,
                kinds,
                read_kinds,
            }),
        });
    }
    Ok(producers.into())
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max).rev().find(|&end| text.is_char_boundary(end)).unwrap_or(0);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tonic::Code;

    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    fn tokens_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn billing_and_audit() -> String {
        format!(
            "[[producers]]\nname = \"billing\"\ntoken_sha256 = \"{}\"\nkinds = [\"billing.*\"]\n\n\
             [[producers]]\nname = \"audit\"\ntoken_sha256 = \"{}\"\nread_kinds = [\"*\"]\n",
            token_sha256("billing-token"),
            token_sha256("audit-token"),
        )
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        headers
    }

    const STORE: &str = "/hfx.v1.EventStash/StoreEvent";

    #[test]
    fn the_hash_is_hex_sha256() {
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_right_token_names_its_producer_and_its_kinds() {
        let (_dir, path) = tokens_file(&billing_and_audit());
        let auth = Authenticator::new(Some(path)).unwrap();
        let producer = auth
            .admit(STORE, &bearer("billing-token"), None, peer())
            .unwrap()
            .unwrap();
        assert_eq!(producer.name(), "billing");
        assert!(producer.may_write("billing.Invoice"));
        assert!(!producer.may_write("audit.Entry"));
        assert!(!producer.writes_every_kind());
        let audit = auth
            .admit(STORE, &bearer("audit-token"), None, peer())
            .unwrap()
            .unwrap();
        assert!(audit.writes_every_kind(), "kinds default to all");
    }

    #[test]
    fn missing_and_wrong_tokens_are_unauthenticated() {
        let (_dir, path) = tokens_file(&billing_and_audit());
        let auth = Authenticator::new(Some(path)).unwrap();
        for headers in [HeaderMap::new(), bearer("nope"), bearer("")] {
            let status = auth.admit(STORE, &headers, None, peer()).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated);
        }
        let mut basic = HeaderMap::new();
        basic.insert("authorization", "Basic YmlsbGluZy10b2tlbg==".parse().unwrap());
        assert!(auth.admit(STORE, &basic, None, peer()).is_err());
    }

    #[test]
    fn health_is_open_and_reflection_is_not() {
        let (_dir, path) = tokens_file(&billing_and_audit());
        let auth = Authenticator::new(Some(path)).unwrap();
        let health = "/grpc.health.v1.Health/Check";
        assert!(auth.admit(health, &HeaderMap::new(), None, peer()).unwrap().is_none());
        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert!(auth.admit(reflection, &HeaderMap::new(), None, peer()).is_err());
    }

    #[test]
    fn reading_back_needs_read_kinds() {
        let (_dir, path) = tokens_file(&billing_and_audit());
        let auth = Authenticator::new(Some(path)).unwrap();
        let replay = "/hfx.v1.EventStore/Replay";
        let denied = auth.admit(replay, &bearer("billing-token"), None, peer()).unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        let audit = auth
            .admit(replay, &bearer("audit-token"), None, peer())
            .unwrap()
            .unwrap();
        assert!(audit.may_read("billing.Invoice"));
    }

    #[test]
    fn without_tokens_the_certificate_names_the_producer() {
        let auth = Authenticator::new(None).unwrap();
        let certified = Arc::new(Producer::certified("client-a".into()));
        let producer = auth.admit(STORE, &HeaderMap::new(), Some(&certified), peer()).unwrap();
        assert_eq!(producer.unwrap().name(), "client-a");
        assert!(auth.admit(STORE, &HeaderMap::new(), None, peer()).unwrap().is_none());
    }

    #[test]
    fn a_reload_that_fails_keeps_the_producers() {
        let (_dir, path) = tokens_file(&billing_and_audit());
        let auth = Authenticator::new(Some(path.clone())).unwrap();
        std::fs::write(&path, "[[producers]]\nname = \"x\"\ntoken_sha256 = \"zz\"\n").unwrap();
        assert!(auth.reload().is_err());
        assert!(auth.admit(STORE, &bearer("billing-token"), None, peer()).is_ok());
        let rotated = format!(
            "[[producers]]\nname = \"billing\"\ntoken_sha256 = \"{}\"\n",
            token_sha256("new")
        );
        std::fs::write(&path, rotated).unwrap();
        assert_eq!(auth.reload().unwrap(), 1);
        assert!(auth.admit(STORE, &bearer("billing-token"), None, peer()).is_err());
        assert!(auth.admit(STORE, &bearer("new"), None, peer()).is_ok());
    }

    #[test]
    fn file_errors_name_the_producer_and_key_but_never_quote_a_hash() {
        let hash = token_sha256("t");
        let cases = [
            (
                format!("[[producers]]\nname = \"a\"\ntoken_sha256 = \"{hash}x\"\n"),
                "producers[0] (a): `token_sha256` must be 64 hex digits",
            ),
            (
                format!("[[producers]]\nname = \"a\"\ntoken_sha256 = \"{hash}\"\nkinds = [\"[\"]\n"),
                "producers[0] (a): `kinds`: pattern \"[\"",
            ),
            (
                format!(
                    "[[producers]]\nname = \"a\"\ntoken_sha256 = \"{hash}\"\n[[producers]]\nname = \"b\"\ntoken_sha256 = \"{hash}\"\n"
                ),
                "the same token as `a`",
            ),
            (
                format!("[[producers]]\nname = \"a\"\ntoken = \"{hash}\"\n"),
                "unknown field `token`",
            ),
        ];
        for (text, expected) in cases {
            let (_dir, path) = tokens_file(&text);
            let message = Authenticator::new(Some(path)).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains(&hash), "{message}");
        }
    }
}
