//! `MethodSpec`: a fusion method (`full`, `reuse`, `cacheblend`, `epic`, `a3`) with its
//! parameters, as the runner hands it to the backend and the report labels it.

use serde::{Deserialize, Serialize};

/// The name of the reference method that fidelity is measured against.
pub const FULL: &str = "full";

/// One method to evaluate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSpec {
    /// Method name as the engine knows it (`full`, `reuse`, `cacheblend`, `epic`, `a3`).
    pub name: String,
    /// Method parameters (e.g. `{"recompute_ratio": 0.15}`); `null` or `{}` for none.
    pub params: serde_json::Value,
}

impl MethodSpec {
    /// A method with parameters.
    pub fn new(name: impl Into<String>, params: serde_json::Value) -> Self {
        MethodSpec {
            name: name.into(),
            params,
        }
    }

    /// A method without parameters.
    pub fn plain(name: impl Into<String>) -> Self {
        MethodSpec::new(name, serde_json::Value::Null)
    }

    /// Whether this is the full-prefill reference.
    pub fn is_full(&self) -> bool {
        self.name == FULL
    }

    /// A label that tells apart runs of one method with different parameters:
    /// `a3`, or `a3(recompute_ratio=0.15)` (object keys in sorted order).
    pub fn label(&self) -> String {
        match &self.params {
            serde_json::Value::Null => self.name.clone(),
            serde_json::Value::Object(map) if map.is_empty() => self.name.clone(),
            serde_json::Value::Object(map) => {
                // Sorted explicitly: serde_json's `preserve_order` feature may be on.
                let mut parts: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
                parts.sort();
                format!("{}({})", self.name, parts.join(","))
            }
            other => format!("{}({other})", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels() {
        assert_eq!(MethodSpec::plain("full").label(), "full");
        assert_eq!(MethodSpec::new("reuse", json!({})).label(), "reuse");
        assert_eq!(
            MethodSpec::new("a3", json!({"r": 0.15, "alpha": "x"})).label(),
            "a3(alpha=\"x\",r=0.15)"
        );
        assert!(MethodSpec::plain("full").is_full());
    }
}
