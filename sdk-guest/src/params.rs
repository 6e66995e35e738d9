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

    /// Deserialize the params into `T`. Failures become [`Error::BadParams`] naming the field
    /// as a JSON pointer, as the gateway's schema errors do (`/n: invalid value: integer
    /// `300`, expected u8`).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let mut deserializer = serde_json::Deserializer::from_str(&self.json);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let pointer = json_pointer(error.path());
            let inner = error.into_inner();
            // The position is in the gateway's re-serialised text, not what the caller sent.
            let position = format!(" at line {} column {}", inner.line(), inner.column());
            let message = inner.to_string();
            let message = message.strip_suffix(&position).unwrap_or(&message);
            match pointer.is_empty() {
                true => Error::bad_params(message),
                false => Error::bad_params(format!("{pointer}: {message}")),
            }
        })
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

/// `path` as a JSON pointer (`/items/0/name`); empty for the params object itself.
fn json_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in path.iter() {
        pointer.push('/');
        match segment {
            Segment::Seq { index } => pointer.push_str(&index.to_string()),
            Segment::Map { key } => pointer.push_str(&key.replace('~', "~0").replace('/', "~1")),
            Segment::Enum { variant } => pointer.push_str(variant),
            Segment::Unknown => pointer.push('?'),
        }
    }
    pointer
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
            Error::BadParams(message) => assert_eq!(message, "missing field `owner`"),
            other => panic!("expected BadParams, got {other:?}"),
        }
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Order {
        items: Vec<Item>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Item {
        quantity: u8,
    }

    #[test]
    fn a_wrong_value_is_named_by_its_pointer_without_a_text_position() {
        let err = Params::from_json(r#"{"items":[{"quantity":1},{"quantity":300}]}"#)
            .parse::<Order>()
            .expect_err("300 is no u8");
        match err {
            Error::BadParams(message) => assert_eq!(
                message,
                "/items/1/quantity: invalid value: integer `300`, expected u8"
            ),
            other => panic!("expected BadParams, got {other:?}"),
        }
    }
}
