//! Login profiles: a server URL and a session token per profile name, kept in one JSON file
//! that only its owner can read (it holds bearer tokens).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// The profiles file.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Profile name → profile.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// One server and the session signed in to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// The server's base URL.
    pub url: String,
    /// The session token (a JWT), absent after `logout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Who signed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// When the session ends, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// Where the profiles live: `$VEXIL_CONFIG`, else `$XDG_CONFIG_HOME/vexil/config.json`, else
/// `~/.config/vexil/config.json`.
pub fn path() -> Result<PathBuf, Error> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = non_empty("VEXIL_CONFIG") {
        return Ok(PathBuf::from(p));
    }
    let dir = match (non_empty("XDG_CONFIG_HOME"), non_empty("HOME")) {
        (Some(xdg), _) => PathBuf::from(xdg),
        (None, Some(home)) => PathBuf::from(home).join(".config"),
        (None, None) => {
            return Err(Error::Usage(
                "cannot find a place for profiles: set VEXIL_CONFIG, XDG_CONFIG_HOME or HOME"
                    .to_owned(),
            ));
        }
    };
    Ok(dir.join("vexil").join("config.json"))
}

/// Reads the profiles; a missing file is an empty set.
pub fn load(path: &Path) -> Result<Config, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::Usage(format!(
                "the profiles file {} is not valid: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()))(e)),
    }
}

/// Writes the profiles with mode 0600, through a temporary file renamed into place, so a
/// crash never leaves half a file and the tokens are never readable by others, even briefly.
pub fn save(path: &Path, config: &Config) -> Result<(), Error> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        create_private_dir(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(config).map_err(|e| Error::Protocol {
        url: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = private_file(&tmp)?;
        f.write_all(&body)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(Error::io(format!("cannot write {}", path.display())))
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(Error::io(format!("cannot create {}", dir.display())))
}
