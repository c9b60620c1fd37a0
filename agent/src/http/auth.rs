//! Basic authentication against the bcrypt hashes of `basic_auth_users`.
//!
//! bcrypt is slow on purpose (cost 10 is tens of milliseconds, see
//! `benches/web_auth.rs`), and Prometheus sends the same credentials on every
//! scrape, so a successful check is remembered, as exporter-toolkit does. The cache
//! holds a SHA-256 digest of (user, hash, password), never the password, compared in
//! constant time; a changed hash or password misses it. Failures are not cached,
//! and one bcrypt runs at a time so a flood of wrong passwords costs one core at most.

use base64::Engine;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// Remembered successes per user: a password rotation keeps the old and the new
/// one working side by side for a while, without letting the cache grow.
const REMEMBERED_PER_USER: usize = 4;

/// The user and password of an `Authorization: Basic` header.
pub fn credentials(header: &[u8]) -> Option<(String, String)> {
    let (scheme, rest) = std::str::from_utf8(header).ok()?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[derive(Default)]
pub struct PasswordChecker {
    remembered: Mutex<HashMap<String, VecDeque<[u8; 32]>>>,
    bcrypt_turn: OnceLock<Semaphore>,
}

impl PasswordChecker {
    /// Whether `password` is `user`'s in `users`.
    pub async fn check(
        &self,
        users: &BTreeMap<String, String>,
        user: &str,
        password: &str,
    ) -> bool {
        let known = users.get(user).cloned();
        let key = known.as_deref().map(|hash| cache_key(user, hash, password));
        if let Some(key) = &key {
            if self.remembers(user, key) {
                return true;
            }
        }
        let turn = self.bcrypt_turn.get_or_init(|| Semaphore::new(1));
        let Ok(_turn) = turn.acquire().await else {
            return false;
        };
        let password = password.to_string();
        let hash = known;
        let ok = tokio::task::spawn_blocking(move || {
            // An unknown user costs a bcrypt too, so timing does not tell users apart.
            let verified =
                bcrypt::verify(password, hash.as_deref().unwrap_or_else(|| decoy_hash()));
            hash.is_some() && verified.unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if let (true, Some(key)) = (ok, key) {
            self.remember(user, key);
        }
        ok
    }

    fn remembers(&self, user: &str, key: &[u8; 32]) -> bool {
        let remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        remembered.get(user).is_some_and(|keys| {
            // Every entry is compared, in constant time, whatever matches.
            keys.iter()
                .fold(subtle::Choice::from(0), |hit, k| hit | k.ct_eq(key))
                .into()
        })
    }

    fn remember(&self, user: &str, key: [u8; 32]) {
        let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        let keys = remembered.entry(user.to_string()).or_default();
        if keys.len() >= REMEMBERED_PER_USER {
            keys.pop_front();
        }
        keys.push_back(key);
    }

    /// Forgets users no longer configured (after a reload).
    pub fn retain_users(&self, users: &BTreeMap<String, String>) {
        self.remembered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|u, _| users.contains_key(u));
    }
}

fn cache_key(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
    for part in [user, hash, password] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// A hash of a random password at the usual cost, checked against for unknown users.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut random = [0u8; 16];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
        bcrypt::hash(random, 10).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_decoded() {
        assert_eq!(
            credentials(b"Basic cHJvbWV0aGV1czpzM2NyM3Q6Og=="),
            Some(("prometheus".into(), "s3cr3t::".into()))
        );
        assert_eq!(credentials(b"Bearer abc"), None);
        assert_eq!(credentials(b"Basic !!!"), None);
        assert_eq!(credentials(b"Basic bm9jb2xvbg=="), None, "no colon");
    }

    #[tokio::test]
    async fn right_wrong_unknown_and_rotated() {
        let checker = PasswordChecker::default();
        let mut users = BTreeMap::new();
        users.insert("prom".to_string(), bcrypt::hash("right", 4).unwrap());
        assert!(checker.check(&users, "prom", "right").await);
        assert!(
            checker.check(&users, "prom", "right").await,
            "from the cache"
        );
        assert!(!checker.check(&users, "prom", "wrong").await);
        assert!(!checker.check(&users, "nobody", "right").await);
        // A new hash for the user: the remembered success no longer applies.
        users.insert("prom".to_string(), bcrypt::hash("next", 4).unwrap());
        assert!(!checker.check(&users, "prom", "right").await);
        assert!(checker.check(&users, "prom", "next").await);
        users.remove("prom");
        checker.retain_users(&users);
        assert!(!checker.check(&users, "prom", "next").await);
    }
}
