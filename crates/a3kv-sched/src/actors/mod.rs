//! The pipeline's actors, one per file (docs/design.md §4.2):
//! Admission → ChunkLoader → RelevanceScorer → RecomputeBatcher → Decoder, under a
//! Supervisor that restarts a failed stage.

pub mod admission;
pub mod batcher;
pub mod decoder;
pub mod loader;
pub mod scorer;
pub mod supervisor;
