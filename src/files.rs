//! Reading the files a config names (the config itself, schemas, mock bodies, TLS files),
//! each with a size cap. Imports nothing of the crate: config, schema and tls all use it.

use std::path::Path;

/// Reads a file the config names, refusing one larger than `max` bytes: a config that names
/// `/dev/zero` or a multi-gigabyte file fails to load instead of exhausting memory.
pub fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(format!("{} is larger than {max} bytes", path.display()));
    }
    Ok(bytes)
}

/// The largest config file, mock body, schema file and TLS file read.
pub const MAX_CONFIG_FILE: u64 = 4 << 20;
pub const MAX_DATA_FILE: u64 = 16 << 20;
/// OpenAPI documents of large APIs run to tens of MiB (GitHub's is ~12 MiB).
pub const MAX_OPENAPI_FILE: u64 = 64 << 20;
pub const MAX_TLS_FILE: u64 = 1 << 20;
