//! Who is asking: a connection's or a REST call's user and how far the server trusts
//! it (a guest who named itself, a user whose token was verified, a server admin).

use bavard_protocol::User;

/// How the server knows a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Open mode without a token: the user named itself (`?name=`) or is a random guest.
    Guest,
    /// A verified token's `sub`.
    Signed,
    /// A server-wide moderator: a token with `role: admin`, the REST API key, or (no
    /// key configured) a REST call from this machine.
    Admin,
}

/// A user acting: what every permission check is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Who.
    pub user: User,
    /// How the server knows them.
    pub standing: Standing,
}

impl Actor {
    /// The REST API acting with the key (or from loopback when no key is configured).
    pub fn api() -> Self {
        Self { user: User { id: "api".to_owned(), name: "api".to_owned() }, standing: Standing::Admin }
    }

    /// Whether the actor is a server admin.
    pub fn is_admin(&self) -> bool {
        self.standing == Standing::Admin
    }

    /// The actor as permission checks see it.
    pub fn who(&self) -> Who<'_> {
        Who { id: &self.user.id, admin: self.is_admin() }
    }
}

/// Who asks, as the permission checks need it: borrowed, so checking a send on the hot
/// path copies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who<'a> {
    /// The user's id.
    pub id: &'a str,
    /// Whether the user is a server admin.
    pub admin: bool,
}

/// Who a connection is, as established at the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user.
    pub user: User,
    /// How the server knows it.
    pub standing: Standing,
    /// When its token expires (seconds since the Unix epoch); None without a token.
    pub expires: Option<u64>,
}

impl Identity {
    /// A guest of open mode.
    pub fn guest(user: User) -> Self {
        Self { user, standing: Standing::Guest, expires: None }
    }

    /// The connection's user as permission checks see it.
    pub fn who(&self) -> Who<'_> {
        Who { id: &self.user.id, admin: self.standing == Standing::Admin }
    }
}
