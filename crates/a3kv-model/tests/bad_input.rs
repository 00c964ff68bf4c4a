//! Bad input gives a clear error naming the problem, never a panic.

use a3kv_model::testing::tiny_model;
use a3kv_model::{load_model, Family, LoadOptions, ModelError};

#[test]
fn missing_file_is_a_clear_error() {
    let e = load_model(
        std::path::Path::new("/nonexistent/model.gguf"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, ModelError::Io { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/model.gguf"));
}

#[test]
fn truncated_or_foreign_gguf_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.gguf");
    std::fs::write(&p, b"definitely not a gguf file").unwrap();
    let e = load_model(&p, &LoadOptions::default()).unwrap_err();
    assert!(e.to_string().contains("bad.gguf"), "{e}");
    // A real GGUF cut short: the header parses, a tensor read fails.
    let real = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if let Ok(bytes) = std::fs::read(&real) {
        let cut = dir.path().join("cut.gguf");
        std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
        let e = load_model(&cut, &LoadOptions::default()).unwrap_err();
        assert!(matches!(e, ModelError::InvalidFile { .. }), "{e}");
    }
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type":"bert","vocab_size":8,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2}"#,
    )
    .unwrap();
    let e = load_model(dir.path(), &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(e, ModelError::UnsupportedArchitecture(ref a) if a == "bert"),
        "{e}"
    );
}

#[test]
fn bad_ids_and_lengths_are_errors() {
    let m = tiny_model(Family::Llama, 1).unwrap();
    assert!(matches!(
        m.prefill(&[], 0, false),
        Err(ModelError::EmptyInput)
    ));
    assert!(matches!(
        m.prefill(&[1, 64], 0, false),
        Err(ModelError::TokenOutOfRange {
            id: 64,
            vocab_size: 64
        })
    ));
    let long = vec![1u32; 513];
    assert!(matches!(
        m.prefill(&long, 0, false),
        Err(ModelError::ContextOverflow {
            tokens: 513,
            limit: 512
        })
    ));
    assert!(m.layer_qkv(99, &m.embed(&[1]).unwrap()).is_err());
}
