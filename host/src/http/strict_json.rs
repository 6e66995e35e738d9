//! JSON read into a `Value`, refusing an object that names a key twice.
//!
//! serde_json keeps the last of duplicate keys, while a connector reading the same text with
//! another parser may keep the first: a caller could then pass the params schema with one
//! value and have the connector act on another the schema never saw. So duplicates are
//! refused, at any depth, as part of the one parse the request needs anyway.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};
use std::fmt;

/// Parse `text` as JSON; an object with a key given twice is an error naming the key.
pub fn parse(text: &str) -> serde_json::Result<Value> {
    serde_json::from_str::<NoDuplicates>(text).map(|NoDuplicates(value)| value)
}

/// Parse `bytes` as JSON, as [`parse`] does.
pub fn parse_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    serde_json::from_slice::<NoDuplicates>(bytes).map(|NoDuplicates(value)| value)
}

// The visitor builds `Value`s the way serde_json does without its `arbitrary_precision`
// feature (numbers from `visit_i64`/`u64`/`f64`); with that feature numbers would arrive as
// maps and be taken for objects, which `values_read_as_serde_json_reads_them` would catch.
struct NoDuplicates(Value);

impl<'de> Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor).map(NoDuplicates)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(value.into())
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(value.into())
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity, so this is always a number.
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut array = Vec::with_capacity(items.size_hint().unwrap_or(0));
        while let Some(NoDuplicates(item)) = items.next_element()? {
            array.push(item);
        }
        Ok(Value::Array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = entries.next_key::<String>()? {
            match object.entry(key) {
                Entry::Vacant(slot) => {
                    let NoDuplicates(value) = entries.next_value()?;
                    slot.insert(value);
                }
                Entry::Occupied(taken) => {
                    return Err(de::Error::custom(format_args!(
                        "key `{}` is given twice in one object",
                        taken.key()
                    )));
                }
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_serde_json_reads_them() {
        let text =
            r#"{"a": [1, -2, 3.5, 1e400, "x\u00e9", null, true, {}], "b": {"c": 18446744073709551615}}"#;
        // 1e400 is out of range for both: an error either way.
        assert!(parse(text).is_err() && serde_json::from_str::<Value>(text).is_err());
        let text = r#"{"a": [1, -2, 3.5, 0.1, "x\u00e9", null, true, {}], "b": {"c": 18446744073709551615}}"#;
        assert_eq!(parse(text).ok(), serde_json::from_str::<Value>(text).ok());
        assert_eq!(
            parse_slice(text.as_bytes()).ok(),
            serde_json::from_str::<Value>(text).ok()
        );
    }

    #[test]
    fn a_key_given_twice_is_refused_at_any_depth() {
        for text in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"x": {"a": 1, "b": 0, "a": 2}}"#,
            r#"[{"ok": 1}, {"a": "x", "a": "y"}]"#,
            r#"{"a": 1, "\u0061": 2}"#,
        ] {
            let error = parse(text).expect_err(text).to_string();
            assert!(error.contains("key `a` is given twice"), "{text}: {error}");
        }
        assert!(parse(r#"{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}"#).is_ok());
    }
}
