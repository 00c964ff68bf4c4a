//! Validation at the edge: turns a [`GenerateRequest`] into a [`ValidRequest`] — tokenised,
//! documents resolved to chunk token ids and content addresses, limits checked. Inner
//! stages trust this type.

use std::collections::HashMap;
use std::sync::Arc;

use a3kv_fusion::{ChunkId, FusionParams, Method, RagDocument, RagParts, RagPrompt};
use a3kv_model::{SamplingParams, DEFAULT_RAG_INSTRUCTION};
use a3kv_store::ChunkStore;

use crate::shared::Shared;
use crate::{
    DocumentRef, EngineConfig, EngineError, GenerateRequest, PromptSpec, MAX_TOP_LOGPROBS,
};

/// Document id → its chunks' token ids (owned by Admission; snapshots go to preparation).
pub type DocRegistry = HashMap<String, Arc<Vec<Vec<u32>>>>;

/// One cached segment of a prompt (the prefix or a document chunk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Content address in the store.
    pub id: ChunkId,
    /// Its token ids.
    pub ids: Vec<u32>,
}

/// How the prompt is prefilled.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Chat or text prompt: a plain full prefill, no fusion report.
    Plain {
        /// Prompt ids.
        ids: Vec<u32>,
    },
    /// RAG prompt: cached parts (prefix first when non-empty, then chunks) fused by `params`.
    Fused {
        /// The assembled prompt.
        prompt: RagPrompt,
        /// Cached parts in row order.
        parts: Vec<Part>,
        /// Fusion parameters (validated).
        params: FusionParams,
    },
}

impl Plan {
    /// Prompt rows.
    pub fn prompt_tokens(&self) -> usize {
        match self {
            Plan::Plain { ids } => ids.len(),
            Plan::Fused { prompt, .. } => prompt.len(),
        }
    }
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    /// Prefill plan.
    pub plan: Plan,
    /// Sampling (validated).
    pub sampling: SamplingParams,
    /// Tokens to generate at most (clamped to the context window).
    pub max_tokens: usize,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Alternatives per token when log-probabilities are wanted (`<= MAX_TOP_LOGPROBS`).
    pub logprobs: Option<usize>,
    /// Whether the usage carries the first position's logits
    /// ([`GenerateRequest::first_token_logits`]).
    pub first_token_logits: bool,
    /// Inline documents given an id: register them (id → chunks).
    pub new_docs: Vec<(String, Arc<Vec<Vec<u32>>>)>,
}

/// Cheap checks done synchronously in `submit` (no tokenising).
pub fn precheck(cfg: &EngineConfig, req: &GenerateRequest) -> Result<(), EngineError> {
    if req.max_tokens > cfg.max_new_tokens {
        return Err(EngineError::InvalidRequest(format!(
            "max_tokens {} exceeds the limit of {}",
            req.max_tokens, cfg.max_new_tokens
        )));
    }
    req.sampling
        .validate()
        .map_err(|e| EngineError::InvalidRequest(e.to_string()))?;
    if req.stop.iter().any(String::is_empty) {
        return Err(EngineError::InvalidRequest("empty stop string".into()));
    }
    if let Some(n) = req.logprobs.filter(|&n| n > MAX_TOP_LOGPROBS) {
        return Err(EngineError::InvalidRequest(format!(
            "logprobs asks for {n} alternatives; at most {MAX_TOP_LOGPROBS}"
        )));
    }
    match &req.prompt {
        PromptSpec::Rag {
            documents,
            question,
            ..
        } => {
            if documents.len() > cfg.max_documents {
                return Err(EngineError::TooManyDocuments {
                    count: documents.len(),
                    limit: cfg.max_documents,
                });
            }
            if question.trim().is_empty() {
                return Err(EngineError::InvalidRequest("the question is empty".into()));
            }
        }
        PromptSpec::Chat { messages } if messages.is_empty() => {
            return Err(EngineError::InvalidRequest("no messages".into()))
        }
        PromptSpec::Text { prompt } if prompt.is_empty() => {
            return Err(EngineError::InvalidRequest("empty prompt".into()))
        }
        _ => {}
    }
    Ok(())
}

/// Resolves the request's document ids that `registry` lacks: a document record in the
/// store's lower tiers, else a chunk id.
pub async fn lookup_unregistered(
    store: &ChunkStore,
    req: &GenerateRequest,
    registry: &DocRegistry,
) -> Result<DocRegistry, EngineError> {
    let mut found = DocRegistry::new();
    if let PromptSpec::Rag { documents, .. } = &req.prompt {
        for d in documents {
            if let DocumentRef::Id(id) = d {
                if let Some(chunks) = registry.get(id) {
                    found.insert(id.clone(), chunks.clone());
                    continue;
                }
                // Stored by id by an earlier run or another replica.
                if let Some(chunks) = store.get_document(id).await? {
                    found.insert(id.clone(), Arc::new(chunks));
                    continue;
                }
                let key: ChunkId = id
                    .parse()
                    .map_err(|_| EngineError::UnknownChunk(id.clone()))?;
                match store.get(&key).await? {
                    Some((data, _)) => {
                        found.insert(id.clone(), Arc::new(vec![data.meta.token_ids.clone()]));
                    }
                    None => return Err(EngineError::UnknownChunk(id.clone())),
                }
            }
        }
    }
    Ok(found)
}

/// Tokenises and validates (runs on the compute pool). `docs` resolves every
/// [`DocumentRef::Id`] of the request (see [`lookup_unregistered`]).
pub fn prepare(
    shared: &Shared,
    req: GenerateRequest,
    docs: &DocRegistry,
) -> Result<ValidRequest, EngineError> {
    let cfg = &shared.cfg;
    precheck(cfg, &req)?;
    let tok = &shared.tok;
    let model = &shared.model;
    let mut new_docs = Vec::new();
    let plan = match req.prompt {
        PromptSpec::Chat { messages } => Plan::Plain {
            ids: tok.encode(&tok.template().render(&messages, true))?,
        },
        PromptSpec::Text { prompt } => Plan::Plain {
            ids: tok.encode(&prompt)?,
        },
        PromptSpec::Rag {
            system,
            documents,
            question,
        } => {
            // The default as the shadow controller has it now (raised while fusion drifts).
            let mut params = req
                .fusion
                .unwrap_or_else(|| crate::shadow::default_params(shared));
            params.validate(model.num_layers())?;
            if !shared
                .fusion_open
                .load(std::sync::atomic::Ordering::Acquire)
            {
                // The start-up gate failed on this model: exact, never silently wrong.
                params = FusionParams::method(Method::Full);
            }
            // Stored documents by id, inline ones as text: one assembly (`RagParts`) for all.
            let mut resolved = Vec::with_capacity(documents.len());
            for d in &documents {
                resolved.push(match d {
                    DocumentRef::Id(id) => RagDocument::Chunks(
                        docs.get(id)
                            .map(|c| c.as_slice())
                            .ok_or_else(|| EngineError::UnknownChunk(id.clone()))?,
                    ),
                    DocumentRef::Text { text, .. } => RagDocument::Text(text),
                });
            }
            let rag = RagParts::assemble(
                tok,
                system.as_deref(),
                DEFAULT_RAG_INSTRUCTION,
                resolved,
                &question,
                cfg.chunk_tokens,
            )?;
            for (i, d) in documents.iter().enumerate() {
                if let DocumentRef::Text { id: Some(id), .. } = d {
                    new_docs.push((id.clone(), Arc::new(rag.document(i).to_vec())));
                }
            }
            let prompt = rag.prompt()?;
            let fp = model.fingerprint();
            let parts = rag
                .cached_parts()
                .map(|ids| Part {
                    id: ChunkId::of(fp, ids),
                    ids: ids.clone(),
                })
                .collect();
            if params.method.selector().is_full_prefill() {
                // Full prefill reads no cache.
                Plan::Fused {
                    prompt,
                    parts: Vec::new(),
                    params,
                }
            } else {
                Plan::Fused {
                    prompt,
                    parts,
                    params,
                }
            }
        }
    };
    let tokens = plan.prompt_tokens();
    if tokens == 0 {
        return Err(EngineError::InvalidRequest("the prompt is empty".into()));
    }
    let room = answer_room(cfg.max_prompt_tokens, model.config().max_position, tokens)?;
    Ok(ValidRequest {
        plan,
        sampling: req.sampling,
        max_tokens: req.max_tokens.min(room),
        stop: req.stop,
        logprobs: req.logprobs,
        first_token_logits: req.first_token_logits,
        new_docs,
    })
}

/// How many tokens a prompt of `tokens` rows leaves room to generate, or `PromptTooLong` with
/// the limit that applies: `engine.max_prompt_tokens` as configured, capped by the model's
/// context of `max_position` rows. A prompt may fill the context: the first token is sampled
/// from the prefill's logits, and each later one needs the position of the token before it.
pub fn answer_room(
    max_prompt_tokens: usize,
    max_position: usize,
    tokens: usize,
) -> Result<usize, EngineError> {
    let limit = max_prompt_tokens.min(max_position);
    if tokens > limit {
        return Err(EngineError::PromptTooLong { tokens, limit });
    }
    Ok(max_position - tokens + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_limit_is_the_configured_one_capped_by_the_context() {
        // The configured limit is the one reported, also when it equals the context.
        assert_eq!(answer_room(8192, 8192, 8192).ok(), Some(1));
        assert!(matches!(
            answer_room(8192, 8192, 8193),
            Err(EngineError::PromptTooLong {
                tokens: 8193,
                limit: 8192
            })
        ));
        assert!(matches!(
            answer_room(100, 8192, 101),
            Err(EngineError::PromptTooLong {
                tokens: 101,
                limit: 100
            })
        ));
        // A limit above the context is capped by it.
        assert!(matches!(
            answer_room(1 << 20, 512, 513),
            Err(EngineError::PromptTooLong { limit: 512, .. })
        ));
        // Room: n tokens need the n - 1 positions after the prompt.
        assert_eq!(answer_room(8192, 512, 500).ok(), Some(13));
    }
}
