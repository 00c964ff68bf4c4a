//! The model crate's error type.

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file or directory does not exist or cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid GGUF / safetensors / config.json, or is truncated.
    #[error("invalid model file {path}: {message}")]
    InvalidFile { path: String, message: String },
    /// The architecture named by the file is not one a3kv runs.
    #[error("unsupported architecture {0:?} (supported: llama, mistral, qwen2)")]
    UnsupportedArchitecture(String),
    /// A required tensor or metadata key is missing.
    #[error("missing {0} in model file")]
    Missing(String),
    /// Token ids outside the vocabulary.
    #[error("token id {id} out of range (vocabulary size {vocab_size})")]
    TokenOutOfRange { id: u32, vocab_size: usize },
    /// An empty prompt was given where at least one token is needed.
    #[error("empty input: at least one token is required")]
    EmptyInput,
    /// A prompt that does not fit the model's context window.
    #[error("prompt of {tokens} tokens exceeds the context limit of {limit} tokens")]
    ContextOverflow { tokens: usize, limit: usize },
    /// Inconsistent shapes or arguments handed to the layer API.
    #[error("bad argument: {0}")]
    BadArgument(String),
    /// Tokenizer construction or encoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// No model was named and the default model is in none of the places searched.
    #[error(
        "default model {file} not found; searched: {}. {}",
        searched.join("; "),
        crate::locate::MISSING_MODEL_HINT
    )]
    DefaultModelNotFound { file: String, searched: Vec<String> },
    /// An error from the tensor library.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    /// Short, stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelError::Io { .. } => "io",
            ModelError::InvalidFile { .. } => "invalid_file",
            ModelError::UnsupportedArchitecture(_) => "unsupported_architecture",
            ModelError::Missing(_) => "missing",
            ModelError::TokenOutOfRange { .. } => "token_out_of_range",
            ModelError::EmptyInput => "empty_input",
            ModelError::ContextOverflow { .. } => "context_overflow",
            ModelError::BadArgument(_) => "bad_argument",
            ModelError::Tokenizer(_) => "tokenizer",
            ModelError::DefaultModelNotFound { .. } => "default_model_not_found",
            ModelError::Candle(_) => "tensor",
        }
    }
}

/// Result alias for the model crate.
pub type Result<T> = std::result::Result<T, ModelError>;
