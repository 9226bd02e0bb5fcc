//! Password hashing: argon2id with configurable (OWASP) parameters; bcrypt
//! hashes imported from Supabase still verify and are replaced by argon2id
//! at the next sign-in. Hashing is CPU work: callers run it on the blocking
//! pool (`tokio::task::spawn_blocking`), never on the async runtime.
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::config::Auth;

#[derive(Clone)]
pub struct Hasher {
    params: Params,
    /// One hash per CPU at a time: argon2id is memory-hard, and more hashes
    /// than cores only thrash caches and memory bandwidth (measured: sign-ins
    /// at 0.75 of the raw hash rate with 8 at once on 2 cores).
    slots: std::sync::Arc<tokio::sync::Semaphore>,
}

/// What checking a password found.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Wrong,
    Right,
    /// Right, but stored with bcrypt or other argon2 parameters: store this instead.
    RightRehashed(String),
}

impl Hasher {
    pub fn new(config: &Auth) -> Result<Hasher, String> {
        let params = Params::new(config.argon2_memory_kib, config.argon2_iterations, config.argon2_parallelism, None)
            .map_err(|e| format!("auth.argon2_*: {e}"))?;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Ok(Hasher { params, slots: std::sync::Arc::new(tokio::sync::Semaphore::new(cores)) })
    }

    /// Runs `work` on the blocking pool once a hashing slot is free.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce(&Hasher) -> T + Send + 'static) -> Option<T> {
        let _slot = self.slots.acquire().await.ok()?;
        let hasher = self.clone();
        tokio::task::spawn_blocking(move || work(&hasher)).await.ok()
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    pub fn hash(&self, password: &str) -> String {
        let salt = SaltString::generate(&mut OsRng);
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .expect("argon2 with validated parameters and a fresh salt does not fail")
            .to_string()
    }

    /// Checks `password` against a stored hash (argon2id or bcrypt). With no
    /// stored hash (no such user), a hash is still computed, so the answer
    /// takes as long either way.
    pub fn verify(&self, password: &str, stored: Option<&str>) -> Verdict {
        let Some(stored) = stored.filter(|s| !s.is_empty()) else {
            let _ = self.hash(password);
            return Verdict::Wrong;
        };
        if stored.starts_with("$2") {
            return match bcrypt::verify(password, stored) {
                Ok(true) => Verdict::RightRehashed(self.hash(password)),
                _ => Verdict::Wrong,
            };
        }
        let Ok(parsed) = PasswordHash::new(stored) else {
            let _ = self.hash(password);
            return Verdict::Wrong;
        };
        if self.argon2().verify_password(password.as_bytes(), &parsed).is_err() {
            return Verdict::Wrong;
        }
        let current = Params::try_from(&parsed).ok();
        let same = parsed.algorithm.as_str() == "argon2id"
            && current.is_some_and(|p| {
                p.m_cost() == self.params.m_cost()
                    && p.t_cost() == self.params.t_cost()
                    && p.p_cost() == self.params.p_cost()
            });
        if same {
            Verdict::Right
        } else {
            Verdict::RightRehashed(self.hash(password))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(memory: u32) -> Hasher {
        Hasher::new(&Auth { argon2_memory_kib: memory, argon2_iterations: 1, ..Auth::default() }).unwrap()
    }

    #[test]
    fn argon2id_round_trip_and_rehash_on_new_parameters() {
        let h = hasher(64);
        let stored = h.hash("correct horse");
        assert!(stored.starts_with("$argon2id$"));
        assert_eq!(h.verify("correct horse", Some(&stored)), Verdict::Right);
        assert_eq!(h.verify("wrong", Some(&stored)), Verdict::Wrong);
        assert!(matches!(hasher(128).verify("correct horse", Some(&stored)), Verdict::RightRehashed(_)));
        assert_eq!(h.verify("x", None), Verdict::Wrong);
        assert_eq!(h.verify("x", Some("not a hash")), Verdict::Wrong);
    }

    #[test]
    fn supabase_bcrypt_hashes_verify_and_move_to_argon2id() {
        let bcrypt_hash = bcrypt::hash("hunter22", 4).unwrap();
        let Verdict::RightRehashed(new) = hasher(64).verify("hunter22", Some(&bcrypt_hash)) else { panic!() };
        assert!(new.starts_with("$argon2id$"));
        assert_eq!(hasher(64).verify("hunter2", Some(&bcrypt_hash)), Verdict::Wrong);
    }
}
