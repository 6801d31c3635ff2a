//! The one error collector every build step shares: each problem is kept with the config
//! file, line and key, and compiling goes on, so one run reports everything.

use std::path::Path;

use serde_saphyr::Location;

use crate::config::ConfigError;

pub(super) struct Errors<'p> {
    path: &'p Path,
    list: Vec<ConfigError>,
}

impl<'p> Errors<'p> {
    pub fn new(path: &'p Path) -> Errors<'p> {
        Errors {
            path,
            list: Vec::new(),
        }
    }

    /// The config file the errors are about.
    pub fn path(&self) -> &'p Path {
        self.path
    }

    /// A problem at `location` (its line) under `key`.
    pub fn at(&mut self, location: Location, key: impl Into<String>, message: impl Into<String>) {
        self.list
            .push(ConfigError::at(self.path, location, key, message));
    }

    /// A problem of the file as a whole.
    pub fn file(&mut self, message: impl Into<String>) {
        self.list.push(ConfigError::file(self.path, message));
    }

    pub fn push(&mut self, error: ConfigError) {
        self.list.push(error);
    }

    /// The value, or `None` with its error kept.
    pub fn keep<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        result.map_err(|error| self.push(error)).ok()
    }

    pub fn finish(self) -> Result<(), Vec<ConfigError>> {
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(self.list)
        }
    }
}
