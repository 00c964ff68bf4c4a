//! The fusion crate's error type.

use a3kv_model::ModelError;

/// What can go wrong while assembling or fusing a prompt.
#[derive(Debug, thiserror::Error)]
pub enum FusionError {
    /// A model error (bad ids, context overflow, tensor failure).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The request's parameters are out of range.
    #[error("invalid fusion parameter: {0}")]
    InvalidParameter(String),
    /// A named fusion option is out of range or does not apply to the method.
    #[error("invalid fusion option {option}: {message}")]
    InvalidOption {
        /// The option's name (as in HTTP's `fusion` object and the configuration).
        option: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A cached chunk does not fit the prompt or the model (length, layers, shape).
    #[error("chunk cache mismatch: {0}")]
    ChunkMismatch(String),
    /// The prompt has no question tokens.
    #[error("the question is empty")]
    EmptyQuestion,
    /// A string is not a chunk id (64 hex digits).
    #[error("invalid chunk id {0:?}: expected 64 hex digits")]
    ParseChunkId(String),
}

impl From<candle_core::Error> for FusionError {
    fn from(e: candle_core::Error) -> Self {
        FusionError::Model(ModelError::Candle(e))
    }
}

impl FusionError {
    /// Short, stable label for metrics and HTTP status mapping.
    pub fn kind(&self) -> &'static str {
        match self {
            FusionError::Model(e) => e.kind(),
            FusionError::InvalidParameter(_) | FusionError::InvalidOption { .. } => {
                "invalid_parameter"
            }
            FusionError::ChunkMismatch(_) => "chunk_mismatch",
            FusionError::EmptyQuestion => "empty_question",
            FusionError::ParseChunkId(_) => "parse_chunk_id",
        }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, FusionError>;
