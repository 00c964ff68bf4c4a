//! The official Python `openai` client (PyPI `openai`) against the real server: chat with
//! documents non-streaming and streaming (greedy: identical text), completions, logprobs
//! (parsed into the client's own types), errors.

use std::process::Command;

use serde_json::Value;

use crate::common::{base, lock, shared};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_openai_client_chat_rag_stream_equals_non_stream() {
    let Some(s) = shared() else { return };
    let _g = lock().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/openai_client.py");
    let url = base(s.addr);
    let out =
        tokio::task::spawn_blocking(move || Command::new("python3").arg(script).arg(url).output())
            .await
            .expect("join")
            .expect("python3 runs (install the client with `pip install openai`)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python openai client failed (needs `pip install openai`): {stderr}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("script prints JSON");
    let text = v["text"].as_str().expect("text");
    assert!(!text.is_empty(), "{v}");
    assert_eq!(
        v["stream_text"], v["text"],
        "greedy streamed text must equal the non-streamed text: {v}"
    );
    assert_eq!(v["stream_finish_reason"], v["finish_reason"], "{v}");
    let usage = &v["usage"];
    assert!(
        usage["completion_tokens"]
            .as_u64()
            .is_some_and(|n| (1..=12).contains(&n)),
        "{v}"
    );
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap_or(0)
                + usage["completion_tokens"].as_u64().unwrap_or(0)
        )
    );
    let fusion = &usage["fusion"];
    assert_eq!(fusion["method"], "a3", "{v}");
    assert!(
        fusion["reused_tokens"].as_u64().is_some_and(|n| n > 0),
        "{v}"
    );
    assert!(fusion["recomputed_tokens"].as_u64().is_some(), "{v}");
    assert!(
        fusion["recompute_ratio"]
            .as_f64()
            .is_some_and(|r| (0.0..=1.0).contains(&r)),
        "{v}"
    );
    assert_eq!(
        v["stream_usage"]["completion_tokens"], usage["completion_tokens"],
        "{v}"
    );
    assert_eq!(v["stream_usage"]["fusion"]["method"], "a3", "{v}");
    assert!(
        !v["completion_text"].as_str().unwrap_or_default().is_empty(),
        "{v}"
    );
    assert_eq!(v["completion_stream_text"], v["completion_text"], "{v}");
    let n = v["logprobs_completion_tokens"].as_u64().expect("usage");
    assert!(n > 0, "{v}");
    assert_eq!(v["logprobs_entries"].as_u64(), Some(n), "{v}");
    assert!(
        v["logprobs_top_counts"]
            .as_array()
            .is_some_and(|c| c.iter().all(|k| k == 2)),
        "{v}"
    );
    assert_eq!(v["logprobs_greedy_is_top1"], true, "{v}");
    assert_eq!(v["logprobs_bytes_spell_text"], true, "{v}");
    assert_eq!(
        v["completion_logprobs_tokens"], v["completion_logprobs_completion_tokens"],
        "{v}"
    );
    assert!(
        v["completion_logprobs_top_sizes"]
            .as_array()
            .is_some_and(|c| !c.is_empty() && c.iter().all(|k| k == 2)),
        "{v}"
    );
    assert_eq!(v["unknown_model_status"], 404, "{v}");
    assert_eq!(v["bad_fusion_status"], 400, "{v}");
}
