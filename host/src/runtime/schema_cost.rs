//! A bound, checked at load, on the work of validating params against a connector's schema.
//!
//! The schema library evaluates every subschema that applies at a place in the params, and a
//! `$ref` is evaluated anew each time it is reached: a few KiB of schema whose levels each refer
//! to the next three times (`allOf: [$ref, $ref, $ref]`) cost 3^levels evaluations for `{}`,
//! on the thread serving requests. So before a schema is used, the host works out how many
//! subschemas can apply at any one place in params of any shape, and refuses the schema if that
//! is more than [`MAX_SUBSCHEMAS_PER_PLACE`].
//!
//! The count follows the keywords that apply a subschema at the same place (`allOf`, `anyOf`,
//! `oneOf`, `not`, `if`/`then`/`else`, `dependentSchemas`, `$ref`) and, one level of params
//! deeper at a time, those that apply one to a member or item (`properties` to the member of
//! its name; `items`, `additionalProperties` and the like to any). At each depth it keeps, for
//! every subschema, the most times it applies at any one place of that depth, which is at least
//! what any one path through the params meets; so a recursive schema that follows the params
//! down (a tree of comments) passes, and one whose recursion multiplies at each level does not.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Most subschemas that may apply at one place in the params. Real schemas apply a handful,
/// a large union a few dozen; validating 1 MiB of params stays bounded at this many per value.
pub(crate) const MAX_SUBSCHEMAS_PER_PLACE: u64 = 1_000;

/// Deepest params checked: `serde_json` refuses deeper JSON before any validation.
const DEEPEST_PARAMS: usize = 128;

/// A subschema, by its JSON pointer in the schema document (`""` is the whole schema).
type Pointer = String;

/// How many times each subschema applies at one place.
type Applied = BTreeMap<Pointer, u64>;

/// Why `schema` would cost too much to validate params against, if it would.
pub(crate) fn excessive(schema: &Value) -> Option<String> {
    if let Some(at) = embedded_id(schema, "") {
        return Some(format!(
            "`#{at}` has an `$id`: give `$id` only at the top (refs are read as `#/…` within the \
             one document)"
        ));
    }
    let mut graph = Graph {
        root: schema,
        closures: HashMap::new(),
        expanding: HashSet::new(),
    };
    graph.check().err()
}

/// Where below the top `schema` (at `pointer`) names a document of its own (`$id`, or draft
/// 4's `id`), if it does: refs within such a part are relative to it, not to the schema the
/// count follows. Values that are data, not schemas (`const`, `enum`, `default`, `examples`),
/// are not looked into; a property named `id` has a schema, not a string, as its value.
fn embedded_id(schema: &Value, pointer: &str) -> Option<String> {
    match schema {
        Value::Object(members) => {
            if !pointer.is_empty()
                && ["$id", "id"]
                    .iter()
                    .any(|name| members.get(*name).is_some_and(Value::is_string))
            {
                return Some(pointer.to_owned());
            }
            members
                .iter()
                .filter(|(name, _)| !["const", "enum", "default", "examples"].contains(&name.as_str()))
                .find_map(|(name, value)| embedded_id(value, &format!("{pointer}/{}", escape(name))))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| embedded_id(item, &format!("{pointer}/{i}"))),
        _ => None,
    }
}

struct Graph<'a> {
    root: &'a Value,
    /// Memoised: every subschema that applies at the same place as a given one (itself
    /// included), with multiplicity.
    closures: HashMap<Pointer, Applied>,
    /// Subschemas whose closure is being worked out (a `$ref` back to one never ends).
    expanding: HashSet<Pointer>,
}

impl Graph<'_> {
    fn check(&mut self) -> Result<(), String> {
        let mut place = self.closure(String::new())?.clone();
        for _ in 0..DEEPEST_PARAMS {
            let deeper = self.one_level_deeper(&place)?;
            if deeper.is_empty() || deeper == place {
                return Ok(());
            }
            place = deeper;
        }
        Ok(())
    }

    /// What applies at the worst place one level below a place where `applied` applies: for
    /// each subschema, the most times it applies at any one member or item.
    fn one_level_deeper(&mut self, applied: &Applied) -> Result<Applied, String> {
        let mut members: BTreeMap<String, Applied> = BTreeMap::new();
        let mut any_member = Applied::new();
        let mut any_item = Applied::new();
        for (pointer, times) in applied {
            let node = self.node(pointer)?;
            let below = descending(node, pointer);
            for (name, child) in below.named_members {
                add(members.entry(name).or_default(), child, *times);
            }
            for child in below.any_member {
                add(&mut any_member, child, *times);
            }
            for child in below.any_item {
                add(&mut any_item, child, *times);
            }
        }
        // Every member gets the keywords for any member; one matched by no `properties`
        // entry gets only those. An item is a place of its own: params are an object or an
        // array there, not both.
        let mut places: Vec<Applied> = members
            .into_values()
            .map(|mut named| {
                for (child, times) in &any_member {
                    add(&mut named, child.clone(), *times);
                }
                named
            })
            .collect();
        places.extend([any_member, any_item]);
        let mut deeper = Applied::new();
        for children in places {
            let place = self.expand(&children)?;
            for (pointer, times) in place {
                let kept = deeper.entry(pointer).or_default();
                *kept = (*kept).max(times);
            }
        }
        total_within_bound(&deeper)?;
        Ok(deeper)
    }

    /// Everything that applies where `children` are applied.
    fn expand(&mut self, children: &Applied) -> Result<Applied, String> {
        let mut place = Applied::new();
        for (child, times) in children {
            for (pointer, inner) in self.closure(child.clone())?.clone() {
                add(&mut place, pointer, inner.saturating_mul(*times));
            }
        }
        total_within_bound(&place)?;
        Ok(place)
    }

    /// Every subschema applied at the same place when `pointer` is, itself included.
    fn closure(&mut self, pointer: Pointer) -> Result<&Applied, String> {
        if !self.closures.contains_key(&pointer) {
            if !self.expanding.insert(pointer.clone()) {
                return Err(format!(
                    "`#{pointer}` applies itself at the same place in the params (through \
                     `$ref`, `allOf` or the like): validating it would never end"
                ));
            }
            let node = self.node(&pointer)?;
            let mut applied = Applied::from([(pointer.clone(), 1)]);
            for child in self.same_place(node, &pointer)? {
                for (inner, times) in self.closure(child)?.clone() {
                    add(&mut applied, inner, times);
                }
            }
            total_within_bound(&applied)?;
            self.expanding.remove(&pointer);
            self.closures.insert(pointer.clone(), applied);
        }
        Ok(&self.closures[&pointer])
    }

    fn node(&self, pointer: &str) -> Result<&Value, String> {
        self.root
            .pointer(pointer)
            .ok_or_else(|| format!("`$ref` `#{pointer}` points at nothing in the schema"))
    }

    /// The subschemas `node` (at `pointer`) applies at its own place, `$ref`s resolved.
    fn same_place(&self, node: &Value, pointer: &str) -> Result<Vec<Pointer>, String> {
        let Value::Object(keywords) = node else {
            return Ok(Vec::new());
        };
        if let Some(name) = ["$dynamicRef", "$recursiveRef"]
            .into_iter()
            .find(|name| keywords.contains_key(*name))
        {
            return Err(format!(
                "`#{pointer}` uses `{name}`: refer to subschemas as `#/$defs/…` instead"
            ));
        }
        let mut applied = Vec::new();
        if let Some(target) = keywords.get("$ref") {
            applied.push(resolve(target, pointer)?);
        }
        for name in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(schemas)) = keywords.get(name) {
                applied.extend((0..schemas.len()).map(|i| format!("{pointer}/{name}/{i}")));
            }
        }
        for name in ["not", "if", "then", "else"] {
            if keywords.contains_key(name) {
                applied.push(format!("{pointer}/{name}"));
            }
        }
        for name in ["dependentSchemas", "dependencies"] {
            if let Some(Value::Object(schemas)) = keywords.get(name) {
                applied.extend(
                    schemas
                        .iter()
                        // `dependencies` also takes lists of property names, which are no schemas.
                        .filter(|(_, schema)| schema.is_object() || schema.is_boolean())
                        .map(|(member, _)| format!("{pointer}/{name}/{}", escape(member))),
                );
            }
        }
        Ok(applied)
    }
}

/// What a subschema applies one level down in the params.
#[derive(Default)]
struct Below {
    /// To the member of this name (`properties`).
    named_members: Vec<(String, Pointer)>,
    /// To any member (`additionalProperties`, every `patternProperties` entry, …: counted as
    /// if all applied, which is at least what does).
    any_member: Vec<Pointer>,
    /// To any item (`items`, every `prefixItems` entry, `contains`, …).
    any_item: Vec<Pointer>,
}

/// The subschemas `node` (at `pointer`) applies one level down.
fn descending(node: &Value, pointer: &str) -> Below {
    let Value::Object(keywords) = node else {
        return Below::default();
    };
    let keyword = |name: &str| keywords.contains_key(name).then(|| format!("{pointer}/{name}"));
    let named_members = match keywords.get("properties") {
        Some(Value::Object(properties)) => properties
            .keys()
            .map(|name| (name.clone(), format!("{pointer}/properties/{}", escape(name))))
            .collect(),
        _ => Vec::new(),
    };
    let mut any_member: Vec<Pointer> = ["additionalProperties", "unevaluatedProperties", "propertyNames"]
        .into_iter()
        .filter_map(keyword)
        .collect();
    any_member.extend(each_schema(keywords, "patternProperties", pointer));
    let mut any_item: Vec<Pointer> = ["additionalItems", "unevaluatedItems", "contains"]
        .into_iter()
        .filter_map(keyword)
        .collect();
    any_item.extend(each_schema(keywords, "prefixItems", pointer));
    match keywords.get("items") {
        Some(Value::Array(_)) => any_item.extend(each_schema(keywords, "items", pointer)),
        Some(_) => any_item.push(format!("{pointer}/items")),
        None => {}
    }
    Below {
        named_members,
        any_member,
        any_item,
    }
}

/// The pointers of the subschemas an object- or array-valued keyword holds.
fn each_schema(keywords: &Map<String, Value>, name: &str, pointer: &str) -> Vec<Pointer> {
    match keywords.get(name) {
        Some(Value::Object(schemas)) => schemas
            .keys()
            .map(|key| format!("{pointer}/{name}/{}", escape(key)))
            .collect(),
        Some(Value::Array(schemas)) => (0..schemas.len())
            .map(|i| format!("{pointer}/{name}/{i}"))
            .collect(),
        _ => Vec::new(),
    }
}

/// The pointer a `$ref` (at `pointer`) names: only `#` and `#/…` within the document, which is
/// all the host resolves (remote refs are refused when the schema is built).
fn resolve(target: &Value, pointer: &str) -> Result<Pointer, String> {
    let reference = target.as_str().unwrap_or_default();
    match reference.strip_prefix('#') {
        Some(fragment) if (fragment.is_empty() || fragment.starts_with('/')) && !fragment.contains('%') => {
            Ok(fragment.to_owned())
        }
        _ => Err(format!(
            "`$ref` `{}` at `#{pointer}` is not a `#/…` pointer within the schema (remote and \
             file `$ref`s are never fetched: put the schema under `$defs` and refer to it as \
             `#/$defs/…`; anchors and percent-encoded pointers are not followed)",
            reference.escape_default()
        )),
    }
}

/// A member name as one JSON pointer token.
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn add(applied: &mut Applied, pointer: Pointer, times: u64) {
    let count = applied.entry(pointer).or_default();
    *count = count.saturating_add(times);
}

fn total_within_bound(applied: &Applied) -> Result<(), String> {
    let total = applied
        .values()
        .fold(0u64, |sum, times| sum.saturating_add(*times));
    if total > MAX_SUBSCHEMAS_PER_PLACE {
        return Err(format!(
            "validating params against it could apply more than {MAX_SUBSCHEMAS_PER_PLACE} \
             subschemas at one place (each `$ref` is evaluated anew wherever it is reached, so \
             refs that each reach the next several times multiply): refer to each subschema \
             once per level"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `levels` definitions, each applying the one below `fan_out` times at the same place.
    fn multiplying(levels: usize, fan_out: usize) -> Value {
        let mut defs = Map::new();
        defs.insert("l0".into(), json!({"type": "object"}));
        for level in 1..=levels {
            let refs: Vec<Value> = (0..fan_out)
                .map(|_| json!({"$ref": format!("#/$defs/l{}", level - 1)}))
                .collect();
            defs.insert(format!("l{level}"), json!({"allOf": refs}));
        }
        json!({"$defs": defs, "$ref": format!("#/$defs/l{levels}")})
    }

    #[test]
    fn refs_that_multiply_at_one_place_are_refused() {
        assert_eq!(excessive(&multiplying(5, 3)), None, "3^5 = 243 applied");
        let refused = excessive(&multiplying(24, 3)).expect("3^24 is refused");
        assert!(refused.contains("more than 1000 subschemas"), "{refused}");
        // The validator agrees that the small one is cheap (and it is what the params get).
        let validator = jsonschema::validator_for(&multiplying(5, 3)).expect("schema");
        assert!(validator.is_valid(&json!({})));
    }

    #[test]
    fn recursion_that_multiplies_with_depth_is_refused() {
        // Each level of `a` applies the whole schema three times again.
        let schema = json!({
            "type": "object",
            "properties": {"a": {"allOf": [{"$ref": "#"}, {"$ref": "#"}, {"$ref": "#"}]}}
        });
        assert!(excessive(&schema).is_some());
    }

    #[test]
    fn ordinary_schemas_pass() {
        let github_like = json!({
            "type": "object",
            "required": ["owner", "repo"],
            "properties": {
                "owner": {"type": "string", "pattern": "^[A-Za-z0-9-]+$"},
                "repo": {"type": "string"},
                "labels": {"type": "array", "items": {"type": "string"}},
                "state": {"enum": ["open", "closed"]},
                "body": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "filter": {"oneOf": [{"$ref": "#/$defs/range"}, {"$ref": "#/$defs/range"}]},
            },
            "$defs": {"range": {"type": "object", "properties": {"from": {"type": "integer"}}}},
            "if": {"properties": {"state": {"const": "closed"}}},
            "then": {"required": ["body"]},
        });
        assert_eq!(excessive(&github_like), None);
        // Data and property names that read like keywords are data and names.
        let named_like_keywords = json!({
            "$id": "https://example.com/params",
            "properties": {"id": {"type": "string"}, "$id": {"type": "string"}},
            "default": {"id": "x"},
            "examples": [{"$id": "y"}],
        });
        assert_eq!(excessive(&named_like_keywords), None);
        // A tree: recursion that follows the params down, one subschema per level.
        let tree = json!({
            "$defs": {"node": {
                "type": "object",
                "properties": {
                    "left": {"$ref": "#/$defs/node"},
                    "right": {"$ref": "#/$defs/node"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
            }},
            "$ref": "#/$defs/node",
        });
        assert_eq!(excessive(&tree), None);
    }

    #[test]
    fn refs_the_count_cannot_follow_are_refused_by_name() {
        for (schema, says) in [
            (json!({"$ref": "#"}), "never end"),
            (json!({"allOf": [{"$ref": "#/allOf/0"}]}), "never end"),
            (json!({"$ref": "#/$defs/missing"}), "points at nothing"),
            (json!({"$ref": "other.json#/a"}), "not a `#/…` pointer"),
            (
                json!({"$defs": {"a": {"$anchor": "a"}}, "$ref": "#a"}),
                "not a `#/…` pointer",
            ),
            (
                json!({"$defs": {"a": {"$recursiveRef": "#"}}, "$ref": "#/$defs/a"}),
                "`$recursiveRef`",
            ),
            // Refs inside a part with its own `$id` are relative to it, even when unused.
            (json!({"$defs": {"a": {"$id": "urn:a"}}}), "`$id`"),
        ] {
            let refused = excessive(&schema).unwrap_or_default();
            assert!(refused.contains(says), "{schema}: {refused}");
        }
    }
}
