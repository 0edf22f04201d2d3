//! The spec schema, composed at run time from the registered plugins, and spec validation.
//!
//! [`spec_schema`] starts from the schema of [`Spec`] and turns each plugin slot into
//! `{kind, config}`: `kind` must be one of the registered names of that slot's kind, and for
//! each plugin an `if kind == <name> then config: {"$ref": "#/$defs/plugin.<name>"}` branch
//! checks the config. Each plugin's own config schema is embedded whole in `$defs` under
//! `plugin.<name>`, without an `$id` of its own: its local refs (`#/$defs/…`, `#`) are rebased
//! onto where it sits, so the document is self-contained and every ref is a plain JSON pointer
//! into it. Editors' validators (VS Code's JSON language service) and offline command-line ones
//! resolve it without fetching anything; a second validator, Python's `jsonschema`, checks it
//! in the tests. The standalone `plugins/<name>.schema.json` files keep their `$id`
//! ([`plugin_schema_id`]).
//!
//! [`SpecValidator`] compiles that schema once and reports every problem as
//! `JSON pointer: message`; [`parse_spec`] reads a spec file's text from JSON to [`Spec`];
//! [`write_schemas`] and [`schema_files`] produce the schema files editors point at.

use std::fs;
use std::path::{Path, PathBuf};

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::registry::{PluginEntry, PluginKind, Registry};
use crate::spec::{Component, Spec};

/// The dialect of every schema we write (schemars' default).
const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// `$id` of one plugin's config schema: `https://vaezoo.dev/schemas/plugins/{name}.schema.json`.
pub fn plugin_schema_id(name: &str) -> String {
    format!("https://vaezoo.dev/schemas/plugins/{name}.schema.json")
}

/// The spec schema composed from the registered plugins (deterministic: same registry, same
/// JSON, key order included).
pub fn spec_schema(registry: &Registry) -> Value {
    let mut generated = schemars::schema_for!(Spec);
    let mut spec = std::mem::take(generated.ensure_object());
    if let Some(Value::Object(properties)) = spec.get_mut("properties") {
        for kind in PluginKind::SLOTS {
            if let Some(slot) = properties.get_mut(kind.as_str()) {
                *slot = slot_schema(registry, kind, slot.get("description").cloned());
            }
        }
    }
    if let Value::Object(defs) = spec.entry("$defs").or_insert_with(|| json!({})) {
        // Every slot now has its own schema; the generic one is unused.
        defs.shift_remove(&*<Component as JsonSchema>::schema_name());
        for entry in registry.entries() {
            embed_plugin_schema(defs, &entry.name, &entry.schema);
        }
    }
    let dialect = spec
        .shift_remove("$schema")
        .unwrap_or_else(|| json!(DIALECT));
    spec.shift_remove("$id");
    spec.shift_remove("title");
    let mut root = Map::new();
    root.insert("$schema".into(), dialect);
    root.insert("title".into(), json!("vaezoo model spec"));
    root.extend(spec);
    Value::Object(root)
}

/// The schema of one slot: `kind` among the registered names of `kind`, and per plugin a
/// branch checking `config` against that plugin's schema.
fn slot_schema(registry: &Registry, kind: PluginKind, description: Option<Value>) -> Value {
    let plugins: Vec<&PluginEntry> = registry.of_kind(kind).collect();
    let names: Vec<&str> = plugins.iter().map(|e| e.name.as_str()).collect();
    let branches: Vec<Value> = plugins
        .iter()
        .map(|entry| {
            let target = embedded_ref(&entry.name);
            let mut then = json!({"properties": {"config": {"$ref": target}}});
            // `{}` (the default of an absent config) cannot do for a schema with required fields.
            if requires_fields(&entry.schema) {
                then["required"] = json!(["config"]);
            }
            json!({
                "if": {"properties": {"kind": {"const": entry.name}}, "required": ["kind"]},
                "then": then,
            })
        })
        .collect();
    let mut slot = Map::new();
    slot.insert("type".into(), json!("object"));
    if let Some(description) = description {
        slot.insert("description".into(), description);
    }
    slot.insert("required".into(), json!(["kind"]));
    slot.insert("additionalProperties".into(), json!(false));
    slot.insert(
        "properties".into(),
        json!({
            "kind": {
                "description":
                    format!("The registered {kind} plugin's name (`vaezoo plugins` lists them)."),
                "enum": names,
            },
            "config": {
                "description": "The plugin's config, checked against that plugin's own schema.",
                "type": "object",
                "default": {},
            },
        }),
    );
    // `allOf` must not be empty; a kind with no plugins has no branches.
    if !branches.is_empty() {
        slot.insert("allOf".into(), Value::Array(branches));
    }
    Value::Object(slot)
}

/// Embeds plugin `name`'s config `schema` in `defs`, the `$defs` of an enclosing document, as
/// `plugin.<name>`: without `$schema` or `$id`, its local refs rebased onto where it now sits,
/// so that the enclosing document stays self-contained. Returns the ref to it.
pub(crate) fn embed_plugin_schema(
    defs: &mut Map<String, Value>,
    name: &str,
    schema: &Value,
) -> String {
    let mut embedded = schema_object(schema);
    embedded.shift_remove("$schema");
    embedded.shift_remove("$id");
    let target = embedded_ref(name);
    let mut embedded = Value::Object(embedded);
    rebase_local_refs(&mut embedded, &target);
    defs.insert(format!("plugin.{name}"), embedded);
    target
}

/// The ref to plugin `name`'s schema embedded by [`embed_plugin_schema`] (a JSON pointer).
fn embedded_ref(name: &str) -> String {
    let token = format!("plugin.{name}")
        .replace('~', "~0")
        .replace('/', "~1");
    format!("#/$defs/{token}")
}

/// A config schema as a JSON object: `false` as `{"not": {}}`, `true` (which accepts
/// everything) as `{}`; anything else but an object fails in `SpecValidator::new`.
fn schema_object(schema: &Value) -> Map<String, Value> {
    match schema {
        Value::Object(schema) => schema.clone(),
        Value::Bool(false) => Map::from_iter([("not".to_string(), json!({}))]),
        _ => Map::new(),
    }
}

/// Rewrites every local `$ref` of an embedded schema (`#` or `#/pointer`, relative to the
/// embedded document) to point at the same place from the root document, whose pointer to the
/// embedded one is `base`. Values that are instance data (`const`, `enum`, `default`,
/// `examples`) are left alone; refs to other documents too.
fn rebase_local_refs(schema: &mut Value, base: &str) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => {
                        if let Some(pointer) = target.strip_prefix('#') {
                            if pointer.is_empty() || pointer.starts_with('/') {
                                *target = format!("{base}{pointer}");
                            }
                        }
                    }
                    ("const" | "enum" | "default" | "examples", _) => {}
                    (_, value) => rebase_local_refs(value, base),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rebase_local_refs(v, base)),
        _ => {}
    }
}

/// Whether a config schema lists required properties at its top level.
pub(crate) fn requires_fields(schema: &Value) -> bool {
    schema
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(|required| !required.is_empty())
}

/// A plugin's config schema as a standalone document: `$schema`, then its `$id`, then the rest.
fn plugin_schema(entry: &PluginEntry) -> Map<String, Value> {
    let mut rest = schema_object(&entry.schema);
    let dialect = rest
        .shift_remove("$schema")
        .unwrap_or_else(|| json!(DIALECT));
    rest.shift_remove("$id");
    let mut schema = Map::new();
    schema.insert("$schema".into(), dialect);
    schema.insert("$id".into(), json!(plugin_schema_id(&entry.name)));
    schema.extend(rest);
    schema
}

/// The spec schema of a registry, compiled once; checks spec JSON against it.
pub struct SpecValidator {
    validator: Validator,
}

impl SpecValidator {
    /// Compiles the schema composed from `registry`. A plugin whose config schema does not
    /// compile is reported as [`Error::Config`] of that plugin.
    pub fn new(registry: &Registry) -> Result<Self> {
        for entry in registry.entries() {
            jsonschema::validator_for(&entry.schema).map_err(|e| Error::Config {
                plugin: entry.name.clone(),
                message: format!("its config schema does not compile: {e}"),
            })?;
        }
        let validator =
            jsonschema::validator_for(&spec_schema(registry)).map_err(|e| Error::Config {
                plugin: registry
                    .entries()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                message: format!(
                    "the spec schema composed from these plugins does not compile: {e}"
                ),
            })?;
        Ok(Self { validator })
    }

    /// Every problem of `spec`, each `JSON pointer: message` (the root is `/`), sorted and
    /// without duplicates; empty when the spec is valid.
    pub fn problems(&self, spec: &Value) -> Vec<String> {
        problems_of(&self.validator, spec)
    }
}

/// Checks what a plugin library declares about its config before it joins the registry: the
/// schema must be a JSON Schema object that compiles (keywords, regular expressions and
/// references included), and the example config must follow it. The message names the field
/// of the plugin's header at fault.
pub fn check_plugin_config_schema(
    schema: &Value,
    example: &Value,
) -> std::result::Result<(), String> {
    if !schema.is_object() {
        return Err(format!(
            "the header's `config_schema` must be a JSON Schema object, not `{schema}`"
        ));
    }
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| format!("the header's `config_schema` does not compile: {e}"))?;
    match problems_of(&validator, example).first() {
        Some(problem) => Err(format!(
            "the header's `example_config` does not follow its `config_schema`: {problem}"
        )),
        None => Ok(()),
    }
}

/// Every problem of a plugin config against that plugin's own schema, each
/// `JSON pointer: message` (for plugins that are not a spec slot, such as attention).
pub fn config_problems(entry: &PluginEntry, config: &Value) -> Result<Vec<String>> {
    let validator = jsonschema::validator_for(&entry.schema).map_err(|e| Error::Config {
        plugin: entry.name.clone(),
        message: format!("its config schema does not compile: {e}"),
    })?;
    Ok(problems_of(&validator, config))
}

/// The problems `validator` finds in `instance`, sorted by path then message (a value's
/// problems come before those of its members), without duplicates.
fn problems_of(validator: &Validator, instance: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for error in validator.iter_errors(instance) {
        push_problem(&error, &mut problems);
    }
    problems.sort();
    problems.dedup();
    problems
        .into_iter()
        .map(|(path, message)| format!("{path}: {message}"))
        .collect()
}

/// Appends the problem(s) of one validation error. A `oneOf`/`anyOf` with a single branch
/// (such as a one-variant enum) reports that branch's errors, which say what is wrong; one
/// whose branches are all constants (an enum with documented variants) reads like `enum`.
fn push_problem(error: &ValidationError<'_>, problems: &mut Vec<(String, String)>) {
    let message = match &error.kind {
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            if let [branch] = context.as_slice() {
                for inner in branch {
                    push_problem(inner, problems);
                }
                return;
            }
            if let Some(constants) = branch_constants(error, context) {
                enum_message(&error.instance, &constants)
            } else if let Some(found) = tagged_union_problems(error, context) {
                problems.extend(found);
                return;
            } else {
                error.to_string()
            }
        }
        ValidationErrorKind::Enum { options } => enum_message(
            &error.instance,
            options.as_array().map_or(&[], Vec::as_slice),
        ),
        _ => error.to_string(),
    };
    let path = match error.instance_path.as_str() {
        "" => "/",
        path => path,
    };
    problems.push((path.to_string(), message));
}

/// The value each branch of a failed `oneOf`/`anyOf` expected, when every branch failed on a
/// `const` at the same place.
fn branch_constants(
    error: &ValidationError<'_>,
    branches: &[Vec<ValidationError<'static>>],
) -> Option<Vec<Value>> {
    branches
        .iter()
        .map(|branch| {
            branch.iter().find_map(|inner| match &inner.kind {
                ValidationErrorKind::Constant { expected_value }
                    if inner.instance_path == error.instance_path =>
                {
                    Some(expected_value.clone())
                }
                _ => None,
            })
        })
        .collect()
}

/// What is wrong with a value of a tagged union (a serde enum with `#[serde(tag = "type")]`):
/// when the tag matched no branch, one problem on the tag listing the options; when it matched
/// one branch, that branch's problems; else the problems every branch shares (e.g. not an
/// object, or no tag). `None` when none of these applies.
fn tagged_union_problems(
    error: &ValidationError<'_>,
    branches: &[Vec<ValidationError<'static>>],
) -> Option<Vec<(String, String)>> {
    let parent = error.instance_path.as_str();
    fn tag_error<'b>(
        parent: &str,
        branch: &'b [ValidationError<'static>],
    ) -> Option<(&'b ValidationError<'static>, Value)> {
        branch.iter().find_map(|inner| {
            let child = inner.instance_path.as_str().strip_prefix(parent)?;
            let direct_child = child.starts_with('/') && !child[1..].contains('/');
            match &inner.kind {
                ValidationErrorKind::Constant { expected_value } if direct_child => {
                    Some((inner, expected_value.clone()))
                }
                _ => None,
            }
        })
    }
    let tags: Vec<_> = branches.iter().map(|b| tag_error(parent, b)).collect();
    if let Some(Some((first, _))) = tags.first() {
        let same_path = |t: &Option<(&ValidationError, Value)>| {
            t.as_ref()
                .is_some_and(|(e, _)| e.instance_path == first.instance_path)
        };
        if tags.iter().all(same_path) {
            let options: Vec<Value> = tags.iter().flatten().map(|(_, v)| v.clone()).collect();
            let message = enum_message(&first.instance, &options);
            return Some(vec![(first.instance_path.to_string(), message)]);
        }
    }
    let mut nested = Vec::new();
    let unmatched = tags.iter().filter(|t| t.is_none()).count();
    if unmatched == 1 && tags.len() > 1 {
        let (branch, _) = branches.iter().zip(&tags).find(|(_, t)| t.is_none())?;
        branch.iter().for_each(|e| push_problem(e, &mut nested));
        return Some(nested);
    }
    let per_branch: Vec<Vec<(String, String)>> = branches
        .iter()
        .map(|b| {
            let mut p = Vec::new();
            b.iter().for_each(|e| push_problem(e, &mut p));
            p
        })
        .collect();
    let (first, rest) = per_branch.split_first()?;
    let common: Vec<_> = first
        .iter()
        .filter(|p| rest.iter().all(|b| b.contains(p)))
        .cloned()
        .collect();
    (!common.is_empty()).then_some(common)
}

/// Like the crate's `enum` message, but naming every option (it shows three at most).
fn enum_message(instance: &Value, options: &[Value]) -> String {
    let options: Vec<String> = options.iter().map(Value::to_string).collect();
    match options.as_slice() {
        [] => format!("{instance} is not allowed (there are no options)"),
        [only] => format!("{instance} is not one of {only}"),
        [init @ .., last] => format!("{instance} is not one of {} or {last}", init.join(", ")),
    }
}

/// Reads a spec file's text (`label` names it in errors): parses the JSON (else
/// [`Error::MalformedJson`]), validates it (else [`Error::InvalidSpec`], one entry per
/// problem) and deserialises it. Returns the spec and the raw JSON.
pub fn parse_spec(label: &str, text: &str, validator: &SpecValidator) -> Result<(Spec, Value)> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let full = e.to_string();
        let message = full
            .strip_suffix(&format!(" at line {} column {}", e.line(), e.column()))
            .unwrap_or(&full);
        Error::MalformedJson {
            path: label.to_string(),
            line: e.line(),
            // serde_json says column 0 for the end of input right after a newline.
            column: e.column().max(1),
            message: message.to_string(),
        }
    })?;
    let problems = validator.problems(&value);
    if !problems.is_empty() {
        return Err(Error::InvalidSpec { problems });
    }
    let spec = Spec::deserialize(&value).map_err(|e| Error::InvalidSpec {
        problems: vec![format!("/: {e}")],
    })?;
    Ok((spec, value))
}

/// The schema files as (path relative to the schema folder, content) pairs:
/// `spec.schema.json`, then `plugins/<name>.schema.json` by name; pretty JSON ending in a
/// newline.
pub fn schema_files(registry: &Registry) -> Vec<(PathBuf, String)> {
    let mut files = vec![(
        PathBuf::from("spec.schema.json"),
        format!("{:#}\n", spec_schema(registry)),
    )];
    for entry in registry.entries() {
        files.push((
            Path::new("plugins").join(format!("{}.schema.json", entry.name)),
            format!("{:#}\n", Value::Object(plugin_schema(entry))),
        ));
    }
    files
}

/// Writes [`schema_files`] under `dir`, creating folders; returns the paths written.
pub fn write_schemas(registry: &Registry, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (relative, content) in schema_files(registry) {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        fs::write(&path, content).map_err(|e| Error::io(&path, e))?;
        written.push(path);
    }
    Ok(written)
}
