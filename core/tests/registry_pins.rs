//! A spec's `plugins` pins against the registry: a pinned plugin must be loaded from a
//! library with the pinned sha256; the origin of a loaded plugin shows its path and hash.

use std::path::PathBuf;
use std::sync::Arc;

use vaezoo_core::registry::{Build, Origin, PluginEntry, Registry};
use vaezoo_core::spec::PluginPin;
use vaezoo_core::Error;

const SHA: &str = "ab12000000000000000000000000000000000000000000000000000000000000";

fn loaded(name: &str, origin: Origin) -> PluginEntry {
    PluginEntry {
        kind: vaezoo_core::registry::PluginKind::Bottleneck,
        name: name.into(),
        version: "1.0.0".into(),
        description: String::new(),
        origin,
        schema: serde_json::json!({}),
        example: serde_json::json!({}),
        partners: Vec::new(),
        build: Build::LoadedBottleneck(Arc::new(|_, _, _| {
            Err(Error::Unsupported("not built in this test".into()))
        })),
    }
}

fn pin(name: &str, sha256: &str) -> PluginPin {
    PluginPin {
        name: name.into(),
        sha256: sha256.into(),
    }
}

#[test]
fn pins_must_name_a_loaded_library_with_the_pinned_hash() {
    let dynamic = Origin::Dynamic {
        path: PathBuf::from("/plugins/libdyn.so"),
        sha256: SHA.into(),
    };
    assert_eq!(
        dynamic.to_string(),
        format!("dynamic /plugins/libdyn.so sha256:{SHA}")
    );
    let registry =
        Registry::from_entries([loaded("dyn", dynamic), loaded("static", Origin::Builtin)])
            .unwrap();
    assert!(registry.check_pins(&[]).is_ok());
    assert!(registry.check_pins(&[pin("dyn", SHA)]).is_ok());
    assert!(registry
        .check_pins(&[pin("dyn", &SHA.to_uppercase())])
        .is_ok());
    let message = |pins: &[PluginPin]| registry.check_pins(pins).unwrap_err().to_string();
    let wrong = "0".repeat(64);
    assert_eq!(
        message(&[pin("dyn", &wrong)]),
        format!("the spec pins plugin `dyn`: sha256 mismatch: pinned {wrong}, but /plugins/libdyn.so has {SHA}")
    );
    assert!(message(&[pin("gone", SHA)]).contains("it is not loaded"));
    assert!(message(&[pin("static", SHA)]).contains("built into vaezoo"));
}
