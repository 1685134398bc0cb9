//! Who is calling, and whether they may: bearer tokens with roles and an optional tenant
//! scope, the cluster secret, and anonymous access (docs/security.md).
//!
//! * A token is configured by its SHA-256 only; a request's token is hashed and looked up,
//!   so the node never holds a token it could leak.
//! * `ingest` may post events, `read` may read aggregates and SQL, `admin` may do all that
//!   `read` may (and, later, manage alert rules). A token scoped to a tenant posts and reads
//!   only that tenant's data, and may not use `/v1/sql`, which cannot be filtered.
//! * The cluster secret stays the credential of members and operators: `/raft`, cluster
//!   operations, and (like `read`) `/v1/cluster` and `/metrics`.
//! * Without tokens, a node serves everyone with every role only when allowed to
//!   (`allow_anonymous`, or no tokens and a loopback listener: the demo's zero setup).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::AppState;

/// A permission a token carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Ingest,
    Read,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Ingest, Role::Read, Role::Admin];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Role::Ingest => 1,
            Role::Read => 2,
            Role::Admin => 4,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: expected ingest, read or admin"))
    }
}

/// A set of roles.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    pub fn all() -> Self {
        Roles(Role::ALL.iter().map(|r| r.bit()).sum())
    }

    pub fn with(mut self, role: Role) -> Self {
        self.0 |= role.bit();
        self
    }

    /// Whether these roles grant `role`: `admin` grants everything `read` does.
    pub fn grant(&self, role: Role) -> bool {
        self.0 & role.bit() != 0 || (role == Role::Read && self.0 & Role::Admin.bit() != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        iter.into_iter().fold(Roles::default(), Roles::with)
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Role::ALL
            .iter()
            .filter(|r| self.0 & r.bit() != 0)
            .map(Role::as_str)
            .collect();
        write!(f, "{names:?}")
    }
}

/// One configured token: its name (for messages and logs), the SHA-256 of its value, its
/// roles and its tenant scope.
#[derive(Clone, Debug)]
pub struct Token {
    pub name: String,
    pub sha256: [u8; 32],
    pub roles: Roles,
    /// Only this tenant's events and rows; `None`: every tenant.
    pub tenant: Option<String>,
}

/// The node's access policy.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    pub tokens: Vec<Token>,
    /// Requests without a token get every role.
    pub anonymous: bool,
}

/// Who a request comes from, once its credentials were checked.
#[derive(Clone, Debug)]
pub enum Caller {
    /// No credentials, on a node that serves anonymous requests: every role, every tenant.
    Anonymous,
    /// The cluster secret: a member or an operator.
    Member,
    Token(Arc<Token>),
}

impl Caller {
    /// Whether this caller holds `role` (the cluster secret holds no data-plane role).
    pub fn may(&self, role: Role) -> bool {
        match self {
            Caller::Anonymous => true,
            Caller::Member => false,
            Caller::Token(t) => t.roles.grant(role),
        }
    }

    /// The one tenant this caller is confined to, if any.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Caller::Token(t) => t.tenant.as_deref(),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Caller::Anonymous => "an anonymous request".into(),
            Caller::Member => "the cluster secret".into(),
            Caller::Token(t) => format!("token {:?}", t.name),
        }
    }
}

/// What a route asks of its callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A token (or anonymous access) with this role.
    Role(Role),
    /// `read`, on every tenant: for `/v1/sql` and the state digest, which no tenant filter
    /// can confine.
    ReadAllTenants,
    /// `read`, or the cluster secret: status and metrics, which operators' tools and
    /// peers read.
    ReadOrSecret,
}

/// Checks credentials against the policy: tokens are hashed and looked up.
pub struct Authenticator {
    by_hash: HashMap<[u8; 32], Arc<Token>>,
    anonymous: bool,
    secret: Arc<str>,
}

impl Authenticator {
    pub fn new(config: &AuthConfig, secret: Arc<str>) -> Self {
        Authenticator {
            by_hash: config
                .tokens
                .iter()
                .map(|t| (t.sha256, Arc::new(t.clone())))
                .collect(),
            anonymous: config.anonymous,
            secret,
        }
    }

    /// Who sent `headers`. A bearer credential (a token, or the cluster secret) comes first,
    /// then `x-tally-secret`. An unknown token is refused even where anonymous requests are
    /// served, so that a mistyped token shows up at once instead of passing unseen.
    pub fn identify(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let Some(given) = value.as_bytes().strip_prefix(b"Bearer ") else {
                return Err(unauthorized(
                    "the Authorization header must be `Bearer <token>`",
                ));
            };
            let given = given.trim_ascii();
            let hash: [u8; 32] = Sha256::digest(given).into();
            if let Some(token) = self.by_hash.get(&hash) {
                return Ok(Caller::Token(token.clone()));
            }
            if tally_raft::rpc::secret_matches(&self.secret, given) {
                return Ok(Caller::Member);
            }
            return Err(unauthorized(
                "unknown token: it matches none of this node's [auth] tokens",
            ));
        }
        if let Some(given) = headers.get(tally_raft::rpc::SECRET_HEADER) {
            return if tally_raft::rpc::secret_matches(&self.secret, given.as_bytes()) {
                Ok(Caller::Member)
            } else {
                Err(unauthorized(
                    "the cluster secret in x-tally-secret is wrong",
                ))
            };
        }
        if self.anonymous {
            Ok(Caller::Anonymous)
        } else {
            Err(unauthorized(
                "this node needs a token: send `Authorization: Bearer <token>` (the CLI reads \
                 --token or TALLY_TOKEN; `tally token new` makes one)",
            ))
        }
    }

    /// Whether `caller` may use a route that asks for `access`; the 403 says what is missing.
    pub fn permit(caller: &Caller, access: Access, what: &str) -> Result<(), ApiError> {
        let ok = match access {
            Access::Role(role) => caller.may(role),
            Access::ReadAllTenants => {
                if caller.may(Role::Read) && caller.tenant().is_some() {
                    return Err(forbidden(format!(
                        "{} is confined to tenant {:?}; {what} reads every tenant's records \
                         and needs a read token without a tenant",
                        caller.describe(),
                        caller.tenant().unwrap_or_default()
                    )));
                }
                caller.may(Role::Read)
            }
            Access::ReadOrSecret => matches!(caller, Caller::Member) || caller.may(Role::Read),
        };
        if ok {
            return Ok(());
        }
        let needed = match access {
            Access::Role(role) => format!("the {role} role"),
            Access::ReadAllTenants => "the read role".into(),
            Access::ReadOrSecret => "the read role or the cluster secret".into(),
        };
        Err(forbidden(format!(
            "{} lacks {needed}, which {what} needs",
            caller.describe()
        )))
    }
}

fn unauthorized(message: &str) -> ApiError {
    let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
    e.www_authenticate = true;
    e
}

pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// Middleware: identifies the caller, checks it against `access`, and hands the
/// [`Caller`] to the handler as a request extension.
pub async fn guard(
    State((app, access)): State<(AppState, Access)>,
    mut request: Request,
    next: Next,
) -> Response {
    let what = format!("{} {}", request.method(), request.uri().path());
    let checked = app
        .auth
        .identify(request.headers())
        .and_then(|caller| Authenticator::permit(&caller, access, &what).map(|()| caller));
    match checked {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// Middleware: only the cluster secret passes (cluster operations, like Raft RPC: anyone
/// who could add a member could have the leader stream every event to it).
pub async fn require_secret(State(app): State<AppState>, request: Request, next: Next) -> Response {
    // The same reading of credentials as every other route: only the secret passes here.
    match app.auth.identify(request.headers()) {
        Ok(Caller::Member) => next.run(request).await,
        _ => unauthorized(
            "cluster operations need the cluster secret: send it as `x-tally-secret` or \
             `Authorization: Bearer …` (the CLI reads --secret or TALLY_CLUSTER_SECRET)",
        )
        .into_response(),
    }
}

/// A fresh random token (256 bits, URL-safe text) and its SHA-256 in hex.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let token = format!("tly_{}", hex::encode(bytes));
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    (token, hash)
}

/// Parses a token's configured SHA-256 (64 hex digits).
pub fn parse_sha256(hex_digest: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(hex_digest.trim())
        .map_err(|e| format!("sha256 {hex_digest:?} is not hex: {e}"))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        format!(
            "sha256 {hex_digest:?} has {} bytes; a SHA-256 has 32 (64 hex digits)",
            b.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn token(name: &str, value: &str, roles: &[Role], tenant: Option<&str>) -> Token {
        Token {
            name: name.into(),
            sha256: Sha256::digest(value.as_bytes()).into(),
            roles: roles.iter().copied().collect(),
            tenant: tenant.map(Into::into),
        }
    }

    fn auth(anonymous: bool) -> Authenticator {
        Authenticator::new(
            &AuthConfig {
                tokens: vec![
                    token("gw", "t-ingest", &[Role::Ingest], None),
                    token("acme-ro", "t-acme", &[Role::Read], Some("acme.com")),
                    token("ops", "t-admin", &[Role::Admin], None),
                ],
                anonymous,
            },
            "s3cret".into(),
        )
    }

    fn bearer(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {value}")).unwrap(),
        );
        h
    }

    #[test]
    fn tokens_are_found_by_hash_and_unknown_ones_refused_even_for_anonymous_nodes() {
        for anonymous in [false, true] {
            let a = auth(anonymous);
            match a.identify(&bearer("t-ingest")).unwrap() {
                Caller::Token(t) => assert_eq!(t.name, "gw"),
                other => panic!("{other:?}"),
            }
            let e = a.identify(&bearer("t-nope")).unwrap_err();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED);
            assert!(e.message.contains("unknown token"), "{}", e.message);
            assert!(matches!(
                a.identify(&bearer("s3cret")).unwrap(),
                Caller::Member
            ));
        }
        assert!(matches!(
            auth(true).identify(&HeaderMap::new()).unwrap(),
            Caller::Anonymous
        ));
        let e = auth(false).identify(&HeaderMap::new()).unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert!(e.message.contains("Bearer"), "{}", e.message);
        let mut basic = HeaderMap::new();
        basic.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eDp5"),
        );
        assert_eq!(
            auth(true).identify(&basic).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        let mut wrong_secret = HeaderMap::new();
        wrong_secret.insert("x-tally-secret", HeaderValue::from_static("guess"));
        assert_eq!(
            auth(true).identify(&wrong_secret).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn the_role_matrix() {
        let a = auth(false);
        let caller = |v: &str| a.identify(&bearer(v)).unwrap();
        let allowed = |c: &Caller, access| Authenticator::permit(c, access, "it").is_ok();
        let ingest = caller("t-ingest");
        let scoped_read = caller("t-acme");
        let admin = caller("t-admin");
        let member = caller("s3cret");
        let anonymous = Caller::Anonymous;

        assert!(allowed(&ingest, Access::Role(Role::Ingest)));
        assert!(!allowed(&ingest, Access::Role(Role::Read)));
        assert!(!allowed(&ingest, Access::ReadOrSecret));
        assert!(!allowed(&ingest, Access::ReadAllTenants));

        assert!(allowed(&scoped_read, Access::Role(Role::Read)));
        assert!(allowed(&scoped_read, Access::ReadOrSecret));
        assert!(!allowed(&scoped_read, Access::Role(Role::Ingest)));
        let e = Authenticator::permit(&scoped_read, Access::ReadAllTenants, "POST /v1/sql")
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(e.message.contains("acme.com"), "{}", e.message);

        // admin grants read, not ingest.
        assert!(allowed(&admin, Access::Role(Role::Admin)));
        assert!(allowed(&admin, Access::Role(Role::Read)));
        assert!(allowed(&admin, Access::ReadAllTenants));
        assert!(!allowed(&admin, Access::Role(Role::Ingest)));

        assert!(allowed(&member, Access::ReadOrSecret));
        assert!(!allowed(&member, Access::Role(Role::Read)));
        assert!(!allowed(&member, Access::Role(Role::Ingest)));

        for access in [
            Access::Role(Role::Ingest),
            Access::Role(Role::Read),
            Access::Role(Role::Admin),
            Access::ReadAllTenants,
            Access::ReadOrSecret,
        ] {
            assert!(allowed(&anonymous, access), "{access:?}");
        }
        let e = Authenticator::permit(&ingest, Access::Role(Role::Read), "GET /v1/aggregates")
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(
            e.message.contains("\"gw\"") && e.message.contains("read role"),
            "{}",
            e.message
        );
    }

    #[test]
    fn new_tokens_are_random_and_hash_as_configured() {
        let (t1, h1) = new_token();
        let (t2, _) = new_token();
        assert_ne!(t1, t2);
        assert!(t1.starts_with("tly_") && t1.len() == 68, "{t1}");
        assert_eq!(
            parse_sha256(&h1).unwrap(),
            <[u8; 32]>::from(Sha256::digest(t1))
        );
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"0".repeat(62))
            .unwrap_err()
            .contains("31 bytes"));
        assert!("ingest".parse::<Role>().is_ok());
        assert!("root"
            .parse::<Role>()
            .unwrap_err()
            .contains("ingest, read or admin"));
    }
}
