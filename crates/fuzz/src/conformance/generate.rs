//! Values drawn from an OpenAPI schema: ones the schema admits ([`valid`]) and
//! ones it refuses ([`invalid`]), as schemathesis's positive and negative
//! phases draw them. Every draw comes from one seeded generator, so a seed
//! replays a campaign exactly.
//!
//! What is taken: `type` (object, array, string, integer, number, boolean),
//! `required`, `properties`, `additionalProperties: false`, `minProperties`,
//! `enum`, `minimum`/`maximum`, `minLength`/`maxLength`, `oneOf` of `required`
//! lists (as `CreateRequest` has), `allOf`, `nullable`. `pattern` and `format`
//! are not: the document has none, and [`unsupported`] lists a schema that
//! would need them so the campaign says so instead of ignoring it.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::{json, Map, Number, Value};

/// Values the schema cannot describe but the daemon needs to get past its
/// first checks, by property or parameter name: a file that exists, a memory
/// size it parses, an id it knows. Drawn with the odds `odds` for a property
/// of that name; otherwise the schema decides alone. High odds make requests
/// that get far (a VM created); low ones explore.
#[derive(Debug, Clone)]
pub struct Hints {
    /// The values, by name.
    pub values: BTreeMap<String, Vec<Value>>,
    /// How often a hinted property takes a hint, from 0 to 1.
    pub odds: f64,
    /// How often an optional property is present, from 0 to 1.
    pub optional: f64,
    /// Values that get a request refused (a directory for a file, a relative
    /// path), by name: drawn like `values` while exploring, never while
    /// [`Hints::plausible`].
    pub traps: BTreeMap<String, Vec<Value>>,
    /// Optional properties the daemon takes only beside another (a Linux
    /// program's `args` beside `rootfs`), which the schema does not say: while
    /// plausible, one is left out unless the other is required.
    pub only_with: BTreeMap<String, String>,
    /// Whether the request is to get far: hints only, no traps.
    pub plausible: bool,
}

impl Default for Hints {
    fn default() -> Self {
        Self {
            values: BTreeMap::new(),
            odds: 0.5,
            optional: 0.5,
            traps: BTreeMap::new(),
            only_with: BTreeMap::new(),
            plausible: false,
        }
    }
}

/// Keywords of a schema this generator does not honour, if any (anywhere in it).
pub fn unsupported(schema: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk(schema, &mut |map| {
        for key in ["pattern", "format", "not", "anyOf", "patternProperties"] {
            if map.contains_key(key) && !found.iter().any(|f| f == key) {
                found.push(key.to_owned());
            }
        }
    });
    found
}

fn walk(schema: &Value, visit: &mut impl FnMut(&Map<String, Value>)) {
    match schema {
        Value::Object(map) => {
            visit(map);
            for (key, inner) in map {
                if !matches!(key.as_str(), "example" | "default" | "enum") {
                    walk(inner, visit);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| walk(i, visit)),
        _ => {}
    }
}

/// Strings that break naive code: empty, long, NUL, control characters,
/// non-ASCII, path tricks, format specifiers.
const NASTY_STRINGS: &[&str] = &[
    "",
    "\0",
    "a\0b",
    "/",
    "..",
    "../../../../etc/passwd",
    "/dev/zero",
    "/proc/self/mem",
    "%s%n%x",
    "\u{202e}gnp.exe",
    "ü€𝄞",
    "\u{fffd}\u{feff}",
    "\r\n\r\nHTTP/1.1 200 OK",
    "tap=",
    "tap=lvmfuzz0,mac=zz",
    "9999999999999999999999G",
    "-1M",
];

/// Numbers at and past the edges of every integer type the daemon might use.
fn boundary_numbers() -> Vec<Value> {
    vec![
        json!(0),
        json!(-1),
        json!(1),
        json!(i32::MAX),
        json!(i64::from(i32::MAX) + 1),
        json!(u32::MAX),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1.5),
        json!(-0.0),
        json!(1e300),
    ]
}

/// A string: short, unicode, nasty, or long.
pub fn string(rng: &mut StdRng) -> String {
    match rng.random_range(0..10) {
        0..=3 => {
            let len = rng.random_range(0..12);
            (0..len)
                .map(|_| char::from(rng.random_range(b' '..=b'~')))
                .collect()
        }
        4..=5 => NASTY_STRINGS.choose(rng).copied().unwrap_or("").to_owned(),
        6 => {
            let len = rng.random_range(1..8);
            (0..len)
                .map(|_| char::from_u32(rng.random_range(0x80..0x2_0000)).unwrap_or('\u{fffd}'))
                .collect()
        }
        // Long, within what a request line may hold (hyper: 64 KiB).
        7 => "a".repeat(rng.random_range(256..16_000)),
        8 => format!("/{}", string_short(rng)),
        _ => format!("{}M", rng.random_range(0..4096)),
    }
}

fn string_short(rng: &mut StdRng) -> String {
    let len = rng.random_range(1..10);
    (0..len)
        .map(|_| char::from(rng.random_range(b'a'..=b'z')))
        .collect()
}

fn integer(rng: &mut StdRng, schema: &Value) -> Value {
    let min = schema.get("minimum").and_then(Value::as_i64);
    let max = schema.get("maximum").and_then(Value::as_i64);
    let low = min.unwrap_or(-1000);
    let high = max.unwrap_or(low.saturating_add(64).max(64));
    let candidates = [
        min.map(|m| json!(m)),
        min.map(|m| json!(m.saturating_add(1))),
        max.map(|m| json!(m)),
        Some(json!(rng.random_range(low..=high))),
        Some(json!(rng.random_range(low.max(0)..=low.max(0) + 8))),
        max.is_none().then(|| json!(i64::MAX)),
        max.is_none().then(|| json!(u64::MAX)),
        max.is_none()
            .then(|| json!(rng.random_range(low.max(0)..=u32::MAX.into()))),
    ];
    let present: Vec<Value> = candidates.into_iter().flatten().collect();
    present.choose(rng).cloned().unwrap_or(json!(0))
}

fn type_of(schema: &Value) -> Option<&str> {
    schema.get("type").and_then(Value::as_str)
}

/// A value `schema` admits. `name` is the property or parameter it is for, to
/// draw from `hints`.
pub fn valid(rng: &mut StdRng, schema: &Value, name: Option<&str>, hints: &Hints) -> Value {
    if let Some(name) = name {
        let mut hinted: Vec<&Value> = hints.values.get(name).into_iter().flatten().collect();
        if !hints.plausible {
            hinted.extend(hints.traps.get(name).into_iter().flatten());
        }
        if !hinted.is_empty() && rng.random_bool(hints.odds.clamp(0.0, 1.0)) {
            if let Some(value) = hinted.choose(rng) {
                return (*value).clone();
            }
        }
    }
    if schema.get("nullable").and_then(Value::as_bool) == Some(true) && rng.random_bool(0.2) {
        return Value::Null;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if let Some(choice) = options.choose(rng) {
            return choice.clone();
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        // The daemon's allOfs wrap one schema (to make a reference nullable).
        if let Some(first) = all.first() {
            return valid(rng, first, name, hints);
        }
    }
    match type_of(schema) {
        Some("object") => object(rng, schema, hints),
        Some("array") => {
            let len = rng.random_range(0..4);
            let items = schema.get("items").cloned().unwrap_or(Value::Bool(true));
            Value::Array((0..len).map(|_| valid(rng, &items, None, hints)).collect())
        }
        Some("string") => {
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0);
            let max = schema.get("maxLength").and_then(Value::as_u64);
            let mut s = string(rng);
            while (s.chars().count() as u64) < min {
                s.push('a');
            }
            if let Some(max) = max.and_then(|m| usize::try_from(m).ok()) {
                s = s.chars().take(max).collect();
            }
            Value::String(s)
        }
        Some("integer") => integer(rng, schema),
        Some("number") => Value::Number(
            Number::from_f64(rng.random_range(-1e6..1e6)).unwrap_or_else(|| Number::from(0)),
        ),
        Some("boolean") => Value::Bool(rng.random_bool(0.5)),
        _ => Value::Null,
    }
}

/// An object: the required properties (of one `oneOf` branch, if any), each
/// optional one with even odds — leaving out those another branch requires, so
/// the object matches exactly one branch — and more while under `minProperties`.
fn object(rng: &mut StdRng, schema: &Value, hints: &Hints) -> Value {
    let names = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut required = names(schema.get("required"));
    let mut excluded = Vec::new();
    if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
        if !branches.is_empty() {
            let chosen = rng.random_range(0..branches.len());
            for (i, branch) in branches.iter().enumerate() {
                let of_branch = names(branch.get("required"));
                if i == chosen {
                    required.extend(of_branch);
                } else {
                    excluded.extend(of_branch);
                }
            }
        }
    }
    excluded.retain(|name| !required.contains(name));
    let empty = Map::new();
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let min = schema
        .get("minProperties")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut out = Map::new();
    for (name, property) in properties {
        if excluded.contains(name) {
            continue;
        }
        let companion_missing = hints.plausible
            && hints
                .only_with
                .get(name)
                .is_some_and(|companion| !required.contains(companion));
        if required.contains(name)
            || (!companion_missing && rng.random_bool(hints.optional.clamp(0.0, 1.0)))
        {
            out.insert(name.clone(), valid(rng, property, Some(name), hints));
        }
    }
    for (name, property) in properties {
        if out.len() as u64 >= min {
            break;
        }
        if !excluded.contains(name) && !out.contains_key(name) {
            out.insert(name.clone(), valid(rng, property, Some(name), hints));
        }
    }
    Value::Object(out)
}

/// A value `schema` does not admit, and what was done to make it so. The caller
/// confirms with a validator that it really is refused (some changes can land
/// on a value that happens to be admitted).
pub fn invalid(rng: &mut StdRng, schema: &Value, hints: &Hints) -> (Value, String) {
    let base = valid(rng, schema, None, hints);
    let is_object = type_of(schema) == Some("object");
    match (is_object, rng.random_range(0..7)) {
        (true, 0) => {
            let mut required: Vec<String> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
                for branch in branches {
                    if let Some(names) = branch.get("required").and_then(Value::as_array) {
                        required.extend(names.iter().filter_map(Value::as_str).map(str::to_owned));
                    }
                }
            }
            let mut object = base.as_object().cloned().unwrap_or_default();
            let present: Vec<String> = required
                .into_iter()
                .filter(|r| object.contains_key(r))
                .collect();
            match present.choose(rng) {
                Some(name) => {
                    object.remove(name);
                    (Value::Object(object), format!("required `{name}` left out"))
                }
                None => (json!({}), "an empty object".to_owned()),
            }
        }
        (true, 1) => {
            let mut object = base.as_object().cloned().unwrap_or_default();
            let name = ["unknown", "imagee", "IMAGE", "size ", "__proto__", ""]
                .choose(rng)
                .copied()
                .unwrap_or("unknown");
            object.insert(
                name.to_owned(),
                valid(rng, &json!({"type": "string"}), None, hints),
            );
            (Value::Object(object), format!("unknown field {name:?}"))
        }
        (true, 2 | 3) => {
            let mut object = base.as_object().cloned().unwrap_or_default();
            let properties: Vec<(String, Value)> = schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            match properties.choose(rng) {
                Some((name, property)) => {
                    let (bad, how) = wrong_value(rng, property);
                    object.insert(name.clone(), bad);
                    (Value::Object(object), format!("`{name}`: {how}"))
                }
                None => (json!([]), "an array for an object".to_owned()),
            }
        }
        (true, 4) => {
            let dup = rng.random_range(2..6);
            let many: Map<String, Value> =
                (0..dup).map(|i| (format!("field{i}"), json!(i))).collect();
            (Value::Object(many), "only unknown fields".to_owned())
        }
        _ => wrong_value(rng, schema),
    }
}

/// A value of the wrong type for `schema`, or out of its bounds or enum.
fn wrong_value(rng: &mut StdRng, schema: &Value) -> (Value, String) {
    if let Some(min) = schema.get("minimum").and_then(Value::as_i64) {
        if rng.random_bool(0.4) {
            let below = min.saturating_sub(rng.random_range(1..3));
            return (json!(below), format!("{below}, below the minimum {min}"));
        }
    }
    if schema.get("enum").is_some() && rng.random_bool(0.4) {
        return (
            json!("not-in-the-enum"),
            "a value not in the enum".to_owned(),
        );
    }
    let wrong_types: Vec<(Value, &str)> = match type_of(schema) {
        Some("string") => vec![
            (json!(1), "a number for a string"),
            (json!(null), "null for a string"),
            (json!(["a"]), "an array for a string"),
            (json!({"a": 1}), "an object for a string"),
            (json!(true), "a boolean for a string"),
        ],
        Some("integer") => {
            let mut v: Vec<(Value, &str)> = vec![
                (json!("1"), "a string for an integer"),
                (json!(1.5), "a fraction for an integer"),
                (json!(null), "null for an integer"),
                (json!(1e300), "1e300 for an integer"),
                (json!(true), "a boolean for an integer"),
            ];
            if schema.get("minimum").and_then(Value::as_i64) == Some(0) {
                v.push((json!(i64::MIN), "i64::MIN, below the minimum"));
            }
            v
        }
        Some("boolean") => vec![
            (json!("true"), "a string for a boolean"),
            (json!(1), "a number for a boolean"),
            (json!(null), "null for a boolean"),
        ],
        Some("array") => vec![
            (json!("a"), "a string for an array"),
            (json!({}), "an object for an array"),
            (json!([1, 2]), "numbers for strings in an array"),
            (json!([null]), "null in an array"),
        ],
        Some("object") => vec![
            (json!([]), "an array for an object"),
            (json!("{}"), "a string for an object"),
            (json!(null), "null for an object"),
            (json!(7), "a number for an object"),
        ],
        _ => vec![(json!(null), "null")],
    };
    let (value, how) = wrong_types
        .choose(rng)
        .cloned()
        .unwrap_or((json!(null), "null"));
    (value, how.to_owned())
}

/// A number at an edge, written as JSON text (some are past what an f64 or a
/// u64 holds, which only text can say).
pub fn raw_number(rng: &mut StdRng) -> String {
    let mut all: Vec<String> = boundary_numbers().iter().map(Value::to_string).collect();
    all.extend(
        [
            "18446744073709551616",
            "-9223372036854775809",
            "1e400",
            "-1e400",
            "1E2",
            "0.0000000000000000000000001",
            "123456789012345678901234567890",
        ]
        .map(str::to_owned),
    );
    all.choose(rng).cloned().unwrap_or_else(|| "0".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn create_request() -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "oneOf": [{ "required": ["image"] }, { "required": ["rootfs", "program"] }],
            "properties": {
                "image": { "type": "string" },
                "rootfs": { "type": "string" },
                "program": { "type": "string" },
                "timeout_ms": { "type": "integer", "minimum": 1 },
                "trace_syscalls": { "type": "boolean" }
            }
        })
    }

    #[test]
    fn valid_values_are_admitted_and_invalid_ones_mostly_refused() {
        let schema = create_request();
        let validator = jsonschema::validator_for(&schema).expect("a schema");
        let mut rng = StdRng::seed_from_u64(7);
        let hints = Hints::default();
        let mut refused = 0;
        for _ in 0..500 {
            let value = valid(&mut rng, &schema, None, &hints);
            assert!(validator.is_valid(&value), "refused: {value}");
            let (bad, how) = invalid(&mut rng, &schema, &hints);
            refused += usize::from(!validator.is_valid(&bad));
            let _ = how;
        }
        assert!(
            refused > 400,
            "only {refused} of 500 invalid values refused"
        );
    }

    #[test]
    fn the_same_seed_draws_the_same_values() {
        let schema = create_request();
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..20)
                .map(|_| valid(&mut rng, &schema, None, &Hints::default()))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn a_pattern_is_reported_as_unsupported() {
        let schema = json!({ "properties": { "a": { "type": "string", "pattern": "^x$" } } });
        assert_eq!(unsupported(&schema), vec!["pattern".to_owned()]);
        assert!(unsupported(&create_request()).is_empty());
    }
}
