//! `admin:`: the admin listener's address and optional token.

use std::net::SocketAddr;

use super::errors::Errors;
use super::AdminSettings;
use crate::config::RawAdmin;

pub(super) fn build(raw: Option<&RawAdmin>, errors: &mut Errors<'_>) -> Option<AdminSettings> {
    let raw = raw?;
    match raw.address.value.parse::<SocketAddr>() {
        Ok(address) => Some(AdminSettings {
            address,
            token: raw
                .token
                .as_ref()
                .map(|t| t.0.clone())
                .filter(|t| !t.is_empty()),
        }),
        Err(_) => {
            errors.at(
                raw.address.referenced,
                "admin.address",
                format!(
                    "{:?} is not an address of the form host:port",
                    raw.address.value.0
                ),
            );
            None
        }
    }
}
