//! JSON Schemas of the document kinds, generated from the Rust types with `schemars`.
//!
//! The committed copies live in `policies/schema/<kind>.schema.json`; `govmx policy schema`
//! rewrites them and a test fails when they are stale.

use schemars::{JsonSchema, SchemaGenerator};

use crate::model::{
    API_VERSION, Agencies, ContactRules, FederationList, Kind, MediaRules, TrustAnchors,
};

/// The schema file name of `kind`, e.g. `federation-list.schema.json`.
pub fn file_name(kind: Kind) -> String {
    let mut name = String::new();
    for (i, c) in kind.as_str().chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('-');
        }
        name.push(c.to_ascii_lowercase());
    }
    format!("{name}.schema.json")
}

/// The JSON Schema of `kind`, with `apiVersion` and `kind` pinned to their constants.
pub fn schema(kind: Kind) -> serde_json::Value {
    fn root<T: JsonSchema>() -> serde_json::Value {
        let schema = SchemaGenerator::default().into_root_schema_for::<T>();
        serde_json::to_value(schema).unwrap_or_default()
    }
    let mut value = match kind {
        Kind::FederationList => root::<FederationList>(),
        Kind::ContactRules => root::<ContactRules>(),
        Kind::MediaRules => root::<MediaRules>(),
        Kind::Agencies => root::<Agencies>(),
        Kind::TrustAnchors => root::<TrustAnchors>(),
    };
    if let Some(properties) = value.get_mut("properties").and_then(|p| p.as_object_mut()) {
        properties.insert(
            "apiVersion".to_owned(),
            serde_json::json!({ "const": API_VERSION }),
        );
        properties.insert(
            "kind".to_owned(),
            serde_json::json!({ "const": kind.as_str() }),
        );
    }
    value
}

/// Every schema file: (file name, pretty JSON with a trailing newline).
pub fn files() -> Vec<(String, String)> {
    Kind::ALL
        .into_iter()
        .map(|kind| {
            let mut text = serde_json::to_string_pretty(&schema(kind)).unwrap_or_default();
            text.push('\n');
            (file_name(kind), text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed schemas must match the types.
    #[test]
    fn committed_schemas_are_fresh() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/schema");
        for (name, text) in files() {
            let path = format!("{dir}/{name}");
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == text,
                "{path} is stale or missing; regenerate with `cargo run -p govmx -- policy schema --out policies/schema`"
            );
        }
    }

    #[test]
    fn file_names() {
        assert_eq!(
            file_name(Kind::FederationList),
            "federation-list.schema.json"
        );
        assert_eq!(file_name(Kind::Agencies), "agencies.schema.json");
    }
}
