//! Where the default model file is found when none is named: `$A3KV_MODEL`, else
//! `models/<file>` in the repository (the working directory or the binary's directory, or
//! any parent of either), else `$A3KV_HOME/models`, else the user data directory
//! (`$XDG_DATA_HOME/a3kv/models`, by default `~/.local/share/a3kv/models`).
//!
//! The repository is looked for from the binary's own location too, so `target/release/a3kv`
//! run from any directory still finds the repository's `models/`; the two user places make
//! an installed binary work outside any checkout (`scripts/fetch-model.sh --user` fills
//! them). When nothing is found the error names every place searched.

use std::path::{Path, PathBuf};

use crate::{ModelError, Result};

/// File name of the default model (SmolLM2-135M-Instruct, Q4_1 GGUF).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// What to tell a user whose default model is missing.
pub const MISSING_MODEL_HINT: &str = "run `scripts/fetch-model.sh` in the repository, or \
     `scripts/fetch-model.sh --user` to install into the user data directory \
     (or set A3KV_MODEL=/path/to/model.gguf)";

/// The process facts the search reads, gathered once so the search itself is pure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchEnv {
    /// `$A3KV_MODEL`: an explicit file, used as is.
    pub model: Option<PathBuf>,
    /// The working directory.
    pub cwd: Option<PathBuf>,
    /// The directory holding the running binary.
    pub exe_dir: Option<PathBuf>,
    /// `$A3KV_HOME`.
    pub a3kv_home: Option<PathBuf>,
    /// `$XDG_DATA_HOME` (ignored unless absolute, as the XDG spec says).
    pub xdg_data_home: Option<PathBuf>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
}

impl SearchEnv {
    /// Reads the environment of this process; empty variables count as unset.
    pub fn from_process() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            model: var("A3KV_MODEL"),
            cwd: std::env::current_dir().ok(),
            exe_dir: std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf)),
            a3kv_home: var("A3KV_HOME"),
            xdg_data_home: var("XDG_DATA_HOME"),
            home: var("HOME"),
        }
    }

    /// The user data directory's model folder, if a home is known.
    pub fn user_models_dir(&self) -> Option<PathBuf> {
        let data = match &self.xdg_data_home {
            Some(x) if x.is_absolute() => x.clone(),
            _ => self.home.as_ref()?.join(".local/share"),
        };
        Some(data.join("a3kv/models"))
    }
}

/// One place the search looks, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// `models/<file>` in `start` or any of its parents.
    Upwards { start: PathBuf, what: &'static str },
    /// `<dir>/<file>`.
    Dir { dir: PathBuf, what: &'static str },
    /// A place that could not be formed (its variable is unset).
    Unset(&'static str),
}

impl Place {
    fn find(&self, file: &str) -> Option<PathBuf> {
        match self {
            Place::Upwards { start, .. } => start
                .ancestors()
                .map(|d| d.join("models").join(file))
                .find(|p| p.is_file()),
            Place::Dir { dir, .. } => Some(dir.join(file)).filter(|p| p.is_file()),
            Place::Unset(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Place::Upwards { start, what } => {
                format!("models/ in {} or a parent ({what})", start.display())
            }
            Place::Dir { dir, what } => format!("{} ({what})", dir.display()),
            Place::Unset(what) => what.to_string(),
        }
    }
}

fn places(env: &SearchEnv) -> Vec<Place> {
    let mut out = Vec::new();
    if let Some(cwd) = &env.cwd {
        out.push(Place::Upwards {
            start: cwd.clone(),
            what: "working directory",
        });
    }
    if let Some(exe) = &env.exe_dir {
        out.push(Place::Upwards {
            start: exe.clone(),
            what: "the binary's directory",
        });
    }
    out.push(match &env.a3kv_home {
        Some(h) => Place::Dir {
            dir: h.join("models"),
            what: "$A3KV_HOME/models",
        },
        None => Place::Unset("$A3KV_HOME/models (A3KV_HOME is not set)"),
    });
    out.push(match env.user_models_dir() {
        Some(dir) => Place::Dir {
            dir,
            what: "user data directory",
        },
        None => Place::Unset("the user data directory (neither XDG_DATA_HOME nor HOME is set)"),
    });
    out
}

/// The default model under `env`: `model` if set, else the first of the places in the module
/// doc that holds `file`. Errors with [`ModelError::DefaultModelNotFound`] naming them all.
pub fn find_model_in(env: &SearchEnv, file: &str) -> Result<PathBuf> {
    if let Some(p) = &env.model {
        return Ok(p.clone());
    }
    let places = places(env);
    places
        .iter()
        .find_map(|p| p.find(file))
        .ok_or_else(|| ModelError::DefaultModelNotFound {
            file: file.to_string(),
            searched: places.iter().map(Place::describe).collect(),
        })
}

/// The default model of this process (see the module doc for the search order).
pub fn find_default_model() -> Result<PathBuf> {
    find_model_in(&SearchEnv::from_process(), DEFAULT_MODEL_FILE)
}

/// [`find_default_model`] without the reason.
pub fn default_model_path() -> Option<PathBuf> {
    find_default_model().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn places_are_searched_in_order() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let env = SearchEnv {
            model: None,
            cwd: Some(root.join("repo/crates/x")),
            exe_dir: Some(root.join("build/target/release")),
            a3kv_home: Some(root.join("home-a3kv")),
            xdg_data_home: None,
            home: Some(root.join("user")),
        };
        let f = "m.gguf";
        let user = root.join("user/.local/share/a3kv/models/m.gguf");
        touch(&user);
        assert_eq!(find_model_in(&env, f).unwrap(), user);
        let home = root.join("home-a3kv/models/m.gguf");
        touch(&home);
        assert_eq!(find_model_in(&env, f).unwrap(), home);
        let beside_exe = root.join("build/models/m.gguf");
        touch(&beside_exe);
        assert_eq!(find_model_in(&env, f).unwrap(), beside_exe);
        let repo = root.join("repo/models/m.gguf");
        touch(&repo);
        assert_eq!(find_model_in(&env, f).unwrap(), repo);
        // An explicit file wins and is not checked here (the loader names it if missing).
        let explicit = SearchEnv {
            model: Some("/elsewhere/x.gguf".into()),
            ..env
        };
        assert_eq!(
            find_model_in(&explicit, f).unwrap(),
            PathBuf::from("/elsewhere/x.gguf")
        );
    }

    #[test]
    fn xdg_data_home_is_used_only_when_absolute() {
        let mut env = SearchEnv {
            xdg_data_home: Some("/data".into()),
            home: Some("/home/u".into()),
            ..Default::default()
        };
        assert_eq!(
            env.user_models_dir(),
            Some(PathBuf::from("/data/a3kv/models"))
        );
        env.xdg_data_home = Some("relative".into());
        assert_eq!(
            env.user_models_dir(),
            Some(PathBuf::from("/home/u/.local/share/a3kv/models"))
        );
        env.home = None;
        assert_eq!(env.user_models_dir(), None);
    }

    #[test]
    fn not_found_names_every_place_searched() {
        let t = tempfile::tempdir().unwrap();
        let env = SearchEnv {
            cwd: Some(t.path().join("cwd")),
            exe_dir: Some(t.path().join("bin")),
            xdg_data_home: Some(t.path().join("xdg")),
            ..Default::default()
        };
        let e = find_model_in(&env, "absent.gguf").unwrap_err().to_string();
        for want in [
            "absent.gguf",
            "cwd or a parent (working directory)",
            "bin or a parent (the binary's directory)",
            "A3KV_HOME is not set",
            "xdg/a3kv/models (user data directory)",
            "fetch-model.sh --user",
        ] {
            assert!(e.contains(want), "{want:?} missing from: {e}");
        }
    }
}
