//! Idempotent calls: the reply to an action called with an `Idempotency-Key`, kept a day so
//! that a retry of the same call gets it again instead of running the action twice.
//!
//! A call claims its key (per API key) before it runs; the claim holds for as long as a call
//! may take, so a retry meanwhile is told the call is still running, and a claim whose call
//! never finished (its gateway stopped) can be taken again once that time is past. The reply
//! is sealed like a secret: it is the upstream's data, kept at rest.

use super::crypto;
use super::{Vault, now};
use crate::store::IdempotentRow;

/// How long a finished call's reply is kept for retries (the usual day).
pub const RETENTION_SECONDS: i64 = 86_400;

/// A call asking to run once under `key`.
#[derive(Debug, Clone)]
pub struct IdempotentRequest {
    /// The API key's row id: keys are scoped to the API key that used them.
    pub api_key_id: i64,
    /// The caller's `Idempotency-Key`.
    pub key: String,
    /// Digest of what the call asks for (integration, action, `connection_key`, `identity`,
    /// params).
    pub fingerprint: [u8; 32],
}

/// What a key holds when a call claims it.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is the caller's: run the call, then finish or release it.
    Claimed,
    /// A call under this key is still running; `same_request`: it asks for the same thing.
    Running {
        /// Whether that call asks for what this one does.
        same_request: bool,
    },
    /// A call under this key finished with this reply.
    Finished {
        /// Whether that call asked for what this one does.
        same_request: bool,
        /// The gateway's HTTP status for it.
        http_status: u16,
        /// The reply's body.
        body: Vec<u8>,
    },
}

impl Vault {
    /// Claim `request`'s key for a call that may run until `claimed_for` seconds from now.
    pub fn claim_idempotent_call(
        &self,
        request: &IdempotentRequest,
        claimed_for: i64,
    ) -> anyhow::Result<Claim> {
        let at = now();
        let row = self.store.claim_idempotent_call(
            request.api_key_id,
            &request.key,
            &request.fingerprint,
            at,
            at + claimed_for,
            at - RETENTION_SECONDS,
        )?;
        let Some(row) = row else {
            return Ok(Claim::Claimed);
        };
        let same_request = row.fingerprint == request.fingerprint;
        let (Some(http_status), Some(sealed)) = (row.http_status, row.reply) else {
            return Ok(Claim::Running { same_request });
        };
        let context = reply_context(request.api_key_id, &request.key);
        let (http_status, body) = match self.open_sealed(&sealed, &context) {
            Ok(body) => (http_status, body),
            // Sealed by a gateway that had not yet seen a key rotation, with a key since gone:
            // the call ran, so it does not run again; the retry gets what is known.
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), key = %request.key, "a kept idempotent reply cannot be opened");
                unreadable_reply(http_status, row.upstream_status)
            }
        };
        Ok(Claim::Finished {
            same_request,
            http_status,
            body,
        })
    }

    /// Keep the reply of `request`'s call (its claim ends); `statuses`: the gateway's HTTP
    /// status and the upstream status the reply reported.
    pub fn finish_idempotent_call(
        &self,
        request: &IdempotentRequest,
        statuses: (u16, Option<u16>),
        body: &[u8],
    ) -> anyhow::Result<()> {
        let sealed = self.seal(body, &reply_context(request.api_key_id, &request.key))?;
        self.store.finish_idempotent_call(
            request.api_key_id,
            &request.key,
            &request.fingerprint,
            statuses,
            &sealed,
        )
    }

    /// Give up `request`'s claim: the call ended before its connector ran (refused, or the
    /// connector was busy), so a retry may run it.
    pub fn release_idempotent_call(&self, request: &IdempotentRequest) -> anyhow::Result<()> {
        self.store
            .release_idempotent_call(request.api_key_id, &request.key, &request.fingerprint)
    }

    /// Forget calls made before `cutoff` (Unix seconds); returns how many.
    pub fn prune_idempotent_calls(&self, cutoff: i64) -> anyhow::Result<usize> {
        self.store.prune_idempotent_calls(cutoff)
    }

    /// Seal every kept reply under `new_primary` (part of a master key rotation).
    pub(super) fn reencrypt_idempotent_replies(
        &self,
        new_primary: &crypto::MasterKey,
    ) -> anyhow::Result<usize> {
        const BATCH: usize = 100;
        let mut done = 0;
        loop {
            let batch = self
                .store
                .idempotent_replies_sealed_with_other_keys(new_primary.id(), BATCH)?;
            if batch.is_empty() {
                return Ok(done);
            }
            let mut resealed = Vec::with_capacity(batch.len());
            for IdempotentRow {
                row_id,
                api_key_id,
                key,
                sealed,
            } in batch
            {
                let context = reply_context(api_key_id, &key);
                let body = self.open_sealed(&sealed, &context)?;
                resealed.push((row_id, sealed.nonce, new_primary.seal(&body, &context)?));
            }
            self.store.replace_idempotent_replies(&resealed)?;
            done += resealed.len();
        }
    }
}

/// A kept reply without its data: the upstream status, and `why` the data is not there.
pub fn status_only_reply(upstream_status: u16, why: &str) -> Vec<u8> {
    let why = serde_json::Value::String(why.to_owned());
    format!("{{\"status\":{upstream_status},\"data\":null,\"dataOmitted\":{why}}}").into_bytes()
}

/// What a retry gets for a reply that cannot be opened: its upstream status if it had one, or
/// an internal error saying that the call ran.
fn unreadable_reply(http_status: u16, upstream_status: Option<u16>) -> (u16, Vec<u8>) {
    const WHY: &str = "the kept reply could not be read (it was sealed with a master key this gateway no \
                       longer has); the call ran and does not run again under this key";
    match upstream_status {
        Some(upstream_status) => (http_status, status_only_reply(upstream_status, WHY)),
        None => {
            let body = serde_json::json!({"error": crate::error::INTERNAL_ERROR, "message": WHY});
            (500, body.to_string().into_bytes())
        }
    }
}

/// What a reply's seal is bound to: its API key and idempotency key, so a reply cannot be
/// moved to another row.
fn reply_context(api_key_id: i64, key: &str) -> String {
    format!("idempotent reply {api_key_id} {key}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::tests::temp_vault;

    fn request(key: &str, params: &[u8]) -> IdempotentRequest {
        IdempotentRequest {
            api_key_id: 1,
            key: key.to_owned(),
            fingerprint: crypto::sha256(params),
        }
    }

    #[test]
    fn a_key_runs_once_and_then_replays() -> anyhow::Result<()> {
        let (vault, _dir) = temp_vault()?;
        let first = request("k1", b"a");
        assert_eq!(vault.claim_idempotent_call(&first, 60)?, Claim::Claimed);
        assert_eq!(
            vault.claim_idempotent_call(&first, 60)?,
            Claim::Running { same_request: true }
        );
        assert_eq!(
            vault.claim_idempotent_call(&request("k1", b"b"), 60)?,
            Claim::Running { same_request: false }
        );
        vault.finish_idempotent_call(&first, (200, Some(201)), b"{\"status\":201}")?;
        assert_eq!(
            vault.claim_idempotent_call(&first, 60)?,
            Claim::Finished {
                same_request: true,
                http_status: 200,
                body: b"{\"status\":201}".to_vec()
            }
        );
        assert!(matches!(
            vault.claim_idempotent_call(&request("k1", b"b"), 60)?,
            Claim::Finished {
                same_request: false,
                ..
            }
        ));
        // Keys are the API key's own: another API key's `k1` is another call.
        let other_key = IdempotentRequest {
            api_key_id: 2,
            ..first.clone()
        };
        assert_eq!(vault.claim_idempotent_call(&other_key, 60)?, Claim::Claimed);
        Ok(())
    }

    #[test]
    fn a_released_or_lost_claim_can_be_taken_again() -> anyhow::Result<()> {
        let (vault, _dir) = temp_vault()?;
        let call = request("k2", b"a");
        assert_eq!(vault.claim_idempotent_call(&call, 60)?, Claim::Claimed);
        vault.release_idempotent_call(&call)?;
        assert_eq!(vault.claim_idempotent_call(&call, 60)?, Claim::Claimed);
        // A claim that has run out (its gateway stopped mid-call) is taken by the next call.
        let lost = request("k3", b"a");
        assert_eq!(vault.claim_idempotent_call(&lost, -1)?, Claim::Claimed);
        assert_eq!(vault.claim_idempotent_call(&lost, 60)?, Claim::Claimed);
        Ok(())
    }

    #[test]
    fn a_reply_that_cannot_be_opened_is_told_by_its_status() -> anyhow::Result<()> {
        let (vault, dir) = temp_vault()?;
        // Sealed by a gateway that had not seen a rotation yet, with a key since dropped.
        let lost_key = crypto::Sealed {
            key_id: "gone".into(),
            nonce: vec![0; 24],
            ciphertext: vec![1, 2, 3],
        };
        for (key, upstream_status, expected_http) in [("k5", Some(201), 200), ("k6", None, 500)] {
            let call = request(key, b"a");
            vault.claim_idempotent_call(&call, 60)?;
            vault.store.finish_idempotent_call(
                call.api_key_id,
                &call.key,
                &call.fingerprint,
                (200, upstream_status),
                &lost_key,
            )?;
            let Claim::Finished {
                http_status, body, ..
            } = vault.claim_idempotent_call(&call, 60)?
            else {
                panic!("the call finished");
            };
            let body: serde_json::Value = serde_json::from_slice(&body)?;
            assert_eq!(http_status, expected_http, "{body}");
            match upstream_status {
                Some(status) => {
                    assert_eq!(body["status"], status);
                    assert!(
                        body["dataOmitted"]
                            .as_str()
                            .is_some_and(|why| why.contains("could not be read"))
                    );
                }
                None => assert_eq!(body["error"], "internal_error"),
            }
        }
        // Nor does such a reply stop the gateway from starting on the database again.
        drop(vault);
        crate::vault::Vault::open(
            &dir.path().join("sluice.db"),
            &crate::vault::KeySource::File(dir.path().join("master.key")),
        )?;
        Ok(())
    }

    #[test]
    fn replies_are_sealed_pruned_and_survive_a_key_rotation() -> anyhow::Result<()> {
        let (vault, _dir) = temp_vault()?;
        let call = request("k4", b"a");
        vault.claim_idempotent_call(&call, 60)?;
        vault.finish_idempotent_call(&call, (200, Some(201)), b"customer data")?;
        vault.rotate_key(None)?;
        assert!(matches!(
            vault.claim_idempotent_call(&call, 60)?,
            Claim::Finished { body, .. } if body == b"customer data"
        ));
        assert_eq!(vault.prune_idempotent_calls(now() - 10)?, 0);
        assert_eq!(vault.prune_idempotent_calls(now() + 10)?, 1);
        assert_eq!(vault.claim_idempotent_call(&call, 60)?, Claim::Claimed);
        Ok(())
    }
}
