//! The SDK's macros: `export_bottleneck!` (the C entry point of a plugin library) and
//! `register_bottleneck!` (the same plugin registered statically through `inventory`).

/// Exports `$ty` (an [`ExportBottleneck`](crate::abi::sdk::ExportBottleneck)) through the C ABI: defines the
/// `vaezoo_plugin_header` symbol. Use it once, at the root of a `cdylib` crate.
#[macro_export]
macro_rules! export_bottleneck {
    ($ty:ty) => {
        /// The vaezoo plugin header of this library (see `docs/plugin-abi.md`).
        #[no_mangle]
        pub extern "C" fn vaezoo_plugin_header() -> *const $crate::abi::PluginHeader {
            static CELL: ::std::sync::OnceLock<$crate::abi::sdk::HeaderCell> =
                ::std::sync::OnceLock::new();
            $crate::abi::sdk::header::<$ty>(&CELL)
        }
    };
}

/// Registers `$ty` (an [`ExportBottleneck`](crate::abi::sdk::ExportBottleneck) implemented for every backend) through
/// `inventory`, so that the same source also links statically into a vaezoo binary.
#[macro_export]
macro_rules! register_bottleneck {
    ($ty:ty) => {
        $crate::inventory::submit! {
            $crate::registry::PluginRegistration {
                name: <$ty as $crate::abi::sdk::ExportBottleneck>::NAME,
                version: <$ty as $crate::abi::sdk::ExportBottleneck>::VERSION,
                description: <$ty as $crate::abi::sdk::ExportBottleneck>::DESCRIPTION,
                schema: $crate::abi::sdk::config_schema::<$ty>,
                example: <$ty as $crate::abi::sdk::ExportBottleneck>::example,
                partners: $crate::abi::sdk::partners(
                    <$ty as $crate::abi::sdk::ExportBottleneck>::CAPABILITIES,
                ),
                build: $crate::registry::Build::Bottleneck($crate::abi::sdk::build_static::<$ty>),
            }
        }
    };
}
