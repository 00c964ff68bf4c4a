//! `EvalError`: every way loading data, scoring, running or reporting an evaluation can fail.

use std::path::PathBuf;

/// The error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A data file that `scripts/fetch-data.sh` provides is absent.
    #[error(
        "data file {path} not found: run scripts/fetch-data.sh (or pass the folder that holds it)"
    )]
    DataMissing {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A whole-file JSON document did not have the expected shape.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The parser's error (it names line and column).
        #[source]
        source: serde_json::Error,
    },
    /// One line of a JSONL file is malformed.
    #[error("{path}:{line}: {message}")]
    JsonlLine {
        /// The JSONL file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A JSONL record has no `answers` field.
    #[error(
        "{path}:{line}: record has no \"answers\" field (expected \"answers\": [\"...\", ...])"
    )]
    MissingAnswers {
        /// The JSONL file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A dataset name that `DatasetSpec` does not know.
    #[error("unknown dataset {0:?}: expected one of hotpotqa, needle[:LEN,..], ruler[:LEN,..], jsonl:PATH")]
    UnknownDataset(String),
    /// A dataset spec with a known name but bad parameters.
    #[error("invalid dataset spec {spec:?}: {message}")]
    InvalidSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        message: String,
    },
    /// A generator could not build items with the given settings (e.g. a length too small).
    #[error("cannot generate {dataset} items: {message}")]
    Generation {
        /// The generator (`needle`, `ruler/niah_single`, ..).
        dataset: String,
        /// Why.
        message: String,
    },
    /// Results documents that cannot be merged (different model, data set, methods..).
    #[error("cannot merge results: {0}")]
    Merge(String),
    /// Serialising results failed.
    #[error("serialising results: {0}")]
    Serialize(#[from] serde_json::Error),
    /// Drawing the heat map failed.
    #[error("plotting {path}: {message}")]
    Plot {
        /// The image being drawn.
        path: PathBuf,
        /// The backend's message.
        message: String,
    },
}

impl EvalError {
    /// A short, stable label for the variant (for logs and exit messages).
    pub fn kind(&self) -> &'static str {
        match self {
            EvalError::DataMissing { .. } => "data_missing",
            EvalError::Io { .. } => "io",
            EvalError::Json { .. } => "json",
            EvalError::JsonlLine { .. } => "jsonl_line",
            EvalError::MissingAnswers { .. } => "missing_answers",
            EvalError::UnknownDataset(_) => "unknown_dataset",
            EvalError::InvalidSpec { .. } => "invalid_spec",
            EvalError::Generation { .. } => "generation",
            EvalError::Merge(_) => "merge",
            EvalError::Serialize(_) => "serialize",
            EvalError::Plot { .. } => "plot",
        }
    }

    /// Maps an I/O error on `path` to `DataMissing` when the file does not exist, `Io` otherwise.
    pub(crate) fn from_data_io(path: &std::path::Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            EvalError::DataMissing {
                path: path.to_path_buf(),
            }
        } else {
            EvalError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_data_names_the_fetch_script() {
        let err = EvalError::from_data_io(
            std::path::Path::new("data/hotpotqa.json"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert_eq!(err.kind(), "data_missing");
        let msg = err.to_string();
        assert!(msg.contains("scripts/fetch-data.sh"), "{msg}");
        assert!(msg.contains("data/hotpotqa.json"), "{msg}");
    }
}
