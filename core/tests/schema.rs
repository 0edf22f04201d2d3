//! Spec schema composition and validation against a small registry of fake plugins.

use std::fs;
use std::path::Path;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use vaezoo_core::registry::{Build, Origin, PluginEntry, Registry};
use vaezoo_core::schema::{
    check_plugin_config_schema, parse_spec, schema_files, spec_schema, write_schemas, SpecValidator,
};
use vaezoo_core::Error;

/// A config with nothing in it.
#[derive(Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoConfig {}

/// The fake bottleneck's config.
#[derive(Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BnConfig {
    /// Latent size.
    #[schemars(range(min = 1))]
    latent_dim: usize,
    /// How the latent is read out.
    #[serde(default)]
    mode: Mode,
}

/// A nested enum, so that the plugin schema has `$defs` of its own. Its definition is named
/// like one of the spec's own, so that a `#/$defs/…` ref resolved against the spec instead of
/// the plugin's embedded resource would find the wrong schema.
#[derive(Debug, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "TrainingSpec")]
enum Mode {
    /// The mean.
    #[default]
    Mean,
    /// A sample.
    Sample,
}

fn not_built() -> Error {
    Error::Config {
        plugin: "fake".into(),
        message: "fakes are not built".into(),
    }
}

fn entry(name: &str, schema: Value, build: Build) -> PluginEntry {
    PluginEntry {
        kind: build.kind(),
        name: name.into(),
        version: "0.0.0".into(),
        description: format!("fake {name}"),
        origin: Origin::Builtin,
        schema,
        example: json!({}),
        partners: Vec::new(),
        build,
    }
}

fn registry() -> Registry {
    let empty = vaezoo_core::registry::schema_of::<NoConfig>;
    Registry::from_entries([
        entry("enc", empty(), Build::Encoder(|_, _, _| Err(not_built()))),
        entry(
            "bn",
            vaezoo_core::registry::schema_of::<BnConfig>(),
            Build::Bottleneck(|_, _, _| Err(not_built())),
        ),
        entry(
            "flat",
            empty(),
            Build::Bottleneck(|_, _, _| Err(not_built())),
        ),
        entry("pr", empty(), Build::Prior(|_, _, _, _| Err(not_built()))),
        entry(
            "dec",
            empty(),
            Build::Decoder(|_, _, _, _| Err(not_built())),
        ),
    ])
    .expect("distinct names")
}

fn valid() -> Value {
    json!({"name": "t", "data": {"format": "idx", "dir": "d"},
        "encoder": {"kind": "enc", "config": {}},
        "bottleneck": {"kind": "bn", "config": {"latent_dim": 2}},
        "prior": {"kind": "pr"},
        "decoder": {"kind": "dec", "config": {}}})
}

/// The problems of `valid()` changed by `edit`.
fn problems_of(edit: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut spec = valid();
    edit(&mut spec);
    SpecValidator::new(&registry())
        .expect("compiles")
        .problems(&spec)
}

#[test]
fn valid_spec_parses_into_spec_and_raw_json() {
    let validator = SpecValidator::new(&registry()).expect("compiles");
    let text = serde_json::to_string_pretty(&valid()).expect("JSON");
    let (spec, raw) = parse_spec("t.json", &text, &validator).expect("valid");
    assert_eq!(raw, valid());
    assert_eq!(spec.bottleneck.kind, "bn");
    assert_eq!(spec.prior.config, json!({}));
    let config: BnConfig = serde_json::from_value(spec.bottleneck.config).expect("config");
    assert_eq!((config.latent_dim, config.mode), (2, Mode::Mean));
    let none: NoConfig = serde_json::from_value(spec.encoder.config).expect("config");
    assert_eq!(none, NoConfig {});
}

#[test]
fn unknown_kind_reports_only_the_enum() {
    let problems = problems_of(|s| s["bottleneck"] = json!({"kind": "nope", "config": {"x": 1}}));
    assert_eq!(
        problems,
        [r#"/bottleneck/kind: "nope" is not one of "bn" or "flat""#]
    );
}

#[test]
fn missing_required_field_is_named() {
    let problems = problems_of(|s| s["bottleneck"]["config"] = json!({}));
    assert_eq!(
        problems,
        [r#"/bottleneck/config: "latent_dim" is a required property"#]
    );
    let problems = problems_of(|s| s["bottleneck"] = json!({"kind": "bn"}));
    assert_eq!(
        problems,
        [r#"/bottleneck: "config" is a required property"#]
    );
}

#[test]
fn wrong_type_and_range() {
    let problems = problems_of(|s| s["bottleneck"]["config"]["latent_dim"] = json!("big"));
    assert_eq!(
        problems,
        [r#"/bottleneck/config/latent_dim: "big" is not of type "integer""#]
    );
    let problems = problems_of(|s| s["bottleneck"]["config"]["latent_dim"] = json!(0));
    assert_eq!(
        problems,
        ["/bottleneck/config/latent_dim: 0 is less than the minimum of 1"]
    );
}

#[test]
fn internal_refs_of_a_plugin_schema_resolve() {
    assert!(problems_of(|s| s["bottleneck"]["config"]["mode"] = json!("sample")).is_empty());
    let problems = problems_of(|s| s["bottleneck"]["config"]["mode"] = json!("max"));
    assert_eq!(
        problems,
        [r#"/bottleneck/config/mode: "max" is not one of "mean" or "sample""#]
    );
    let problems = problems_of(|s| s["bottleneck"]["config"]["mode"] = json!(5));
    assert_eq!(
        problems,
        [r#"/bottleneck/config/mode: 5 is not one of "mean" or "sample""#]
    );
    let schema = spec_schema(&registry());
    // The plugin's own `TrainingSpec`, not the spec's of the same name.
    assert_eq!(
        schema["$defs"]["plugin.bn"]["properties"]["mode"]["$ref"],
        "#/$defs/plugin.bn/$defs/TrainingSpec"
    );
}

#[test]
fn every_problem_is_reported() {
    let problems = problems_of(|s| {
        s["extra"] = json!(true);
        s["bottleneck"]["config"]["foo"] = json!(1);
        s["bottleneck"]["config"]["latent_dim"] = json!(0);
        s["encoder"]["config"] = json!([]);
        s["data"]["format"] = json!("csv");
        s.as_object_mut().expect("object").shift_remove("decoder");
    });
    assert_eq!(
        problems,
        [
            r#"/: "decoder" is a required property"#,
            "/: Additional properties are not allowed ('extra' was unexpected)",
            "/bottleneck/config: Additional properties are not allowed ('foo' was unexpected)",
            "/bottleneck/config/latent_dim: 0 is less than the minimum of 1",
            r#"/data/format: "csv" is not one of "idx" or "text""#,
            r#"/encoder/config: [] is not of type "object""#,
        ]
    );
}

#[test]
fn malformed_json_has_line_and_column() {
    let validator = SpecValidator::new(&registry()).expect("compiles");
    match parse_spec("t.json", "{\n  \"name\": \"t\",\n  oops\n}", &validator) {
        Err(Error::MalformedJson {
            path,
            line,
            column,
            message,
        }) => {
            assert_eq!((path.as_str(), line, column), ("t.json", 3, 3));
            assert_eq!(message, "key must be a string");
        }
        other => panic!("expected malformed JSON, got {other:?}"),
    }
    match parse_spec("t.json", r#"{"name": "t"}"#, &validator) {
        Err(Error::InvalidSpec { problems }) => assert_eq!(problems.len(), 5),
        other => panic!("expected an invalid spec, got {other:?}"),
    }
}

#[test]
fn schema_is_deterministic_valid_and_embeds_every_plugin() {
    let registry = registry();
    let schema = spec_schema(&registry);
    assert_eq!(schema.to_string(), spec_schema(&registry).to_string());
    assert!(jsonschema::meta::is_valid(&schema));
    for entry in registry.entries() {
        let embedded = &schema["$defs"][format!("plugin.{}", entry.name)];
        assert!(embedded.get("$schema").is_none() && embedded.get("$id").is_none());
    }
    // Self-contained: no `$id` anywhere, every ref a JSON pointer that resolves in the document.
    let text = schema.to_string();
    assert!(!text.contains("\"$id\""), "an $id left in the spec schema");
    let mut refs = Vec::new();
    collect_refs(&schema, &mut refs);
    assert!(!refs.is_empty());
    for target in refs {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("remote ref {target}"));
        assert!(schema.pointer(pointer).is_some(), "dangling ref {target}");
    }
    assert_eq!(
        schema["properties"]["bottleneck"]["properties"]["kind"]["enum"],
        json!(["bn", "flat"])
    );
    assert!(schema["$defs"].get("Component").is_none());
}

/// Every `$ref` string under `value`.
fn collect_refs(value: &serde_json::Value, refs: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", serde_json::Value::String(r)) => refs.push(r.clone()),
                    _ => collect_refs(v, refs),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}

#[test]
fn written_files_match_schema_files() {
    let registry = registry();
    let dir = std::env::temp_dir().join(format!("vaezoo-schema-test-{}", std::process::id()));
    let written = write_schemas(&registry, &dir).expect("written");
    let files = schema_files(&registry);
    assert_eq!(written.len(), 1 + registry.entries().count());
    for (path, (relative, content)) in written.iter().zip(&files) {
        assert_eq!(path, &dir.join(relative));
        assert_eq!(&fs::read_to_string(path).expect("readable"), content);
        assert!(content.ends_with("}\n"));
    }
    assert_eq!(files[1].0, Path::new("plugins/bn.schema.json"));
    fs::remove_dir_all(&dir).expect("removed");
}

#[test]
fn a_plugin_libraries_config_schema_is_checked_before_it_joins() {
    let example = json!({"scale": 2});
    let good = json!({"type": "object", "properties": {"scale": {"type": "integer"}}});
    assert_eq!(check_plugin_config_schema(&good, &example), Ok(()));
    let bad = [
        (json!(5), "must be a JSON Schema object"),
        (json!(false), "must be a JSON Schema object"),
        (
            json!({"properties": {"scale": {"type": "integer", "pattern": "("}}}),
            "does not compile",
        ),
        (
            json!({"properties": {"scale": {"$ref": "#/$defs/missing"}}}),
            "does not compile",
        ),
        (
            json!({"type": "object", "properties": {"scale": {"type": "string"}}}),
            "`example_config` does not follow",
        ),
    ];
    for (schema, expected) in bad {
        let e = check_plugin_config_schema(&schema, &example).unwrap_err();
        assert!(e.contains(expected), "{schema}: {e}");
    }
}
