//! The schema of a plugin config field that names a plugin of another kind with its config
//! (a decoder's cross-attention): checked like a slot of the spec, and self-contained, so that
//! the plugin's own schema file and the spec schema both compile offline.

use serde_json::{json, Map, Value};

use crate::registry::{PluginKind, Registry};
use crate::schema::requires_fields;

/// The schema of a plugin config field that names a built-in plugin of `kind` with its config
/// (the cross-attention of a decoder): like a slot of the spec, `kind` must be a built-in name
/// and `config` must match that plugin's schema. The plugins' schemas go into `defs` (the
/// enclosing schema's `$defs`) as `plugin.<name>`, their own `$defs` beside them as
/// `plugin.<name>.<def>`, so that the enclosing schema stays self-contained.
pub fn builtin_component_schema(
    kind: PluginKind,
    description: &str,
    defs: &mut Map<String, Value>,
) -> Value {
    let entries = Registry::builtin_entries_of(kind);
    let mut names = Vec::new();
    let mut branches = Vec::new();
    for entry in &entries {
        let prefix = format!("plugin.{}", entry.name);
        let mut schema = match &entry.schema {
            Value::Object(schema) => schema.clone(),
            _ => Map::new(),
        };
        for key in ["$schema", "$id", "title"] {
            schema.shift_remove(key);
        }
        if let Some(Value::Object(own)) = schema.shift_remove("$defs") {
            for (name, mut def) in own {
                prefix_refs(&mut def, &prefix);
                defs.insert(format!("{prefix}.{name}"), def);
            }
        }
        let mut schema = Value::Object(schema);
        prefix_refs(&mut schema, &prefix);
        defs.insert(prefix.clone(), schema);
        let mut then = json!({"properties": {"config": {"$ref": format!("#/$defs/{prefix}")}}});
        if requires_fields(&entry.schema) {
            then["required"] = json!(["config"]);
        }
        branches.push(json!({
            "if": {"properties": {"kind": {"const": entry.name}}, "required": ["kind"]},
            "then": then,
        }));
        names.push(entry.name.clone());
    }
    names.sort();
    json!({
        "description": description,
        "type": "object",
        "required": ["kind"],
        "additionalProperties": false,
        "properties": {
            "kind": {
                "description": format!("A built-in {kind} plugin's name (`vaezoo plugins` lists them)."),
                "enum": names,
            },
            "config": {
                "description": "The plugin's config, checked against that plugin's own schema.",
                "type": "object",
                "default": {},
            },
        },
        "allOf": branches,
    })
}

/// Rewrites every local `#/$defs/<name>` ref inside `schema` to `#/$defs/<prefix>.<name>`.
fn prefix_refs(schema: &mut Value, prefix: &str) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    Value::String(r) if key == "$ref" => {
                        if let Some(name) = r.strip_prefix("#/$defs/") {
                            *r = format!("#/$defs/{prefix}.{name}");
                        }
                    }
                    other => prefix_refs(other, prefix),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| prefix_refs(v, prefix)),
        _ => {}
    }
}
