//! The `idempotent_calls` table: one row per API key and idempotency key, a claim while the
//! call runs, then its reply sealed.

use crate::store::{HeldKey, IdempotentRow};
use crate::vault::crypto::Sealed;
use rusqlite::{Connection, OptionalExtension};

/// A call asking for its key, with the times that decide whether it gets it.
pub(super) struct Claim<'a> {
    pub api_key_id: i64,
    pub key: &'a str,
    pub fingerprint: &'a [u8],
    pub now: i64,
    pub claimed_until: i64,
    pub expired_before: i64,
}

/// What [`claim`] reads of a held key besides [`HeldKey`]: when it was claimed and until when.
struct Row {
    held: HeldKey,
    claimed_at: i64,
    claimed_until: i64,
}

/// Claim the key (`None`), or say what holds it; run in a write transaction, so two calls
/// racing for one key cannot both get it.
pub(super) fn claim(conn: &Connection, claim: &Claim<'_>) -> anyhow::Result<Option<HeldKey>> {
    let row = conn
        .query_row(
            "SELECT fingerprint, http_status, key_id, reply_nonce, reply_ciphertext, claimed_at, claimed_until,
                    upstream_status
             FROM idempotent_calls WHERE api_key_id = ?1 AND idempotency_key = ?2",
            rusqlite::params![claim.api_key_id, claim.key],
            |r| {
                let key_id: Option<String> = r.get(2)?;
                let reply = match key_id {
                    Some(key_id) => Some(Sealed {
                        key_id,
                        nonce: r.get(3)?,
                        ciphertext: r.get(4)?,
                    }),
                    None => None,
                };
                Ok(Row {
                    held: HeldKey {
                        fingerprint: r.get(0)?,
                        http_status: r.get(1)?,
                        upstream_status: r.get(7)?,
                        reply,
                    },
                    claimed_at: r.get(5)?,
                    claimed_until: r.get(6)?,
                })
            },
        )
        .optional()?;
    if let Some(row) = row {
        let expired = row.claimed_at < claim.expired_before;
        // A call that never finished and whose time is up: its gateway stopped mid-call.
        let lost = row.held.http_status.is_none() && row.claimed_until < claim.now;
        if !expired && !lost {
            return Ok(Some(row.held));
        }
    }
    conn.execute(
        "INSERT OR REPLACE INTO idempotent_calls
            (api_key_id, idempotency_key, fingerprint, claimed_at, claimed_until)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![
            claim.api_key_id,
            claim.key,
            claim.fingerprint,
            claim.now,
            claim.claimed_until
        ],
    )?;
    Ok(None)
}

pub(super) fn finish(
    conn: &Connection,
    api_key_id: i64,
    key: &str,
    fingerprint: &[u8],
    (http_status, upstream_status): (u16, Option<u16>),
    reply: &Sealed,
) -> anyhow::Result<()> {
    conn.execute(
        "UPDATE idempotent_calls SET http_status = ?4, key_id = ?5, reply_nonce = ?6, reply_ciphertext = ?7,
            upstream_status = ?8
         WHERE api_key_id = ?1 AND idempotency_key = ?2 AND fingerprint = ?3 AND http_status IS NULL",
        rusqlite::params![
            api_key_id,
            key,
            fingerprint,
            http_status,
            reply.key_id,
            reply.nonce,
            reply.ciphertext,
            upstream_status
        ],
    )?;
    Ok(())
}

pub(super) fn release(
    conn: &Connection,
    api_key_id: i64,
    key: &str,
    fingerprint: &[u8],
) -> anyhow::Result<()> {
    conn.execute(
        "DELETE FROM idempotent_calls
         WHERE api_key_id = ?1 AND idempotency_key = ?2 AND fingerprint = ?3 AND http_status IS NULL",
        rusqlite::params![api_key_id, key, fingerprint],
    )?;
    Ok(())
}

pub(super) fn prune(conn: &Connection, cutoff: i64) -> anyhow::Result<usize> {
    Ok(conn.execute("DELETE FROM idempotent_calls WHERE claimed_at < ?1", [cutoff])?)
}

pub(super) fn sealed_with_other_keys(
    conn: &Connection,
    key_id: &str,
    limit: usize,
) -> anyhow::Result<Vec<IdempotentRow>> {
    let mut statement = conn.prepare(
        "SELECT rowid, api_key_id, idempotency_key, key_id, reply_nonce, reply_ciphertext
         FROM idempotent_calls WHERE key_id <> ?1 ORDER BY rowid LIMIT ?2",
    )?;
    let rows = statement
        .query_map(rusqlite::params![key_id, limit as i64], |r| {
            Ok(IdempotentRow {
                row_id: r.get(0)?,
                api_key_id: r.get(1)?,
                key: r.get(2)?,
                sealed: Sealed {
                    key_id: r.get(3)?,
                    nonce: r.get(4)?,
                    ciphertext: r.get(5)?,
                },
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub(super) fn replace_sealed(conn: &Connection, resealed: &[(i64, Vec<u8>, Sealed)]) -> anyhow::Result<()> {
    for (row_id, previous_nonce, sealed) in resealed {
        // The nonce, random per seal, tells the very reply read (a row id may be reused once
        // its row was pruned).
        conn.execute(
            "UPDATE idempotent_calls SET reply_nonce = ?2, reply_ciphertext = ?3, key_id = ?4
             WHERE rowid = ?1 AND reply_nonce = ?5",
            rusqlite::params![
                row_id,
                sealed.nonce,
                sealed.ciphertext,
                sealed.key_id,
                previous_nonce
            ],
        )?;
    }
    Ok(())
}
