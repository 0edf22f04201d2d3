//! Opening one plugin library: hash it, load it (never to be unloaded), check its header
//! (magic and ABI version before anything else), and read its name, schema and entry points.

use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};

use libloading::Library;
use serde_json::Value;
use sha2::{Digest, Sha256};
use vaezoo_core::abi::{
    capability, CreateFn, DescribeParamFn, DestroyFn, ForwardFn, PluginHeader, VjpFn, ABI_VERSION,
    HEADER_SYMBOL, KIND_BOTTLENECK, MAGIC,
};
use vaezoo_core::Error as CoreError;

use crate::Result;

/// A loaded plugin library and what its header says. Lives for the rest of the process.
pub struct PluginLibrary {
    /// The file, made absolute.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, lower-case hex.
    pub sha256: String,
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its one-line description.
    pub description: String,
    /// Its config's JSON Schema.
    pub schema: Value,
    /// Its example config.
    pub example: Value,
    /// [`capability`] bits.
    pub capabilities: u64,
    pub(super) create: CreateFn,
    pub(super) describe_param: DescribeParamFn,
    pub(super) forward: ForwardFn,
    pub(super) vjp: VjpFn,
    pub(super) destroy: DestroyFn,
}

impl PluginLibrary {
    /// An error about this library.
    pub fn error(&self, message: impl Into<String>) -> CoreError {
        plugin_error(&self.path, message)
    }
}

/// `plugin PATH: message`, on one line.
pub fn plugin_error(path: &Path, message: impl Into<String>) -> CoreError {
    CoreError::Plugin {
        path: path.to_path_buf(),
        message: message.into().replace(['\n', '\r'], "; "),
    }
}

/// For a 64-bit little-endian ELF file (Linux's shared libraries), that the file holds every
/// byte its headers describe: the program and section header tables and each segment's
/// contents. Other formats pass unchecked (the loader reads and reports them).
fn check_elf_extent(bytes: &[u8]) -> std::result::Result<(), String> {
    if bytes.len() < 64 || bytes[..4] != *b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Ok(());
    }
    let u16_at = |at: usize| u64::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let len = bytes.len() as u64;
    let short = |needed: u64| {
        format!("the file is cut short: its ELF headers describe {needed} bytes, it has {len}")
    };
    let (phoff, shoff) = (u64_at(0x20).unwrap_or(0), u64_at(0x28).unwrap_or(0));
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    let (shentsize, shnum) = (u16_at(0x3a), u16_at(0x3c));
    let tables = [(phoff, phentsize * phnum), (shoff, shentsize * shnum)];
    for end in tables.map(|(offset, size)| offset.saturating_add(size)) {
        if end > len {
            return Err(short(end));
        }
    }
    for i in 0..phnum {
        let at = (phoff + i * phentsize) as usize;
        // p_offset at +8, p_filesz at +32 in an ELF64 program header.
        if let (Some(offset), Some(size)) = (u64_at(at + 8), u64_at(at + 32)) {
            let end = offset.saturating_add(size);
            if end > len {
                return Err(short(end));
            }
        }
    }
    Ok(())
}

/// Hashes and loads the library at `path` and checks its header. The library is never
/// unloaded (plugin code may still run from the tape or from other threads).
pub fn load(path: &Path) -> Result<&'static PluginLibrary> {
    let path = path.canonicalize().map_err(|e| crate::Error::io(path, e))?;
    let bytes = std::fs::read(&path).map_err(|e| crate::Error::io(&path, e))?;
    let sha256: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let fail = |message: String| plugin_error(&path, message);
    // A library cut short (a copy or build that did not finish) would be mapped past the end
    // of its file, and the first access there kills the process (SIGBUS).
    check_elf_extent(&bytes).map_err(fail)?;
    // Loading runs the library's initialisers: only paths the user named reach this point.
    let library =
        unsafe { Library::new(&path) }.map_err(|e| fail(format!("not a loadable library: {e}")))?;
    let library: &'static Library = Box::leak(Box::new(library));
    let symbol = format!("{HEADER_SYMBOL}\0");
    let header_fn = unsafe {
        library.get::<unsafe extern "C" fn() -> *const PluginHeader>(symbol.as_bytes())
    }
    .map_err(|_| {
        fail(format!(
            "no `{HEADER_SYMBOL}` symbol: not a vaezoo plugin (build it with `vaezoo_core::export_bottleneck!`)"
        ))
    })?;
    let header = unsafe { header_fn() };
    if header.is_null() {
        return Err(fail(format!("`{HEADER_SYMBOL}` returned null")).into());
    }
    // Only the first 12 bytes are the same in every ABI version: read them alone first.
    let (magic, abi_version) = unsafe {
        (
            std::ptr::addr_of!((*header).magic).read(),
            std::ptr::addr_of!((*header).abi_version).read(),
        )
    };
    if magic != MAGIC {
        return Err(fail(format!(
            "the header's magic is {magic:?}, not a vaezoo plugin header"
        ))
        .into());
    }
    if abi_version != ABI_VERSION {
        return Err(fail(format!(
            "built for plugin ABI version {abi_version}, this vaezoo speaks version {ABI_VERSION}"
        ))
        .into());
    }
    let header: &'static PluginHeader = unsafe { &*header };
    read_header(header, path, sha256).map_err(Into::into)
}

/// Reads an ABI-checked header into a leaked [`PluginLibrary`].
fn read_header(
    header: &'static PluginHeader,
    path: PathBuf,
    sha256: String,
) -> Result<&'static PluginLibrary, CoreError> {
    let fail = |message: String| plugin_error(&path, message);
    if header.kind != KIND_BOTTLENECK {
        return Err(fail(format!(
            "plugin kind {} is not supported (ABI version {ABI_VERSION} has bottlenecks, kind {KIND_BOTTLENECK})",
            header.kind
        )));
    }
    if header.capabilities & !capability::ALL != 0 {
        return Err(fail(format!(
            "unknown capability bits {:#x}",
            header.capabilities & !capability::ALL
        )));
    }
    let text = |ptr: *const c_char, field: &str| -> Result<String, CoreError> {
        if ptr.is_null() {
            return Err(fail(format!("the header's `{field}` is null")));
        }
        let s = unsafe { CStr::from_ptr(ptr) }.to_str();
        s.map(str::to_string)
            .map_err(|e| fail(format!("the header's `{field}` is not UTF-8: {e}")))
    };
    let json = |ptr, field: &str| -> Result<Value, CoreError> {
        serde_json::from_str(&text(ptr, field)?)
            .map_err(|e| fail(format!("the header's `{field}` is not JSON: {e}")))
    };
    let name = text(header.name, "name")?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(fail(format!(
            "plugin name `{name}` must be letters, digits and `_`"
        )));
    }
    let missing = |field: &str| fail(format!("the header has no `{field}` function"));
    let (schema, example) = (
        json(header.config_schema, "config_schema")?,
        json(header.example_config, "example_config")?,
    );
    vaezoo_core::schema::check_plugin_config_schema(&schema, &example).map_err(fail)?;
    let library = PluginLibrary {
        version: text(header.version, "version")?,
        description: text(header.description, "description")?,
        schema,
        example,
        capabilities: header.capabilities,
        create: header.create.ok_or_else(|| missing("create"))?,
        describe_param: header
            .describe_param
            .ok_or_else(|| missing("describe_param"))?,
        forward: header.forward.ok_or_else(|| missing("forward"))?,
        vjp: header.vjp.ok_or_else(|| missing("vjp"))?,
        destroy: header.destroy.ok_or_else(|| missing("destroy"))?,
        name,
        path,
        sha256,
    };
    Ok(Box::leak(Box::new(library)))
}
