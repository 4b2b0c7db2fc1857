//! Login to the web page: tokens, sessions and CSRF tokens.
//!
//! - `ferry web token` asks the agent over the local socket, which knows the caller's uid and
//!   gid (`SO_PEERCRED`), for a new token ([`Auth::new_token`]): 32 random bytes, shown once.
//!   The agent keeps only its SHA-256, one per uid (a new token replaces the user's previous
//!   one), in `$FERRY_STATE_DIR/web.redb`.
//! - Logging in with a token ([`Auth::login`]) compares its hash with every stored hash in
//!   constant time and makes a session: a random id in a cookie (HttpOnly, Secure,
//!   SameSite=Strict) and a random CSRF token that every form carries in a hidden field and
//!   every POST must give back ([`Session::csrf_ok`]). Sessions last [`SESSION_TTL`]; they
//!   are kept in the same store (by the hash of their id, with their CSRF token and end), so
//!   a restarted agent keeps its users logged in.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::transport::PeerCred;

const TOKENS: TableDefinition<u32, &[u8]> = TableDefinition::new("web_tokens");
/// SHA-256(session id) → [`StoredSession`] (JSON).
const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("web_sessions");

/// A session as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSession {
    uid: u32,
    gid: u32,
    csrf: String,
    expires_unix_ms: u64,
}

/// How long a session lasts after its login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The most sessions kept at once (the oldest go first).
const MAX_SESSIONS: usize = 1024;
/// The prefix of every token, so that one is recognised in a paste or a log.
const TOKEN_PREFIX: &str = "fwt_";

/// A stored token: the hash of the token and whose it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// SHA-256 of the token, hex.
    sha256: String,
    uid: u32,
    gid: u32,
    created_unix_ms: u64,
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Whom it acts for.
    pub user: PeerCred,
    /// The CSRF token its forms carry.
    pub csrf: String,
    expires: Instant,
    /// A message for the next page shown (what the last action did).
    flash: Option<String>,
}

impl Session {
    /// Whether `given` is this session's CSRF token (compared in constant time).
    pub fn csrf_ok(&self, given: &str) -> bool {
        ct_eq(self.csrf.as_bytes(), given.as_bytes())
    }
}

/// Why the token store failed.
#[derive(Debug, thiserror::Error)]
#[error("web token store {path}: {why}")]
pub struct AuthStoreError {
    /// The file.
    pub path: String,
    /// What failed.
    pub why: String,
}

/// Tokens (hashed) and sessions (by the hash of their id) of one agent, both persisted.
#[derive(Debug, Default)]
pub struct Auth {
    db: Option<Database>,
    tokens: Mutex<HashMap<u32, Stored>>,
    /// SHA-256(session id) → session.
    sessions: Mutex<HashMap<Vec<u8>, Session>>,
}

impl Auth {
    /// Opens (or creates) `web.redb` in `dir` and loads the token hashes.
    pub fn open(dir: &Path) -> Result<Self, AuthStoreError> {
        let path = dir.join("web.redb");
        let err = |why: String| AuthStoreError {
            path: path.display().to_string(),
            why,
        };
        let db = crate::node::db::open(&path).map_err(|e| err(e.to_string()))?;
        let mut tokens = HashMap::new();
        let mut sessions = HashMap::new();
        {
            let w = db.begin_write().map_err(|e| err(e.to_string()))?;
            w.open_table(TOKENS).map_err(|e| err(e.to_string()))?;
            w.open_table(SESSIONS).map_err(|e| err(e.to_string()))?;
            w.commit().map_err(|e| err(e.to_string()))?;
            let r = db.begin_read().map_err(|e| err(e.to_string()))?;
            let t = r.open_table(TOKENS).map_err(|e| err(e.to_string()))?;
            for item in t.iter().map_err(|e| err(e.to_string()))? {
                let (k, v) = item.map_err(|e| err(e.to_string()))?;
                match serde_json::from_slice::<Stored>(v.value()) {
                    Ok(s) => {
                        tokens.insert(k.value(), s);
                    }
                    Err(e) => tracing::warn!(uid = k.value(), %e, "unreadable web token entry"),
                }
            }
            // The sessions a previous run made that have not ended.
            let now_ms = crate::node::now_ms();
            let t = r.open_table(SESSIONS).map_err(|e| err(e.to_string()))?;
            for item in t.iter().map_err(|e| err(e.to_string()))? {
                let (k, v) = item.map_err(|e| err(e.to_string()))?;
                let Ok(st) = serde_json::from_slice::<StoredSession>(v.value()) else {
                    continue;
                };
                let left = st.expires_unix_ms.saturating_sub(now_ms);
                if left == 0 || left > SESSION_TTL.as_millis() as u64 {
                    continue;
                }
                sessions.insert(
                    k.value().to_vec(),
                    Session {
                        user: PeerCred {
                            uid: st.uid,
                            gid: st.gid,
                            pid: None,
                        },
                        csrf: st.csrf,
                        expires: Instant::now() + Duration::from_millis(left),
                        flash: None,
                    },
                );
            }
        }
        let auth = Self {
            db: Some(db),
            tokens: Mutex::new(tokens),
            sessions: Mutex::new(sessions),
        };
        // Those that ended go from the store.
        auth.store_sessions();
        Ok(auth)
    }

    /// Writes the live sessions into the store (replacing what it held).
    fn store_sessions(&self) {
        let Some(db) = &self.db else { return };
        let now = Instant::now();
        let now_ms = crate::node::now_ms();
        let live: Vec<(Vec<u8>, Vec<u8>)> = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, s)| s.expires > now)
            .filter_map(|(k, s)| {
                let st = StoredSession {
                    uid: s.user.uid,
                    gid: s.user.gid,
                    csrf: s.csrf.clone(),
                    expires_unix_ms: now_ms + (s.expires - now).as_millis() as u64,
                };
                Some((k.clone(), serde_json::to_vec(&st).ok()?))
            })
            .collect();
        let result = (|| -> Result<(), Box<dyn std::error::Error>> {
            let w = db.begin_write()?;
            {
                let mut t = w.open_table(SESSIONS)?;
                t.retain(|_, _| false)?;
                for (k, v) in &live {
                    t.insert(k.as_slice(), v.as_slice())?;
                }
            }
            w.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(%e, "cannot write the web sessions store");
        }
    }

    /// A new token for `user`, replacing its previous one (and ending the sessions logged in
    /// with it). Only its hash is kept.
    pub fn new_token(&self, user: PeerCred) -> Result<String, String> {
        let token = format!("{TOKEN_PREFIX}{}", random_hex(32)?);
        let stored = Stored {
            sha256: hex(digest(&SHA256, token.as_bytes()).as_ref()),
            uid: user.uid,
            gid: user.gid,
            created_unix_ms: crate::node::now_ms(),
        };
        if let Some(db) = &self.db {
            let value = serde_json::to_vec(&stored).map_err(|e| e.to_string())?;
            let w = db.begin_write().map_err(|e| e.to_string())?;
            {
                let mut t = w.open_table(TOKENS).map_err(|e| e.to_string())?;
                t.insert(user.uid, value.as_slice())
                    .map_err(|e| e.to_string())?;
            }
            w.commit().map_err(|e| e.to_string())?;
        }
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.uid, stored);
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, s| s.user.uid != user.uid);
        self.store_sessions();
        Ok(token)
    }

    /// The user `token` logs in as: its hash compared with every stored hash, each in
    /// constant time and none skipped, so the time taken tells nothing of the stored ones.
    fn user_of(&self, token: &str) -> Option<PeerCred> {
        let given = hex(digest(&SHA256, token.trim().as_bytes()).as_ref());
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        for s in tokens.values() {
            if ct_eq(s.sha256.as_bytes(), given.as_bytes()) {
                found = Some(PeerCred {
                    uid: s.uid,
                    gid: s.gid,
                    pid: None,
                });
            }
        }
        found
    }

    /// Logs in with `token`: the new session's id (for the cookie) and the session, or `None`
    /// for a token that is not (or no longer) valid.
    pub fn login(&self, token: &str) -> Option<(String, Session)> {
        let user = self.user_of(token)?;
        let id = random_hex(32).ok()?;
        let session = Session {
            user,
            csrf: random_hex(32).ok()?,
            expires: Instant::now() + SESSION_TTL,
            flash: None,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.expires > Instant::now());
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(session_key(&id), session.clone());
        drop(sessions);
        self.store_sessions();
        Some((id, session))
    }

    /// The live session whose id is `id`.
    pub fn session(&self, id: &str) -> Option<Session> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(&session_key(id))
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    /// Keeps `msg` for the next page session `id` is shown.
    pub fn set_flash(&self, id: &str, msg: String) {
        if let Some(s) = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&session_key(id))
        {
            s.flash = Some(msg);
        }
    }

    /// The message kept for session `id`, once.
    pub fn take_flash(&self, id: &str) -> Option<String> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&session_key(id))
            .and_then(|s| s.flash.take())
    }

    /// Ends the session whose id is `id`.
    pub fn logout(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&session_key(id));
        self.store_sessions();
    }
}

/// Sessions are found by the hash of their id, so that a lookup's timing says nothing of the
/// ids themselves.
fn session_key(id: &str) -> Vec<u8> {
    digest(&SHA256, id.as_bytes()).as_ref().to_vec()
}

fn random_hex(n: usize) -> Result<String, String> {
    let mut b = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| "the system's random generator failed".to_string())?;
    Ok(hex(&b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Equality of two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32) -> PeerCred {
        PeerCred {
            uid,
            gid: uid,
            pid: None,
        }
    }

    #[test]
    fn tokens_log_in_as_their_user_and_a_new_one_replaces_the_old() {
        let dir = std::env::temp_dir().join(format!("ferry-web-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let auth = Auth::open(&dir).unwrap();
        let t1 = auth.new_token(user(1000)).unwrap();
        let t2 = auth.new_token(user(0)).unwrap();
        assert!(t1.starts_with(TOKEN_PREFIX) && t1.len() == TOKEN_PREFIX.len() + 64);
        let (id, s) = auth.login(&t1).unwrap();
        assert_eq!(s.user.uid, 1000);
        assert_eq!(auth.session(&id).unwrap().user.uid, 1000);
        assert_eq!(auth.login(&t2).unwrap().1.user.uid, 0);
        assert!(auth.login("fwt_0000").is_none());
        assert!(auth.login("").is_none());
        // Only the hash is stored, and it survives a restart.
        drop(auth);
        let bytes = std::fs::read(dir.join("web.redb")).unwrap();
        assert!(!bytes.windows(t1.len()).any(|w| w == t1.as_bytes()));
        let auth = Auth::open(&dir).unwrap();
        assert_eq!(auth.login(&t1).unwrap().1.user.uid, 1000);
        // A new token ends the old one and its sessions.
        let (id, _) = auth.login(&t1).unwrap();
        let t3 = auth.new_token(user(1000)).unwrap();
        assert!(auth.login(&t1).is_none());
        assert!(auth.session(&id).is_none());
        let (id, s) = auth.login(&t3).unwrap();
        assert!(s.csrf_ok(&s.csrf.clone()));
        assert!(!s.csrf_ok(""));
        assert!(!s.csrf_ok(&s.csrf.replace(|_| true, "0")));
        // A session outlives a restart of the agent, with its CSRF token; not its logout.
        drop(auth);
        let auth = Auth::open(&dir).unwrap();
        let again = auth.session(&id).expect("the session after a restart");
        assert_eq!((again.user.uid, again.user.gid), (1000, 1000));
        assert!(again.csrf_ok(&s.csrf));
        let bytes = std::fs::read(dir.join("web.redb")).unwrap();
        assert!(
            !bytes.windows(id.len()).any(|w| w == id.as_bytes()),
            "the id itself is stored"
        );
        auth.logout(&id);
        assert!(auth.session(&id).is_none());
        drop(auth);
        let auth = Auth::open(&dir).unwrap();
        assert!(auth.session(&id).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }
}
