//! `docs/openapi.json` read into what the conformance fuzzer needs: every
//! operation, its parameters, its request body and its documented responses,
//! with every `$ref` replaced by what it names.
//!
//! Written here rather than taken from a crate: the OpenAPI crates on crates.io
//! model the document in types (openapiv3, oas3) but resolve no references and
//! generate nothing, and what is needed from the document is a few fields of
//! plain JSON. Response *validation* is the `jsonschema` crate's (see
//! [`to_json_schema`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

/// Why the document cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// It could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The document's path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// It is not JSON.
    #[error("{path} is not JSON: {source}")]
    Json {
        /// The document's path.
        path: String,
        /// The error.
        source: serde_json::Error,
    },
    /// Something in it is not what OpenAPI 3.0 says (or what this fuzzer takes).
    #[error("docs/openapi.json: {0}")]
    Shape(String),
}

/// The HTTP methods an OpenAPI path item may hold.
pub const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "options", "head"];

/// One parameter of an operation.
#[derive(Debug, Clone)]
pub struct Parameter {
    /// Its name.
    pub name: String,
    /// `path` or `query` (the daemon documents no others).
    pub location: String,
    /// Whether it must be given.
    pub required: bool,
    /// Its schema, references resolved.
    pub schema: Value,
}

/// One documented response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Its content type and schema (references resolved), if it has a body.
    pub content: Option<(String, Value)>,
}

/// One operation: a method on a path.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Upper case, as sent.
    pub method: String,
    /// The path template, e.g. `/vms/{id}`.
    pub path: String,
    /// Its parameters (the path item's and its own).
    pub parameters: Vec<Parameter>,
    /// The request body's content type and schema, and whether one is required.
    pub body: Option<(String, Value, bool)>,
    /// Its responses by status code (`"200"`, …, or `"default"`).
    pub responses: BTreeMap<String, Response>,
}

impl Operation {
    /// `GET /vms/{id}`, for messages.
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The documented response for `status`: its own, or `default`.
    pub fn response(&self, status: u16) -> Option<&Response> {
        self.responses
            .get(&status.to_string())
            .or_else(|| self.responses.get("default"))
    }
}

/// The document's operations.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Every operation, in document order of paths then [`METHODS`].
    pub operations: Vec<Operation>,
}

impl Spec {
    /// Reads and resolves the document at `path`.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let document: Value = serde_json::from_str(&text).map_err(|source| SpecError::Json {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_document(&document)
    }

    /// Resolves an already parsed document.
    pub fn from_document(document: &Value) -> Result<Self, SpecError> {
        let resolved = resolve(document, document, 0)?;
        let paths = resolved
            .get("paths")
            .and_then(Value::as_object)
            .ok_or_else(|| SpecError::Shape("no `paths` object".into()))?;
        let mut operations = Vec::new();
        for (path, item) in paths {
            let item = item
                .as_object()
                .ok_or_else(|| SpecError::Shape(format!("{path} is no path item")))?;
            let shared = parameters(item.get("parameters"), path)?;
            for method in METHODS {
                let Some(operation) = item.get(*method) else {
                    continue;
                };
                let mut params = shared.clone();
                for own in parameters(operation.get("parameters"), path)? {
                    params.retain(|p| !(p.name == own.name && p.location == own.location));
                    params.push(own);
                }
                let body = match operation.get("requestBody") {
                    None => None,
                    Some(body) => {
                        let (content_type, schema) = first_content(body.get("content"))
                            .ok_or_else(|| {
                                SpecError::Shape(format!("{method} {path}: a body with no content"))
                            })?;
                        let required = body.get("required").and_then(Value::as_bool) == Some(true);
                        Some((content_type, schema, required))
                    }
                };
                let mut responses = BTreeMap::new();
                let documented = operation
                    .get("responses")
                    .and_then(Value::as_object)
                    .ok_or_else(|| SpecError::Shape(format!("{method} {path}: no responses")))?;
                for (status, response) in documented {
                    responses.insert(
                        status.clone(),
                        Response {
                            content: first_content(response.get("content")),
                        },
                    );
                }
                operations.push(Operation {
                    method: method.to_uppercase(),
                    path: path.clone(),
                    parameters: params,
                    body,
                    responses,
                });
            }
        }
        Ok(Self { operations })
    }

    /// The documented methods of `path`, upper case.
    pub fn methods_of(&self, path: &str) -> Vec<String> {
        self.operations
            .iter()
            .filter(|op| op.path == path)
            .map(|op| op.method.clone())
            .collect()
    }

    /// Every documented path, once each.
    pub fn paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = Vec::new();
        for op in &self.operations {
            if !paths.contains(&op.path) {
                paths.push(op.path.clone());
            }
        }
        paths
    }
}

fn parameters(list: Option<&Value>, path: &str) -> Result<Vec<Parameter>, SpecError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| SpecError::Shape(format!("{path}: parameters is no list")))?;
    list.iter()
        .map(|p| {
            let field = |name: &str| p.get(name).and_then(Value::as_str).map(str::to_owned);
            Ok(Parameter {
                name: field("name")
                    .ok_or_else(|| SpecError::Shape(format!("{path}: a parameter with no name")))?,
                location: field("in")
                    .ok_or_else(|| SpecError::Shape(format!("{path}: a parameter with no `in`")))?,
                required: p.get("required").and_then(Value::as_bool) == Some(true),
                schema: p.get("schema").cloned().unwrap_or(Value::Bool(true)),
            })
        })
        .collect()
}

/// A `content` map's first entry (the daemon documents one content type per body).
fn first_content(content: Option<&Value>) -> Option<(String, Value)> {
    let (content_type, media) = content?.as_object()?.iter().next()?;
    Some((
        content_type.clone(),
        media.get("schema").cloned().unwrap_or(Value::Bool(true)),
    ))
}

/// Replaces every local `$ref` (`#/…`) with a copy of what it names. The
/// daemon's schemas are not recursive; a chain deeper than 32 is refused rather
/// than followed for ever.
fn resolve(value: &Value, document: &Value, depth: usize) -> Result<Value, SpecError> {
    if depth > 32 {
        return Err(SpecError::Shape("`$ref`s nested deeper than 32".into()));
    }
    match value {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                let pointer = reference.strip_prefix('#').ok_or_else(|| {
                    SpecError::Shape(format!("{reference}: only local references are taken"))
                })?;
                let target = document
                    .pointer(pointer)
                    .ok_or_else(|| SpecError::Shape(format!("{reference} names nothing")))?;
                return resolve(target, document, depth + 1);
            }
            let mut out = Map::new();
            for (key, inner) in map {
                out.insert(key.clone(), resolve(inner, document, depth)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => items
            .iter()
            .map(|inner| resolve(inner, document, depth))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

/// An OpenAPI 3.0 schema as the JSON Schema the `jsonschema` crate validates
/// with: 3.0's `nullable: true` (which JSON Schema does not know, and would
/// ignore, so `null` would be refused) becomes "null or the schema". The other
/// 3.0-only keywords (`example`, `description`…) are annotations both ignore.
pub fn to_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, inner) in map {
                if key == "nullable" {
                    continue;
                }
                // `example`'s values are data, not schemas.
                let converted = if key == "example" || key == "default" || key == "enum" {
                    inner.clone()
                } else {
                    to_json_schema(inner)
                };
                out.insert(key.clone(), converted);
            }
            if map.get("nullable").and_then(Value::as_bool) == Some(true) {
                let mut any = Map::new();
                any.insert(
                    "anyOf".into(),
                    Value::Array(vec![
                        serde_json::json!({ "type": "null" }),
                        Value::Object(out),
                    ]),
                );
                Value::Object(any)
            } else {
                Value::Object(out)
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_resolved_and_parameters_shared() {
        let document = json!({
            "paths": { "/a/{id}": {
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "get": { "responses": { "200": { "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/A" } } } } } }
            } },
            "components": { "schemas": { "A": { "type": "object", "required": ["x"] } } }
        });
        let spec = Spec::from_document(&document).expect("a usable document");
        let op = &spec.operations[0];
        assert_eq!(op.name(), "GET /a/{id}");
        assert_eq!(op.parameters[0].name, "id");
        let (content_type, schema) = op.response(200).and_then(|r| r.content.clone()).unwrap();
        assert_eq!(content_type, "application/json");
        assert_eq!(schema, json!({ "type": "object", "required": ["x"] }));
    }

    #[test]
    fn a_reference_to_nothing_is_an_error() {
        let document = json!({ "paths": { "/a": { "get": { "responses": { "200": {
            "content": { "application/json": { "schema": { "$ref": "#/nowhere" } } } } } } } } });
        assert!(matches!(
            Spec::from_document(&document),
            Err(SpecError::Shape(m)) if m.contains("#/nowhere")
        ));
    }

    #[test]
    fn nullable_admits_null_and_still_checks_the_rest() {
        let schema = to_json_schema(&json!({ "type": "string", "nullable": true }));
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        assert!(validator.is_valid(&json!(null)));
        assert!(validator.is_valid(&json!("x")));
        assert!(!validator.is_valid(&json!(1)));
    }
}
