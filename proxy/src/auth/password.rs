//! Password hashing: argon2id with configurable (OWASP) parameters; bcrypt
//! hashes imported from Supabase still verify and are replaced by argon2id
//! at the next sign-in. Hashing is CPU work: the proxy runs it on its own
//! threads, one per CPU ([`Hasher::run`]), never on the async runtime.
use std::cell::RefCell;
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::config::Auth;

type Job = Box<dyn FnOnce(&Hasher) + Send>;

#[derive(Clone)]
pub struct Hasher {
    params: Params,
    /// The hashing threads' queue, started on the first [`Hasher::run`].
    /// One thread per CPU: argon2id is memory-hard, and more hashes than
    /// cores only thrash caches and memory bandwidth (measured: sign-ins at
    /// 0.75 of the raw hash rate with 8 at once on 2 cores).
    queue: Arc<OnceLock<mpsc::Sender<Job>>>,
}

thread_local! {
    /// argon2's working memory (`m` KiB), kept by each thread that hashes:
    /// allocating and zeroing 19 MiB for every hash cost a tenth of a
    /// sign-in's CPU. Every block is written before it is read, so the
    /// previous hash's contents do not matter. Backed by huge pages where
    /// the kernel allows (`fluxbase_sys::advise_huge_pages`).
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
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
        Ok(Hasher { params, queue: Arc::default() })
    }

    /// Runs `work` on a hashing thread, in turn with other hashes.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce(&Hasher) -> T + Send + 'static) -> Option<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |hasher| {
            let _ = done.send(work(hasher));
        });
        self.queue.get_or_init(|| self.start()).send(job).ok()?;
        result.await.ok()
    }

    fn start(&self) -> mpsc::Sender<Job> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) {
            // The threads' own Hasher has no queue: it must not keep this one open.
            let (jobs, hasher) = (jobs.clone(), Hasher { params: self.params.clone(), queue: Arc::default() });
            std::thread::Builder::new()
                .name(format!("fluxbase-hash-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting, never while hashing.
                    let job = match jobs.lock() {
                        Ok(jobs) => jobs.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(&hasher),
                        Err(_) => return, // every Hasher is gone
                    }
                })
                .expect("spawning a hashing thread");
        }
        queue
    }

    /// A new argon2id hash of `password` in PHC string form.
    pub fn hash(&self, password: &str) -> String {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone());
        let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
            argon2_into(&argon2, password.as_bytes(), &salt, out).map_err(Into::into)
        });
        PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).expect("validated argon2 parameters"),
            salt: Some(SaltString::encode_b64(&salt).expect("16 salt bytes").as_salt()),
            hash: Some(output.expect("argon2 with validated parameters and a 16-byte salt does not fail")),
        }
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
        let Some((right, same)) = verify_argon2(password, stored, &self.params) else {
            let _ = self.hash(password);
            return Verdict::Wrong;
        };
        match (right, same) {
            (false, _) => Verdict::Wrong,
            (true, true) => Verdict::Right,
            (true, false) => Verdict::RightRehashed(self.hash(password)),
        }
    }
}

/// argon2 with this thread's kept memory.
fn argon2_into(argon2: &Argon2<'_>, password: &[u8], salt: &[u8], out: &mut [u8]) -> argon2::Result<()> {
    MEMORY.with_borrow_mut(|memory| {
        let blocks = argon2.params().block_count();
        if memory.len() < blocks {
            // Huge pages before the first touch: argon2 reads its blocks
            // at random, and with 4 KiB pages nearly every read misses the
            // TLB (15% more CPU per hash where THP is `madvise`).
            memory.reserve_exact(blocks - memory.len());
            fluxbase_sys::advise_huge_pages(memory.spare_capacity_mut());
            memory.resize(blocks, Block::default());
        }
        argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
    })
}

/// Whether `password` matches a stored argon2 PHC string, and whether that
/// was stored as argon2id with `current` parameters; None when it is no
/// argon2 hash.
fn verify_argon2(password: &str, stored: &str, current: &Params) -> Option<(bool, bool)> {
    let parsed = PasswordHash::new(stored).ok()?;
    let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
    let version = parsed.version.map(Version::try_from).transpose().ok()?.unwrap_or_default();
    let params = Params::try_from(&parsed).ok()?;
    let expected = parsed.hash?;
    let mut salt = [0u8; 64];
    let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let output = Output::init_with(expected.len(), |out| {
        argon2_into(&argon2, password.as_bytes(), salt, out).map_err(Into::into)
    })
    .ok()?;
    let same = algorithm == Algorithm::Argon2id
        && version == Version::V0x13
        && (params.m_cost(), params.t_cost(), params.p_cost())
            == (current.m_cost(), current.t_cost(), current.p_cost());
    // Output's equality is constant-time.
    Some((output == expected, same))
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
    fn phc_strings_agree_with_the_argon2_crate_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let h = hasher(64);
        let ours = h.hash("correct horse");
        let crate_argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, h.params.clone());
        assert!(crate_argon2.verify_password(b"correct horse", &PasswordHash::new(&ours).unwrap()).is_ok());
        let theirs =
            crate_argon2.hash_password(b"correct horse", &SaltString::generate(&mut OsRng)).unwrap().to_string();
        assert_eq!(h.verify("correct horse", Some(&theirs)), Verdict::Right);
        // argon2i/argon2d and a larger memory than this thread kept so far.
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::new(256, 1, 1, None).unwrap());
        let old = argon2i.hash_password(b"pw", &SaltString::generate(&mut OsRng)).unwrap().to_string();
        assert!(matches!(h.verify("pw", Some(&old)), Verdict::RightRehashed(_)));
        assert_eq!(h.verify("pW", Some(&old)), Verdict::Wrong);
    }

    #[tokio::test]
    async fn hashing_threads_run_jobs_concurrently_submitted() {
        let h = hasher(64);
        let stored = h.hash("pw");
        let checks = (0..16).map(|i| {
            let (h, stored) = (h.clone(), stored.clone());
            tokio::spawn(
                async move { h.run(move |h| h.verify(if i % 2 == 0 { "pw" } else { "no" }, Some(&stored))).await },
            )
        });
        for (i, check) in checks.enumerate() {
            let want = if i % 2 == 0 { Verdict::Right } else { Verdict::Wrong };
            assert_eq!(check.await.unwrap(), Some(want));
        }
    }

    #[test]
    fn supabase_bcrypt_hashes_verify_and_move_to_argon2id() {
        let bcrypt_hash = bcrypt::hash("hunter22", 4).unwrap();
        let Verdict::RightRehashed(new) = hasher(64).verify("hunter22", Some(&bcrypt_hash)) else { panic!() };
        assert!(new.starts_with("$argon2id$"));
        assert_eq!(hasher(64).verify("hunter2", Some(&bcrypt_hash)), Verdict::Wrong);
    }
}
