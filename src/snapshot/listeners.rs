//! `listeners:`: the addresses to bind, each with its TLS settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::errors::Errors;
use super::Listener;
use crate::config::{RawListener, RawListenerTls};
use crate::tls;

/// Every listener that compiled; at least one must be named.
pub(super) fn build(
    raw: &[RawListener],
    base_dir: &Path,
    material: &mut tls::Material,
    errors: &mut Errors<'_>,
) -> Vec<Listener> {
    if raw.is_empty() {
        errors.file("`listeners` is empty: name at least one address");
    }
    let mut listeners = Vec::new();
    for (i, listener) in raw.iter().enumerate() {
        let address = &listener.address;
        let tls = listener.tls.as_ref().and_then(|raw_tls| {
            match listener_tls(base_dir, &raw_tls.value, material) {
                Ok(tls) => Some(Arc::new(tls)),
                Err(message) => {
                    errors.at(raw_tls.referenced, format!("listeners[{i}].tls"), message);
                    None
                }
            }
        });
        match address.value.parse::<SocketAddr>() {
            Ok(address) => listeners.push(Listener { address, tls }),
            Err(_) => errors.at(
                address.referenced,
                format!("listeners[{i}].address"),
                format!(
                    "{:?} is not an address of the form host:port (e.g. 127.0.0.1:8080)",
                    address.value.0
                ),
            ),
        }
    }
    listeners
}

/// A TLS listener's settings from its config block.
fn listener_tls(
    base_dir: &Path,
    raw: &RawListenerTls,
    material: &mut tls::Material,
) -> Result<tls::ServerTls, String> {
    let paths: Vec<(PathBuf, PathBuf)> = raw
        .certificates
        .iter()
        .map(|c| (base_dir.join(&*c.cert.value), base_dir.join(&*c.key.value)))
        .collect();
    let files: Vec<tls::CertFiles<'_>> = paths
        .iter()
        .map(|(cert, key)| tls::CertFiles { cert, key })
        .collect();
    let client_ca = raw
        .client_auth
        .as_ref()
        .map(|auth| (base_dir.join(&*auth.ca.value), auth.mode));
    tls::server(
        &files,
        client_ca.as_ref().map(|(ca, mode)| (ca.as_path(), *mode)),
        raw.handshake_timeout
            .map_or(tls::DEFAULT_HANDSHAKE_TIMEOUT, |d| d.0),
        material,
    )
}
