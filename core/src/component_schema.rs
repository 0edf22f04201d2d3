//! The schema of a plugin config field that names a plugin of another kind with its config
//! (a decoder's cross-attention): checked like a slot of the spec, and self-contained, so that
//! the plugin's own schema file and the spec schema both compile offline.

use serde_json::{json, Map, Value};

use crate::registry::{PluginKind, Registry};
use crate::schema::{embed_plugin_schema, requires_fields};

/// The schema of a plugin config field that names a built-in plugin of `kind` with its config
/// (the cross-attention of a decoder): like a slot of the spec, `kind` must be a built-in name
/// and `config` must match that plugin's schema. The plugins' schemas go into `defs` (the
/// enclosing schema's `$defs`) as `plugin.<name>` ([`embed_plugin_schema`]), so that the
/// enclosing schema stays self-contained. Plugins come in the order of their names, so the
/// schema is the same whatever order they were linked in.
pub fn builtin_component_schema(
    kind: PluginKind,
    description: &str,
    defs: &mut Map<String, Value>,
) -> Value {
    let mut entries = Registry::builtin_entries_of(kind);
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut names = Vec::new();
    let mut branches = Vec::new();
    for entry in &entries {
        let target = embed_plugin_schema(defs, &entry.name, &entry.schema);
        let mut then = json!({"properties": {"config": {"$ref": target}}});
        if requires_fields(&entry.schema) {
            then["required"] = json!(["config"]);
        }
        branches.push(json!({
            "if": {"properties": {"kind": {"const": entry.name}}, "required": ["kind"]},
            "then": then,
        }));
        names.push(entry.name.clone());
    }
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
