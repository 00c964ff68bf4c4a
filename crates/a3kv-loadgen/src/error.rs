//! `LoadgenError`: everything that stops a load-generation run (bad arguments, an unreadable
//! corpus, an unwritable report). Failures of individual requests are not errors of the run:
//! they are counted by [`crate::RequestErrorKind`] in the report.

use std::path::PathBuf;

/// Why a load-generation run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// An argument is out of range or arguments contradict each other; the message names the flag.
    #[error("invalid argument: {0}")]
    InvalidArgs(String),
    /// The corpus file exists but could not be read.
    #[error("cannot read corpus {path}: {source}")]
    CorpusRead {
        /// The corpus file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The corpus file is not JSON, or holds no words.
    #[error("bad corpus {path}: {message}")]
    CorpusFormat {
        /// The corpus file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    /// The `--out` report could not be written.
    #[error("cannot write report {path}: {source}")]
    WriteReport {
        /// The report path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `--model` was not given and the server's model list could not be read.
    #[error("finding the model at {url} failed: {message}; pass --model")]
    ModelDiscovery {
        /// The `/v1/models` URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// `--precompute`: the server did not store the document pool.
    #[error("precomputing the document pool at {url} failed: {message}")]
    Precompute {
        /// The chunk API URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The report could not be serialised to JSON.
    #[error("cannot serialise report: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl LoadgenError {
    /// A short stable label for the error, for logs and exit messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidArgs(_) => "invalid_args",
            Self::CorpusRead { .. } => "corpus_read",
            Self::CorpusFormat { .. } => "corpus_format",
            Self::HttpClient(_) => "http_client",
            Self::WriteReport { .. } => "write_report",
            Self::Precompute { .. } => "precompute",
            Self::ModelDiscovery { .. } => "model_discovery",
            Self::Serialize(_) => "serialize",
        }
    }
}
