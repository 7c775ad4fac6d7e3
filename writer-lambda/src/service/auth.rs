//! Account authentication: account id + passkey, only passkey hashes kept, compared in
//! constant time.
//!
//! Passkeys are generated secrets (`ikv-writer hash-passkey --generate` makes 32 random bytes),
//! not human passwords, so an unsalted SHA-256 is enough to keep them unrecoverable from the
//! configuration; at least 16 characters are required.

use std::collections::HashMap;

use base64::Engine;
use rand::TryRngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest passkey [`hash_passkey`] accepts.
pub const MIN_PASSKEY_CHARS: usize = 16;
const HASH_PREFIX: &str = "sha256:";

/// The accounts allowed to write, loaded from JSON:
/// `{"accounts": [{"account_id": "acme", "passkey_hash": "sha256:…", "stores": ["users"]}]}`.
/// `"stores": ["*"]` allows every store.
#[derive(Debug, Default)]
pub struct Accounts {
    by_id: HashMap<String, Account>,
}

#[derive(Debug)]
pub struct Account {
    pub account_id: String,
    passkey_sha256: [u8; 32],
    stores: Vec<String>,
}

impl Account {
    /// Whether this account may write to `store`.
    pub fn may_write(&self, store: &str) -> bool {
        self.stores.iter().any(|s| s == "*" || s == store)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountsFile {
    accounts: Vec<AccountEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountEntry {
    account_id: String,
    passkey_hash: String,
    stores: Vec<String>,
}

/// Why a request was not authenticated. Messages never contain the passkey.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("unknown account or wrong passkey")]
    BadCredentials,
}

impl Accounts {
    /// Parses the accounts JSON; the error names the entry that is wrong.
    pub fn from_json(json: &str) -> Result<Accounts, String> {
        let file: AccountsFile =
            serde_json::from_str(json).map_err(|e| format!("accounts configuration: {e}"))?;
        let mut by_id = HashMap::new();
        for (i, entry) in file.accounts.into_iter().enumerate() {
            if entry.account_id.is_empty() {
                return Err(format!("accounts[{i}]: account_id must not be empty"));
            }
            let hex_digest = entry.passkey_hash.strip_prefix(HASH_PREFIX).ok_or_else(|| {
                format!(
                    "accounts[{i}] ({}): passkey_hash must start with {HASH_PREFIX:?} (make one with `ikv-writer hash-passkey`)",
                    entry.account_id
                )
            })?;
            let digest: [u8; 32] = hex::decode(hex_digest)
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| {
                    format!(
                        "accounts[{i}] ({}): passkey_hash is not {HASH_PREFIX} followed by 64 hex digits",
                        entry.account_id
                    )
                })?;
            for store in &entry.stores {
                if store != "*" && ikv_core::config::validate_store_name(store).is_err() {
                    return Err(format!(
                        "accounts[{i}] ({}): stores may hold \"*\" or exact store names, not {store:?}",
                        entry.account_id
                    ));
                }
            }
            let id = entry.account_id.clone();
            let account = Account {
                account_id: entry.account_id,
                passkey_sha256: digest,
                stores: entry.stores,
            };
            if by_id.insert(id.clone(), account).is_some() {
                return Err(format!("accounts[{i}]: account_id {id:?} appears twice"));
            }
        }
        Ok(Accounts { by_id })
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Checks credentials. Unknown accounts cost the same comparison as known ones, so timing
    /// does not tell which account ids exist.
    pub fn authenticate(
        &self,
        account_id: Option<&str>,
        passkey: Option<&str>,
    ) -> Result<&Account, AuthError> {
        let account_id = account_id.ok_or(AuthError::MissingHeader(super::ACCOUNT_ID_HEADER))?;
        let passkey = passkey.ok_or(AuthError::MissingHeader(super::PASSKEY_HEADER))?;
        let presented: [u8; 32] = Sha256::digest(passkey.as_bytes()).into();
        let account = self.by_id.get(account_id);
        let expected = account.map(|a| a.passkey_sha256).unwrap_or([0u8; 32]);
        let matches: bool = presented.ct_eq(&expected).into();
        match account {
            Some(a) if matches => Ok(a),
            _ => Err(AuthError::BadCredentials),
        }
    }
}

/// Accounts from a JSON file if given, else from the `IKV_ACCOUNTS` variable (inline JSON).
pub fn load_accounts(file: Option<&std::path::Path>) -> Result<Accounts, String> {
    let json = match (file, std::env::var("IKV_ACCOUNTS")) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read accounts file {}: {e}", path.display()))?,
        (None, Ok(json)) => json,
        (None, Err(_)) => {
            return Err("no accounts configured: set --accounts-file / IKV_ACCOUNTS_FILE or IKV_ACCOUNTS (see docs/API.md)".into());
        }
    };
    let accounts = Accounts::from_json(&json)?;
    if accounts.is_empty() {
        return Err("the accounts configuration lists no accounts".into());
    }
    Ok(accounts)
}

/// The value to put in `passkey_hash` for `passkey`.
pub fn hash_passkey(passkey: &str) -> Result<String, String> {
    if passkey.chars().count() < MIN_PASSKEY_CHARS {
        return Err(format!(
            "a passkey must have at least {MIN_PASSKEY_CHARS} characters; generate one with --generate"
        ));
    }
    // A passkey travels in an HTTP header, which cannot carry control characters and loses
    // leading and trailing spaces: such a passkey could never authenticate.
    if passkey.trim() != passkey || passkey.chars().any(|c| c.is_control() || !c.is_ascii()) {
        return Err(
            "a passkey must be printable ASCII without leading or trailing spaces (it travels in an HTTP header); generate one with --generate"
                .into(),
        );
    }
    Ok(format!(
        "{HASH_PREFIX}{}",
        hex::encode(Sha256::digest(passkey.as_bytes()))
    ))
}

/// A new random passkey: 32 bytes from the OS generator, URL-safe base64.
pub fn generate_passkey() -> String {
    // Key material: from the operating system's generator, never a seeded one.
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random generator is available");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passkey_no_header_can_carry_is_refused() {
        for bad in [
            "correct horse battery staple ",
            " correct horse battery staple",
            "correct horse battery staple\0",
            "correct horse\tbattery staple",
            "correct horse battery staplé",
        ] {
            let err = hash_passkey(bad).unwrap_err();
            assert!(err.contains("printable ASCII"), "{bad:?}: {err}");
        }
        hash_passkey("correct horse battery staple").unwrap();
    }

    fn accounts() -> Accounts {
        let hash = hash_passkey("correct horse battery staple").unwrap();
        Accounts::from_json(&format!(
            r#"{{"accounts":[{{"account_id":"acme","passkey_hash":"{hash}","stores":["users"]}},
                {{"account_id":"ops","passkey_hash":"{hash}","stores":["*"]}}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn authenticates_and_authorizes() {
        let a = accounts();
        let acme = a
            .authenticate(Some("acme"), Some("correct horse battery staple"))
            .unwrap();
        assert!(acme.may_write("users"));
        assert!(!acme.may_write("orders"));
        let ops = a
            .authenticate(Some("ops"), Some("correct horse battery staple"))
            .unwrap();
        assert!(ops.may_write("orders"));
    }

    #[test]
    fn refuses_bad_credentials() {
        let a = accounts();
        assert_eq!(
            a.authenticate(Some("acme"), Some("wrong passkey!!!!!"))
                .unwrap_err(),
            AuthError::BadCredentials
        );
        assert_eq!(
            a.authenticate(Some("nobody"), Some("correct horse battery staple"))
                .unwrap_err(),
            AuthError::BadCredentials
        );
        assert!(matches!(
            a.authenticate(None, Some("x")).unwrap_err(),
            AuthError::MissingHeader(_)
        ));
        assert!(matches!(
            a.authenticate(Some("acme"), None).unwrap_err(),
            AuthError::MissingHeader(_)
        ));
    }

    #[test]
    fn bad_configuration_is_named() {
        for (json, want) in [
            ("{", "accounts configuration"),
            (
                r#"{"accounts":[{"account_id":"a","passkey_hash":"md5:00","stores":[]}]}"#,
                "must start with",
            ),
            (
                r#"{"accounts":[{"account_id":"a","passkey_hash":"sha256:zz","stores":[]}]}"#,
                "64 hex digits",
            ),
            (
                r#"{"accounts":[{"account_id":"","passkey_hash":"sha256:00","stores":[]}]}"#,
                "must not be empty",
            ),
        ] {
            let err = Accounts::from_json(json).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
        // A pattern other than "*" would silently match nothing.
        let hash = format!("sha256:{}", "0".repeat(64));
        for pattern in ["users*", "us?rs", "../x", ""] {
            let json = format!(
                r#"{{"accounts":[{{"account_id":"a","passkey_hash":"{hash}","stores":["ok","{pattern}"]}}]}}"#
            );
            let err = Accounts::from_json(&json).unwrap_err();
            assert!(err.contains("exact store names"), "{pattern}: {err}");
        }
        assert!(hash_passkey("short").is_err());
        assert_eq!(generate_passkey().len(), 43);
        assert_ne!(generate_passkey(), generate_passkey());
    }
}
