//! Query-string parsing that names the offending field in a `bad_request`.

use crate::error::ApiError;
use axum::extract::{FromRequestParts, RawQuery};
use axum::http::request::Parts;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

/// Default page size of list endpoints.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page size of list endpoints.
pub const MAX_LIMIT: u32 = 100;
/// Largest page number of list endpoints.
pub const MAX_PAGE: u32 = 1_000_000;

/// The query string as name → value. A parameter given twice is refused: which of the two
/// the caller meant is a guess (a list is one value, comma-separated: `tags=a,b`).
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let RawQuery(raw) = RawQuery::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::BadRequest("malformed query string".into()))?;
        let mut map = HashMap::new();
        for (name, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned() {
            match map.entry(name) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(taken) => {
                    return Err(ApiError::BadRequest(format!(
                        "query parameter `{}` is given more than once; send it once (a list \
                         parameter takes one comma-separated value: `tags=a,b`)",
                        taken.key()
                    )));
                }
            }
        }
        Ok(Self(map))
    }
}

impl Query {
    /// Refuse parameters the route does not take (`accepted`, as documented in
    /// `/openapi.json`): a misspelt filter (`?integraton=github`) would otherwise be ignored and
    /// the caller handed every row.
    pub fn only(self, accepted: &[super::openapi::params::Param]) -> Result<Self, ApiError> {
        let mut unknown: Vec<&str> = self
            .0
            .keys()
            .map(String::as_str)
            .filter(|name| accepted.iter().all(|param| param.name != *name))
            .collect();
        if unknown.is_empty() {
            return Ok(self);
        }
        unknown.sort_unstable();
        let takes: Vec<&str> = accepted.iter().map(|param| param.name).collect();
        Err(ApiError::BadRequest(format!(
            "unknown query parameter `{}`; this route takes {}",
            unknown.join("`, `"),
            if takes.is_empty() {
                "none".to_owned()
            } else {
                takes.join(", ")
            }
        )))
    }

    /// Whether the query names `name` at all (even empty).
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// A text parameter; empty values count as absent.
    pub fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|v| !v.is_empty()).cloned()
    }

    /// A parameter choosing whose data a request touches: empty is refused, not taken as absent,
    /// since a URL built from an empty variable (`?identity=${user}`) must not fall back to
    /// the key owner's own connection.
    pub fn selector(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(name) {
            Some(value) if value.is_empty() => Err(ApiError::BadRequest(format!(
                "query parameter `{name}` is empty: give a value or leave it out"
            ))),
            value => Ok(value.cloned()),
        }
    }

    /// A `true`/`false` parameter (`1`/`0` too); empty counts as absent.
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.0.get(name).map(String::as_str) {
            None | Some("") => Ok(None),
            Some("true") | Some("1") => Ok(Some(true)),
            Some("false") | Some("0") => Ok(Some(false)),
            Some(other) => Err(ApiError::BadRequest(format!(
                "query parameter `{name}` must be true or false, not `{other}`"
            ))),
        }
    }

    /// An integer parameter within `min..=max`; empty counts as absent.
    pub fn integer(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        let Some(raw) = self.0.get(name).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        match raw.parse::<i64>() {
            Ok(value) if (min..=max).contains(&value) => Ok(Some(value)),
            _ => Err(ApiError::BadRequest(format!(
                "query parameter `{name}` must be an integer from {min} to {max}, not `{raw}`"
            ))),
        }
    }

    /// A comma-separated list choosing whose data a request touches: given but naming nothing
    /// (`?connectionKey=${key}` with the variable empty) is refused, as [`Query::selector`]
    /// refuses, rather than taken as no filter.
    pub fn selector_list(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let items = self.list(name);
        if items.is_empty() && self.has(name) {
            return Err(ApiError::BadRequest(format!(
                "query parameter `{name}` names nothing: give a value or leave it out"
            )));
        }
        Ok(items)
    }

    /// A comma-separated list.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.0
            .get(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `limit` (1..=[`MAX_LIMIT`], default [`DEFAULT_LIMIT`]) and `page` (1..=[`MAX_PAGE`],
    /// default 1).
    pub fn pagination(&self) -> Result<Page, ApiError> {
        Ok(Page {
            limit: self
                .integer("limit", 1, i64::from(MAX_LIMIT))?
                .map_or(DEFAULT_LIMIT, |v| v as u32),
            page: self
                .integer("page", 1, i64::from(MAX_PAGE))?
                .map_or(1, |v| v as u32),
        })
    }
}

/// A requested page.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Rows per page.
    pub limit: u32,
    /// 1-based page number.
    pub page: u32,
}

impl Page {
    /// This page of `items` (all matching rows, in order), rendered with `row`, in the envelope.
    pub fn of<T>(&self, items: Vec<T>, row: impl FnMut(T) -> serde_json::Value) -> serde_json::Value {
        let total = items.len() as i64;
        let rows: Vec<serde_json::Value> = items
            .into_iter()
            .skip(((self.page - 1) * self.limit) as usize)
            .take(self.limit as usize)
            .map(row)
            .collect();
        self.envelope(rows, total)
    }

    /// The `{"rows","total","pages","page"}` envelope.
    pub fn envelope<T: serde::Serialize>(&self, rows: Vec<T>, total: i64) -> serde_json::Value {
        let pages = (total + i64::from(self.limit) - 1) / i64::from(self.limit);
        serde_json::json!({"rows": rows, "total": total, "pages": pages, "page": self.page})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn query_of(uri: &str) -> Result<Query, ApiError> {
        let request = axum::http::Request::builder().uri(uri).body(()).expect("request");
        let (mut parts, ()) = request.into_parts();
        Query::from_request_parts(&mut parts, &()).await
    }

    #[tokio::test]
    async fn a_parameter_given_twice_is_refused_by_name() {
        let error = query_of("/v1/logs?limit=5&outcome=ok&limit=50")
            .await
            .expect_err("limit twice");
        assert_eq!(error.code(), "bad_request");
        assert!(
            error.to_string().contains("`limit` is given more than once"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn values_are_decoded_and_empty_ones_count_as_absent() {
        let query = query_of("/v1/vault/connections?tags=a%2Cb,c&name=&active=1&limit=")
            .await
            .expect("query");
        assert_eq!(query.list("tags"), ["a", "b", "c"]);
        assert_eq!(query.text("name"), None);
        assert_eq!(query.boolean("active").expect("boolean"), Some(true));
        assert_eq!(query.pagination().expect("page").limit, DEFAULT_LIMIT);
        let error = query_of("/x?active=yes").await.expect("query").boolean("active");
        assert!(error.is_err(), "`yes` is not a boolean");
    }
}
