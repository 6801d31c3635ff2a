//! `logging:`: the format, colour, and where the access log goes (with its buffer). All of
//! it applies at startup; a reload that changes it says "restart to apply".

use std::path::Path;

use super::errors::Errors;
use super::Logging;
use crate::accesslog::{AccessTarget, DEFAULT_BUFFER, MIN_BUFFER};
use crate::config::RawLogging;

/// The largest `access_buffer`: the log holds up to two of them.
const MAX_BUFFER: u64 = 1 << 30;

pub(super) fn build(raw: &RawLogging, base_dir: &Path, errors: &mut Errors<'_>) -> Logging {
    let mut access_line = None;
    let access = match &raw.access {
        None => AccessTarget::Stdout,
        Some(spanned) => {
            let line = spanned.referenced.line();
            access_line = (line > 0).then_some(line);
            match spanned.value.trim() {
                "stdout" => AccessTarget::Stdout,
                "stderr" => AccessTarget::Stderr,
                "off" => AccessTarget::Off,
                "" => {
                    errors.at(
                        spanned.referenced,
                        "logging.access",
                        "empty; write stdout, stderr, off or a file path",
                    );
                    AccessTarget::Off
                }
                path => {
                    let path = base_dir.join(path);
                    // The file is opened at startup (never by `check` or a reload); a missing
                    // directory is said here, with the line, rather than only then.
                    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                    if parent.is_some_and(|p| !p.is_dir()) || path.is_dir() {
                        errors.at(
                            spanned.referenced,
                            "logging.access",
                            format!(
                                "{} is not a file in an existing directory \
                                 (write stdout, stderr, off or a file path)",
                                path.display()
                            ),
                        );
                    }
                    AccessTarget::File(path)
                }
            }
        }
    };
    let access_buffer = match &raw.access_buffer {
        None => DEFAULT_BUFFER,
        Some(spanned) => {
            let size = spanned.value.0;
            if size < MIN_BUFFER as u64 || size > MAX_BUFFER {
                errors.at(
                    spanned.referenced,
                    "logging.access_buffer",
                    format!(
                        "{size} bytes is outside 64KiB..1GiB (the log holds up to two buffers)"
                    ),
                );
                DEFAULT_BUFFER
            } else {
                size as usize
            }
        }
    };
    Logging {
        format: raw.format,
        color: raw.color,
        access,
        access_buffer,
        access_line,
    }
}
