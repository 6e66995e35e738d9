//! Secrets at rest: XChaCha20-Poly1305 with a random nonce per record and associated data
//! binding each ciphertext to its row and column, under a master key kept outside the database.

use anyhow::{Context, bail};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::Path;

/// The 32-byte master key and its public identifier.
#[derive(Clone)]
pub struct MasterKey {
    cipher: XChaCha20Poly1305,
    id: String,
    raw: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A sealed secret: the id of the key that sealed it, nonce and ciphertext (tag included).
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Id of the master key used.
    pub key_id: String,
    /// 24 random bytes.
    pub nonce: Vec<u8>,
    /// Ciphertext with the Poly1305 tag.
    pub ciphertext: Vec<u8>,
}

impl MasterKey {
    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"sluice master key id\0");
        hasher.update(bytes);
        let id = hex::encode(&hasher.finalize()[..8]);
        Self {
            cipher: XChaCha20Poly1305::new(bytes.into()),
            id,
            raw: *bytes,
        }
    }

    /// Parse a key written as 64 hex characters.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let bytes = hex::decode(text.trim()).context("the master key must be 64 hex characters")?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("the master key must be 32 bytes (64 hex characters)"))?;
        Ok(Self::from_bytes(&bytes))
    }

    /// Whether the key looks typed in rather than drawn at random: fewer than 8 distinct byte
    /// values (`00…`, `abab…`, `deadbeef…`), which a random key has with odds of about 2^-120.
    pub fn looks_made_up(&self) -> bool {
        let mut seen = [false; 256];
        for byte in self.raw {
            seen[usize::from(byte)] = true;
        }
        seen.iter().filter(|seen| **seen).count() < 8
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self::from_bytes(&bytes)
    }

    /// The raw key, for writing a key file.
    pub(crate) fn raw(&self) -> &[u8; 32] {
        &self.raw
    }

    /// Public identifier stored beside ciphertexts (not secret: derived by hashing).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypt `plaintext`, bound to `context` (e.g. `connections/<key>/secret`).
    pub fn seal(&self, plaintext: &[u8], context: &str) -> anyhow::Result<Sealed> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        Ok(Sealed {
            key_id: self.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Decrypt a sealed secret; fails if it was moved to another row or column, or tampered with.
    pub fn open(&self, sealed: &Sealed, context: &str) -> anyhow::Result<Vec<u8>> {
        if sealed.nonce.len() != 24 {
            bail!("stored nonce has the wrong length");
        }
        self.cipher
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("a stored secret failed authentication (wrong key or tampered row)"))
    }
}

/// The master keys in use: the first seals new secrets, all of them open old ones. During a
/// key rotation both the new and the previous key are present.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<MasterKey>,
}

impl Keyring {
    /// A keyring holding only `primary`.
    pub fn single(primary: MasterKey) -> Self {
        Self { keys: vec![primary] }
    }

    /// Parse keys separated by commas or new lines, primary first.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let keys = text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(MasterKey::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        if keys.is_empty() {
            anyhow::bail!("no master key given");
        }
        Ok(Self { keys })
    }

    /// The key that seals new secrets.
    pub fn primary(&self) -> &MasterKey {
        &self.keys[0]
    }

    /// The key with `id`, if present.
    pub fn find(&self, id: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.id() == id)
    }

    /// Add `other`'s keys after these (skipping duplicates).
    pub fn extend(&mut self, other: &Keyring) {
        for key in &other.keys {
            if self.find(key.id()).is_none() {
                self.keys.push(key.clone());
            }
        }
    }

    /// The raw keys, primary first.
    pub(crate) fn raw_keys(&self) -> Vec<[u8; 32]> {
        self.keys.iter().map(|k| *k.raw()).collect()
    }

    /// Ids of every key.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id().to_owned()).collect()
    }
}

/// Read the keyring from the key file, or create the file (mode 0600) with a fresh key when
/// `may_create`.
pub fn load_or_create_key_file(path: &Path, may_create: bool) -> anyhow::Result<Option<Keyring>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Keyring::parse(&text)
            .with_context(|| format!("reading master key file {}", path.display()))
            .map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_create => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            write_private_file(path, hex::encode(bytes).as_bytes())
                .with_context(|| format!("creating master key file {}", path.display()))?;
            // The one file whose loss loses every credential: say where it is, once.
            tracing::info!(
                "created the master key {} (readable by this user only); back it up apart from \
                 the database: the stored credentials cannot be read without it",
                path.display()
            );
            Ok(Some(Keyring::single(MasterKey::from_bytes(&bytes))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading master key file {}", path.display())),
    }
}

/// Replace the key file atomically (write a private temporary file, fsync, rename) with
/// `keys` as hex lines, primary first.
pub fn replace_key_file(path: &Path, keys: &[[u8; 32]]) -> anyhow::Result<()> {
    let text: Vec<String> = keys.iter().map(hex::encode).collect();
    let temporary = path.with_extension("key.new");
    let _ = std::fs::remove_file(&temporary);
    write_private_file(&temporary, text.join("\n").as_bytes())
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Create `path` readable by its owner only, failing if it already exists.
fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SHA-256 of an API key: what is stored and looked up instead of the key.
pub fn api_key_hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// `n` random bytes as lower-case hex.
pub fn random_hex(n: usize) -> String {
    random_id("", n)
}

/// `prefix` and `n` (at most 32) random bytes in lower-case hex, e.g. a `txn_…` key: built in
/// place, as one is made for every request.
pub fn random_id(prefix: &str, n: usize) -> String {
    let (mut bytes, mut digits) = ([0u8; 32], [0u8; 64]);
    let (bytes, digits) = (&mut bytes[..n], &mut digits[..2 * n]);
    rand::rng().fill_bytes(bytes);
    hex::encode_to_slice(bytes, digits).expect("two digits per byte");
    let mut id = String::with_capacity(prefix.len() + 2 * n);
    id.push_str(prefix);
    id.push_str(std::str::from_utf8(digits).expect("hex digits are ASCII"));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_prefixed_lower_case_hex_and_differ() {
        let first = random_id("txn_", 12);
        let hex = first.strip_prefix("txn_").expect("prefix");
        assert_eq!(hex.len(), 24);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{hex}"
        );
        assert_ne!(first, random_id("txn_", 12));
        assert_eq!(random_hex(16).len(), 32);
    }

    #[test]
    fn sealed_secret_opens_only_in_its_own_context() -> anyhow::Result<()> {
        let key = MasterKey::generate();
        let sealed = key.seal(b"ghp_topsecret", "connections/a/secret")?;
        assert_eq!(key.open(&sealed, "connections/a/secret")?, b"ghp_topsecret");
        assert!(
            key.open(&sealed, "connections/b/secret").is_err(),
            "moved to another row"
        );
        assert!(
            MasterKey::generate()
                .open(&sealed, "connections/a/secret")
                .is_err(),
            "wrong key"
        );
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(key.open(&tampered, "connections/a/secret").is_err(), "tampered");
        Ok(())
    }

    #[test]
    fn keyring_lists_primary_first_and_finds_by_id() -> anyhow::Result<()> {
        let ring = Keyring::parse(&format!("{}, {}\n", "11".repeat(32), "22".repeat(32)))?;
        let old = MasterKey::parse(&"22".repeat(32))?;
        assert_eq!(ring.primary().id(), MasterKey::parse(&"11".repeat(32))?.id());
        assert!(ring.find(old.id()).is_some());
        assert!(ring.find("0000").is_none());
        assert!(Keyring::parse(" , ").is_err());
        Ok(())
    }

    #[test]
    fn nonces_are_fresh_per_record() -> anyhow::Result<()> {
        let key = MasterKey::generate();
        let a = key.seal(b"same", "ctx")?;
        let b = key.seal(b"same", "ctx")?;
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        Ok(())
    }

    #[test]
    fn key_file_is_created_private_and_read_back() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("master.key");
        assert!(load_or_create_key_file(&path, false)?.is_none());
        let created = load_or_create_key_file(&path, true)?.expect("created");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        }
        let read = load_or_create_key_file(&path, false)?.expect("read");
        assert_eq!(created.primary().id(), read.primary().id());
        Ok(())
    }
}
