//! Private keys at rest: the root key is stored as an **encrypted PKCS#8** PEM
//! (`ENCRYPTED PRIVATE KEY`, PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC), readable by OpenSSL
//! (`openssl pkey -in root-key.pem`) and any PKCS#8 tool; the online intermediate key is a plain
//! PKCS#8 PEM in a 0600 file. All keys are ECDSA P-256.

use pkcs8::{EncryptedPrivateKeyInfo, LineEnding, PrivateKeyInfo, SecretDocument, pkcs5::pbes2};
use rand::RngCore as _;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::PrivatePkcs8KeyDer;

/// PBKDF2 iterations for a new encrypted key (OWASP 2023 figure for PBKDF2-HMAC-SHA256).
pub const DEFAULT_KDF_ITERATIONS: u32 = 600_000;

/// Fewest PBKDF2 iterations accepted when encrypting.
pub const MIN_KDF_ITERATIONS: u32 = 10_000;

/// Shortest accepted passphrase, in bytes.
pub const MIN_PASSPHRASE_BYTES: usize = 12;

/// Why a key could not be generated, encrypted, decrypted or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The passphrase is too short to protect an offline root key.
    #[error("passphrase is too short: {len} bytes, at least {MIN_PASSPHRASE_BYTES} required")]
    WeakPassphrase {
        /// Its length in bytes.
        len: usize,
    },
    /// Too few KDF iterations were requested.
    #[error("kdf iterations {0} below the minimum of {MIN_KDF_ITERATIONS}")]
    WeakKdf(u32),
    /// The PEM is not an `ENCRYPTED PRIVATE KEY` (or not PEM at all).
    #[error("not an encrypted PKCS#8 key: {0}")]
    NotEncrypted(String),
    /// Decryption failed: wrong passphrase or a damaged file.
    #[error("cannot decrypt the key: wrong passphrase or damaged file")]
    Decrypt,
    /// The key is not an ECDSA P-256 PKCS#8 key.
    #[error("not an ECDSA P-256 PKCS#8 private key: {0}")]
    WrongKey(String),
    /// Key generation or encoding failed.
    #[error("key encoding: {0}")]
    Encoding(String),
}

/// A new ECDSA P-256 key pair.
pub fn generate_key() -> Result<KeyPair, KeyError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| KeyError::Encoding(e.to_string()))
}

/// Encrypts `key` under `passphrase` as an `ENCRYPTED PRIVATE KEY` PEM.
pub fn encrypt_key(key: &KeyPair, passphrase: &[u8], iterations: u32) -> Result<String, KeyError> {
    if passphrase.len() < MIN_PASSPHRASE_BYTES {
        return Err(KeyError::WeakPassphrase {
            len: passphrase.len(),
        });
    }
    if iterations < MIN_KDF_ITERATIONS {
        return Err(KeyError::WeakKdf(iterations));
    }
    let der = key.serialize_der();
    let info =
        PrivateKeyInfo::try_from(der.as_slice()).map_err(|e| KeyError::Encoding(e.to_string()))?;
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let params = pbes2::Parameters::pbkdf2_sha256_aes256cbc(iterations, &salt, &iv)
        .map_err(|e| KeyError::Encoding(e.to_string()))?;
    let doc = info
        .encrypt_with_params(params, passphrase)
        .map_err(|e| KeyError::Encoding(e.to_string()))?;
    let pem = doc
        .to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
        .map_err(|e| KeyError::Encoding(e.to_string()))?;
    Ok(pem.as_str().to_owned())
}

/// Decrypts an `ENCRYPTED PRIVATE KEY` PEM made by [`encrypt_key`] (or OpenSSL).
pub fn decrypt_key(pem: &str, passphrase: &[u8]) -> Result<KeyPair, KeyError> {
    let (label, doc) =
        SecretDocument::from_pem(pem).map_err(|e| KeyError::NotEncrypted(e.to_string()))?;
    if label != "ENCRYPTED PRIVATE KEY" {
        return Err(KeyError::NotEncrypted(format!("PEM label is {label:?}")));
    }
    let info = EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
        .map_err(|e| KeyError::NotEncrypted(e.to_string()))?;
    let plain = info.decrypt(passphrase).map_err(|_| KeyError::Decrypt)?;
    key_from_pkcs8_der(plain.as_bytes())
}

/// Loads a plain PKCS#8 PEM (`PRIVATE KEY`) ECDSA P-256 key.
pub fn key_from_pem(pem: &str) -> Result<KeyPair, KeyError> {
    let (label, doc) =
        SecretDocument::from_pem(pem).map_err(|e| KeyError::WrongKey(e.to_string()))?;
    if label != "PRIVATE KEY" {
        return Err(KeyError::WrongKey(format!("PEM label is {label:?}")));
    }
    key_from_pkcs8_der(doc.as_bytes())
}

fn key_from_pkcs8_der(der: &[u8]) -> Result<KeyPair, KeyError> {
    KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(der.to_vec()),
        &PKCS_ECDSA_P256_SHA256,
    )
    .map_err(|e| KeyError::WrongKey(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_decrypt_round_trip_and_refusals() {
        let key = generate_key().unwrap();
        let pem = encrypt_key(&key, b"correct horse battery", MIN_KDF_ITERATIONS).unwrap();
        assert!(
            pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"),
            "{pem}"
        );
        let back = decrypt_key(&pem, b"correct horse battery").unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
        assert!(matches!(
            decrypt_key(&pem, b"wrong horse battery"),
            Err(KeyError::Decrypt)
        ));
        assert!(matches!(
            encrypt_key(&key, b"short", MIN_KDF_ITERATIONS),
            Err(KeyError::WeakPassphrase { len: 5 })
        ));
        assert!(matches!(
            encrypt_key(&key, b"correct horse battery", 1),
            Err(KeyError::WeakKdf(1))
        ));
        assert!(matches!(
            decrypt_key(&key.serialize_pem(), b"correct horse battery"),
            Err(KeyError::NotEncrypted(_))
        ));
        let plain = key_from_pem(&key.serialize_pem()).unwrap();
        assert_eq!(plain.public_key_raw(), key.public_key_raw());
    }
}
