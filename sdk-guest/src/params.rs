//! The caller's `params` object, parsed on demand into the connector's own types.

use crate::Error;
use serde::de::DeserializeOwned;

/// The `params` JSON object a caller sent, as received by [`crate::Connector::invoke`].
#[derive(Debug, Clone)]
pub struct Params {
    json: String,
}

impl Params {
    /// Wrap raw JSON text. The gateway always passes a JSON object.
    pub fn from_json(json: impl Into<String>) -> Self {
        Self { json: json.into() }
    }

    /// Deserialize the params into `T`. Failures become [`Error::BadParams`] naming the field.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.json).map_err(|e| Error::bad_params(e.to_string()))
    }

    /// The params as a dynamic JSON value.
    pub fn value(&self) -> Result<serde_json::Value, Error> {
        self.parse()
    }

    /// The raw JSON text.
    pub fn as_str(&self) -> &str {
        &self.json
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Repo {
        #[allow(dead_code)]
        owner: String,
    }

    #[test]
    fn missing_field_is_bad_params_naming_it() {
        let err = Params::from_json("{}")
            .parse::<Repo>()
            .expect_err("owner is missing");
        match err {
            Error::BadParams(message) => assert!(message.contains("owner"), "{message}"),
            other => panic!("expected BadParams, got {other:?}"),
        }
    }
}
