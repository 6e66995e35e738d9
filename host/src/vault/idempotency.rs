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
    /// Digest of what the call asks for (integration, action, connection, params).
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
        match (row.http_status, row.reply) {
            (Some(http_status), Some(sealed)) => Ok(Claim::Finished {
                same_request,
                http_status,
                body: self.open_sealed(&sealed, &reply_context(request.api_key_id, &request.key))?,
            }),
            _ => Ok(Claim::Running { same_request }),
        }
    }

    /// Keep the reply of `request`'s call (its claim ends).
    pub fn finish_idempotent_call(
        &self,
        request: &IdempotentRequest,
        http_status: u16,
        body: &[u8],
    ) -> anyhow::Result<()> {
        let sealed = self.seal(body, &reply_context(request.api_key_id, &request.key))?;
        self.store.finish_idempotent_call(
            request.api_key_id,
            &request.key,
            &request.fingerprint,
            http_status,
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
                resealed.push((row_id, sealed.key_id, new_primary.seal(&body, &context)?));
            }
            self.store.replace_idempotent_replies(&resealed)?;
            done += resealed.len();
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
        vault.finish_idempotent_call(&first, 200, b"{\"status\":201}")?;
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
    fn replies_are_sealed_pruned_and_survive_a_key_rotation() -> anyhow::Result<()> {
        let (vault, _dir) = temp_vault()?;
        let call = request("k4", b"a");
        vault.claim_idempotent_call(&call, 60)?;
        vault.finish_idempotent_call(&call, 200, b"customer data")?;
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
