//! The web console's people: their accounts (email and password, argon2id), what they may do
//! (an instance role, and a role per app), their sessions (random tokens kept only as hashes,
//! each with a CSRF token derived from it) and the audit log of what they changed.
//!
//! The admin token only bootstraps: it creates the first owner, once. After that every person
//! logs in with their own account. Which route needs which role is the HTTP layer's table
//! (`cloudlet-server`'s console policy); this module says who somebody is and what roles they
//! hold.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloudlet_store::{
    AppName, AuditRow, ConsoleSessionRow, ConsoleStore, PersonRemoval, PersonRow, StoreError,
    SystemStore,
};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::access::{Access, Caller};
use crate::auth::{AuthError, policy};
use crate::clock::{Clock, Timestamp};
use crate::passwords;
use crate::random::Random;
use crate::secrets::{NewSecret, SecretHash};

/// How long a console session lasts, from its login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The most people an instance lists (and holds: adding more is refused).
pub const MAX_PEOPLE: usize = 1_000;
/// The most audit entries in one page.
pub const MAX_AUDIT_PAGE: usize = 200;
/// Old audit entries one delete forgets, and the deletes one sweep makes at most.
pub const AUDIT_SWEEP: usize = 10_000;
const AUDIT_SWEEPS: usize = 10;
/// Names are shown, not trusted: a bound keeps the tables small.
const MAX_NAME_CHARS: usize = 100;
/// Console passwords guard every app: the strength estimate must say "very unguessable".
const MIN_PASSWORD_SCORE: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("log in to the console first (no session, or it expired)")]
    LoginRequired,
    #[error("wrong email or password")]
    InvalidLogin,
    #[error("the console already has its first owner: log in")]
    AlreadySetUp,
    #[error("not the admin token")]
    InvalidAdminToken,
    #[error("your role does not allow this")]
    Forbidden,
    #[error("no such person")]
    PersonNotFound,
    #[error("no app named {0:?}")]
    AppNotFound(String),
    #[error("a person with that email exists")]
    PersonExists,
    #[error("the instance would be left without an owner")]
    LastOwner,
    #[error("{0}")]
    InvalidRole(String),
    #[error("{0}")]
    InvalidName(String),
    #[error(transparent)]
    Account(AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a person may do across the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum InstanceRole {
    /// Creates and deletes apps, manages people, and owns every app.
    Owner,
    /// Sees only the apps they have a role on.
    Member,
}

impl InstanceRole {
    pub fn parse(text: &str) -> Result<Self, ConsoleError> {
        match text {
            "owner" => Ok(InstanceRole::Owner),
            "member" => Ok(InstanceRole::Member),
            other => Err(ConsoleError::InvalidRole(format!(
                "{other:?} is not an instance role: owner or member"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceRole::Owner => "owner",
            InstanceRole::Member => "member",
        }
    }
}

/// What a person may do on one app; each role may do all its lesser roles may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AppRole {
    /// Reads the app's settings, schemas, records, functions and queues; no personal data.
    Viewer,
    /// Changes them, and reads the personal data (users, sessions, logs, payments).
    Developer,
    /// Also rotates the app's key, sets login and payment secrets, and gives roles on the app.
    Owner,
}

impl AppRole {
    pub fn parse(text: &str) -> Result<Self, ConsoleError> {
        match text {
            "owner" => Ok(AppRole::Owner),
            "developer" => Ok(AppRole::Developer),
            "viewer" => Ok(AppRole::Viewer),
            other => Err(ConsoleError::InvalidRole(format!(
                "{other:?} is not an app role: owner, developer or viewer"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AppRole::Owner => "owner",
            AppRole::Developer => "developer",
            AppRole::Viewer => "viewer",
        }
    }
}

/// A person as the console shows them (never their password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Person {
    pub id: String,
    pub email: String,
    pub name: String,
    pub instance_role: InstanceRole,
    pub created_at: Timestamp,
}

impl Person {
    fn of(row: &PersonRow) -> Result<Self, ConsoleError> {
        Ok(Person {
            id: row.id.clone(),
            email: row.email.clone(),
            name: row.name.clone(),
            instance_role: InstanceRole::parse(&row.instance_role)?,
            created_at: Timestamp::from_unix_ms(row.created_at_ms),
        })
    }
}

/// A person with their roles on apps, as the people page lists them.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PersonWithRoles {
    #[serde(flatten)]
    pub person: Person,
    pub apps: BTreeMap<String, AppRole>,
}

/// Somebody with a live console session: who, what they may do, and the session's tokens.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub person: Person,
    pub roles: BTreeMap<String, AppRole>,
    token_hash: SecretHash,
    csrf: String,
}

impl SignedIn {
    /// The token a write must carry in `x-cloudlet-csrf`.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether `given` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, given: &str) -> bool {
        self.csrf.as_bytes().ct_eq(given.as_bytes()).into()
    }

    pub fn is_instance_owner(&self) -> bool {
        self.person.instance_role == InstanceRole::Owner
    }

    /// The person's role on `app`: an instance owner owns every app.
    pub fn role_on(&self, app: &AppName) -> Option<AppRole> {
        if self.is_instance_owner() {
            return Some(AppRole::Owner);
        }
        self.roles.get(app.as_str()).copied()
    }

    /// Whether the person holds at least `needed` on `app`.
    pub fn may(&self, app: &AppName, needed: AppRole) -> bool {
        self.role_on(app).is_some_and(|role| role >= needed)
    }

    pub fn require_instance_owner(&self) -> Result<(), ConsoleError> {
        if self.is_instance_owner() {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden)
        }
    }
}

/// A new session: its token goes into the cookie, once.
pub struct NewSession {
    pub token: String,
    pub signed_in: SignedIn,
}

/// A person to add.
pub struct NewPerson {
    pub email: String,
    pub name: String,
    pub password: String,
    pub instance_role: String,
}

/// The console service. Cheap to clone.
#[derive(Clone)]
pub struct Console(Arc<Inner>);

struct Inner {
    store: Arc<dyn ConsoleStore>,
    system: Arc<dyn SystemStore>,
    access: Access,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    csrf_key: [u8; 32],
}

impl Console {
    /// `master_key` derives the key of the CSRF tokens, the same on every node.
    pub fn new(
        store: Arc<dyn ConsoleStore>,
        system: Arc<dyn SystemStore>,
        access: Access,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        master_key: &[u8; 32],
    ) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"cloudlet/console/csrf/v1");
        // Made now, so that the first login with an unknown email takes no longer than others.
        passwords::warm();
        Console(Arc::new(Inner {
            store,
            system,
            access,
            clock,
            random,
            csrf_key: mac.finalize().into_bytes().into(),
        }))
    }

    /// Whether nobody has a login yet (the first owner is still to be made).
    pub async fn setup_needed(&self) -> Result<bool, ConsoleError> {
        Ok(!self.0.store.has_people().await?)
    }

    /// Makes the first owner with the admin token, and logs them in. Only once.
    pub async fn set_up(
        &self,
        admin_token: &str,
        person: NewPerson,
    ) -> Result<NewSession, ConsoleError> {
        match self.0.access.authenticate(Some(admin_token)).await {
            Ok(Caller::Admin) => {}
            _ => return Err(ConsoleError::InvalidAdminToken),
        }
        let row = self
            .person_row(NewPerson {
                instance_role: "owner".into(),
                ..person
            })
            .await?;
        if !self.0.store.insert_first_person(row.clone()).await? {
            return Err(ConsoleError::AlreadySetUp);
        }
        self.audit(&row.email, None, "setup", 201).await;
        self.open_session(&row).await
    }

    /// Checks an email and password; a new session when they match.
    pub async fn log_in(&self, email: &str, password: &str) -> Result<NewSession, ConsoleError> {
        let email = policy::account_of(email);
        let row = self.0.store.person_by_email(&email).await?;
        // An unknown email costs a hash check too, so timing does not tell who has a login.
        let hash = row.as_ref().map(|r| r.password_hash.clone());
        let matches = passwords::matches(password.to_owned(), hash, passwords::CONSOLE)
            .await
            .map_err(|e| ConsoleError::Account(e.into()))?;
        match row {
            Some(row) if matches => {
                self.audit(&row.email, None, "login", 200).await;
                self.open_session(&row).await
            }
            _ => Err(ConsoleError::InvalidLogin),
        }
    }

    /// Ends a session.
    pub async fn log_out(&self, signed_in: &SignedIn) -> Result<(), ConsoleError> {
        self.0
            .store
            .delete_console_session(signed_in.token_hash.as_bytes())
            .await?;
        Ok(())
    }

    /// Who holds the session `token`, if it is live.
    pub async fn session(&self, token: &str) -> Result<SignedIn, ConsoleError> {
        let hash = SecretHash::of(token);
        let now = self.0.clock.now().unix_ms();
        let (_, row) = self
            .0
            .store
            .console_session(hash.as_bytes(), now)
            .await?
            .ok_or(ConsoleError::LoginRequired)?;
        self.signed_in(&row, hash, token).await
    }

    /// The apps `who` may see, with their role on each.
    pub async fn apps_of(
        &self,
        who: &SignedIn,
    ) -> Result<Vec<(cloudlet_store::AppRow, AppRole)>, ConsoleError> {
        if !who.is_instance_owner() {
            // A member's apps are their roles: read those, not every app of the instance.
            let mut apps = Vec::new();
            for (name, role) in &who.roles {
                let Ok(name) = AppName::parse(name) else {
                    continue;
                };
                if let Some(row) = self.0.system.app(&name).await? {
                    apps.push((row, *role));
                }
            }
            return Ok(apps);
        }
        let mut apps = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.0.system.list_apps(after.as_deref(), 500).await?;
            for row in page.items {
                let role = match AppName::parse(&row.name) {
                    Ok(name) => who.role_on(&name),
                    Err(_) => None,
                };
                if let Some(role) = role {
                    apps.push((row, role));
                }
            }
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(apps),
            }
        }
    }

    /// Everybody, with their roles (instance owners only).
    pub async fn people(&self, who: &SignedIn) -> Result<Vec<PersonWithRoles>, ConsoleError> {
        who.require_instance_owner()?;
        let mut roles: BTreeMap<String, BTreeMap<String, AppRole>> = BTreeMap::new();
        for row in self.0.store.roles(None).await? {
            roles
                .entry(row.person)
                .or_default()
                .insert(row.app, AppRole::parse(&row.role)?);
        }
        self.0
            .store
            .people(MAX_PEOPLE)
            .await?
            .iter()
            .map(|row| {
                Ok(PersonWithRoles {
                    person: Person::of(row)?,
                    apps: roles.remove(&row.id).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Adds a person (instance owners only).
    pub async fn add_person(
        &self,
        who: &SignedIn,
        person: NewPerson,
    ) -> Result<Person, ConsoleError> {
        who.require_instance_owner()?;
        InstanceRole::parse(&person.instance_role)?;
        if self.0.store.people(MAX_PEOPLE).await?.len() >= MAX_PEOPLE {
            return Err(ConsoleError::InvalidName(format!(
                "an instance holds at most {MAX_PEOPLE} people"
            )));
        }
        let row = self.person_row(person).await?;
        match self.0.store.insert_person(row.clone()).await {
            Err(StoreError::Conflict) => return Err(ConsoleError::PersonExists),
            other => other?,
        }
        self.audit(
            &who.person.email,
            None,
            &format!("add person {}", row.email),
            201,
        )
        .await;
        Person::of(&row)
    }

    /// Removes a person with their roles and sessions (instance owners only).
    pub async fn remove_person(&self, who: &SignedIn, id: &str) -> Result<(), ConsoleError> {
        who.require_instance_owner()?;
        let email = self
            .0
            .store
            .person(id)
            .await?
            .ok_or(ConsoleError::PersonNotFound)?
            .email;
        match self.0.store.delete_person(id).await? {
            PersonRemoval::Removed => {}
            PersonRemoval::NotFound => return Err(ConsoleError::PersonNotFound),
            PersonRemoval::LastOwner => return Err(ConsoleError::LastOwner),
        }
        self.audit(
            &who.person.email,
            None,
            &format!("remove person {email}"),
            204,
        )
        .await;
        Ok(())
    }

    /// Gives a person a role on an app, or takes it away: instance owners, and the app's owners.
    pub async fn set_role(
        &self,
        who: &SignedIn,
        person: &str,
        app: &AppName,
        role: Option<AppRole>,
    ) -> Result<(), ConsoleError> {
        if !who.may(app, AppRole::Owner) {
            return Err(ConsoleError::Forbidden);
        }
        let target = self
            .0
            .store
            .person(person)
            .await?
            .ok_or(ConsoleError::PersonNotFound)?;
        if !self
            .0
            .store
            .set_role(person, app, role.map(AppRole::as_str))
            .await?
        {
            // The person was there a moment ago: it is the app that is not.
            return Err(ConsoleError::AppNotFound(app.to_string()));
        }
        let action = match role {
            Some(role) => format!("give {} {} on {app}", target.email, role.as_str()),
            None => format!("take {}'s role on {app}", target.email),
        };
        self.audit(&who.person.email, Some(app), &action, 204).await;
        Ok(())
    }

    /// The audit log, newest first, and the `before` of the next page if there may be one: all
    /// of it for instance owners, an app's for its owners (only since the app was made: an
    /// older app of the same name is not theirs to read).
    pub async fn audit_log(
        &self,
        who: &SignedIn,
        app: Option<&AppName>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<AuditRow>, Option<i64>), ConsoleError> {
        let since_ms = match app {
            None if who.is_instance_owner() => i64::MIN,
            Some(_) if who.is_instance_owner() => i64::MIN,
            Some(app) if who.may(app, AppRole::Owner) => {
                self.0
                    .system
                    .app(app)
                    .await?
                    .ok_or_else(|| ConsoleError::AppNotFound(app.to_string()))?
                    .created_at_ms
            }
            _ => return Err(ConsoleError::Forbidden),
        };
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let mut rows = self.0.store.audit(app, before, limit).await?;
        let next = (rows.len() == limit)
            .then(|| rows.last().map(|r| r.seq))
            .flatten();
        let older = rows.iter().any(|r| r.at_ms < since_ms);
        rows.retain(|r| r.at_ms >= since_ms);
        Ok((rows, if older { None } else { next }))
    }

    /// Notes what a person did. An entry that cannot be written is logged, not fatal: the
    /// change itself has happened.
    pub async fn audit(&self, actor: &str, app: Option<&AppName>, action: &str, status: u16) {
        let row = AuditRow {
            seq: 0,
            at_ms: self.0.clock.now().unix_ms(),
            actor: actor.to_owned(),
            app: app.map(|a| a.as_str().to_owned()),
            action: action.chars().take(512).collect(),
            status: i64::from(status),
        };
        if let Err(e) = self.0.store.append_audit(row).await {
            tracing::error!(error = %e, actor, action, "could not write the console's audit log");
        }
    }

    /// Forgets expired sessions, and audit entries older than `keep_audit` (none: kept for
    /// ever), at most [`AUDIT_SWEEP`] of them at a time so that the system database is never
    /// held long; a sweep after a long while takes several.
    pub async fn sweep(&self, keep_audit: Option<Duration>) -> Result<u64, ConsoleError> {
        let now = self.0.clock.now().unix_ms();
        let mut forgotten = self.0.store.delete_expired_console_sessions(now).await?;
        if let Some(keep) = keep_audit {
            let before = now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
            let mut entries = 0;
            for _ in 0..AUDIT_SWEEPS {
                let gone = self
                    .0
                    .store
                    .delete_audit_before(before, AUDIT_SWEEP)
                    .await?;
                entries += gone;
                if gone < AUDIT_SWEEP as u64 {
                    break;
                }
            }
            if entries > 0 {
                // The log says what it forgot: a gap in it is never silent.
                let days = keep.as_secs() / 86_400;
                let what = format!("FORGET {entries} audit entries older than {days} days");
                self.audit("cloudlet", None, &what, 200).await;
            }
            forgotten += entries;
        }
        Ok(forgotten)
    }

    async fn person_row(&self, person: NewPerson) -> Result<PersonRow, ConsoleError> {
        let email = policy::normalize_email(&person.email).map_err(ConsoleError::Account)?;
        policy::check_password(&person.password, &email, MIN_PASSWORD_SCORE)
            .map_err(ConsoleError::Account)?;
        let name = person.name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            return Err(ConsoleError::InvalidName(format!(
                "a name is 1 to {MAX_NAME_CHARS} characters, without control characters"
            )));
        }
        let mut salt = [0u8; 16];
        self.0.random.fill(&mut salt);
        let password_hash = passwords::hash(person.password, salt, passwords::CONSOLE)
            .await
            .map_err(|e| ConsoleError::Account(e.into()))?;
        let mut id = [0u8; 12];
        self.0.random.fill(&mut id);
        Ok(PersonRow {
            id: format!("cp_{}", URL_SAFE_NO_PAD.encode(id)),
            email,
            name: name.to_owned(),
            password_hash,
            instance_role: person.instance_role,
            created_at_ms: self.0.clock.now().unix_ms(),
        })
    }

    async fn open_session(&self, row: &PersonRow) -> Result<NewSession, ConsoleError> {
        let secret = NewSecret::generate("ccs_", &*self.0.random);
        let now = self.0.clock.now().unix_ms();
        self.0
            .store
            .insert_console_session(ConsoleSessionRow {
                token_hash: secret.hash.as_bytes().to_vec(),
                person: row.id.clone(),
                created_at_ms: now,
                expires_at_ms: now.saturating_add(SESSION_TTL.as_millis() as i64),
            })
            .await?;
        let signed_in = self.signed_in(row, secret.hash, &secret.plain).await?;
        Ok(NewSession {
            token: secret.plain,
            signed_in,
        })
    }

    async fn signed_in(
        &self,
        row: &PersonRow,
        token_hash: SecretHash,
        token: &str,
    ) -> Result<SignedIn, ConsoleError> {
        let mut roles = BTreeMap::new();
        for role in self.0.store.roles(Some(&row.id)).await? {
            roles.insert(role.app, AppRole::parse(&role.role)?);
        }
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0.csrf_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(token.as_bytes());
        Ok(SignedIn {
            person: Person::of(row)?,
            roles,
            token_hash,
            csrf: URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_roles_are_ordered_and_parsed() {
        assert!(AppRole::Viewer < AppRole::Developer && AppRole::Developer < AppRole::Owner);
        for role in [AppRole::Viewer, AppRole::Developer, AppRole::Owner] {
            assert_eq!(AppRole::parse(role.as_str()).unwrap(), role);
        }
        assert!(matches!(
            AppRole::parse("Owner"),
            Err(ConsoleError::InvalidRole(_))
        ));
        assert!(InstanceRole::parse("admin").is_err());
    }

    fn signed_in(role: InstanceRole, roles: &[(&str, AppRole)]) -> SignedIn {
        SignedIn {
            person: Person {
                id: "cp_x".into(),
                email: "x@example.com".into(),
                name: "X".into(),
                instance_role: role,
                created_at: Timestamp::from_unix_ms(0),
            },
            roles: roles.iter().map(|(a, r)| ((*a).to_owned(), *r)).collect(),
            token_hash: SecretHash::of("t"),
            csrf: "abc".into(),
        }
    }

    #[test]
    fn a_role_allows_what_its_lesser_roles_allow_on_its_app_only() {
        let shop = AppName::parse("shop").unwrap();
        let blog = AppName::parse("blog").unwrap();
        let dev = signed_in(InstanceRole::Member, &[("shop", AppRole::Developer)]);
        assert!(dev.may(&shop, AppRole::Viewer));
        assert!(dev.may(&shop, AppRole::Developer));
        assert!(!dev.may(&shop, AppRole::Owner));
        assert!(!dev.may(&blog, AppRole::Viewer));
        assert!(dev.require_instance_owner().is_err());
        let owner = signed_in(InstanceRole::Owner, &[]);
        assert!(owner.may(&blog, AppRole::Owner));
        assert!(owner.require_instance_owner().is_ok());
    }

    #[test]
    fn csrf_tokens_compare_whole() {
        let who = signed_in(InstanceRole::Member, &[]);
        assert!(who.csrf_matches("abc"));
        assert!(!who.csrf_matches("ab"));
        assert!(!who.csrf_matches("abcd"));
        assert!(!who.csrf_matches(""));
    }
}
