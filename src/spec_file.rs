//! Reading spec files: JSON → schema check → typed [`Spec`], with paths resolved.

use std::path::Path;

use vaezoo_core::schema::{parse_spec, SpecValidator};
use vaezoo_core::spec::{DataSpec, Spec};

use crate::{registry, Error, Result};

/// Reads, validates and deserialises the spec at `path`, and checks its plugin pins against
/// the loaded libraries.
pub fn read_spec(path: &Path) -> Result<Spec> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let registry = registry()?;
    let validator = SpecValidator::new(registry)?;
    let (spec, _) = parse_spec(&path.display().to_string(), &text, &validator)?;
    registry.check_pins(&spec.plugins)?;
    Ok(spec)
}

/// Makes the spec's data paths absolute, relative to the folder of the spec file `path`, and
/// its `$schema` path too (so that the copy in a run folder does not dangle).
pub fn resolve_paths(spec: &mut Spec, path: &Path) -> Result<()> {
    let base = path.parent().unwrap_or(Path::new("."));
    let absolute = |p: &mut String| -> Result<()> {
        let joined = base.join(&*p);
        let resolved = joined.canonicalize().map_err(|e| Error::io(&joined, e))?;
        *p = resolved.display().to_string();
        Ok(())
    };
    // A relative `$schema` would dangle in a run folder: absolute where it leads to a file,
    // dropped otherwise (URLs and absolute paths stay).
    if let Some(schema) = &mut spec.schema {
        let relative = !schema.contains("://") && Path::new(schema.as_str()).is_relative();
        if relative && absolute(schema).is_err() {
            spec.schema = None;
        }
    }
    match &mut spec.data {
        DataSpec::Idx { dir, .. } => absolute(dir),
        DataSpec::Text { dir, tokenizer, .. } => {
            absolute(dir)?;
            tokenizer.as_mut().map_or(Ok(()), absolute)
        }
    }
}
