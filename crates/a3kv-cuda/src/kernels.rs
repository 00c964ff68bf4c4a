//! The kernel sources in `kernels/`, embedded at build time, and the functions each file
//! defines. NVRTC gets one string per file: `common.cuh` (storage types, reductions), a
//! `#line` directive so its messages name the `.cu` file, then the file itself.

/// `kernels/common.cuh`, prepended to every file.
pub const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// One `.cu` file and the `extern "C"` kernels it defines.
#[derive(Debug, Clone, Copy)]
pub struct KernelFile {
    /// File name under `kernels/`.
    pub name: &'static str,
    /// Its text.
    pub source: &'static str,
    /// The `extern "C" __global__` functions it defines (a test keeps this list exact).
    pub functions: &'static [&'static str],
}

impl KernelFile {
    /// The string NVRTC compiles: `common.cuh`, a `#line 1` for this file, the file.
    pub fn nvrtc_source(&self) -> String {
        format!("{COMMON}\n#line 1 \"{}\"\n{}", self.name, self.source)
    }

    /// Module name used when loading its PTX.
    pub fn module(&self) -> &'static str {
        self.name.trim_end_matches(".cu")
    }
}

/// Every kernel file.
pub const FILES: [KernelFile; 4] = [
    KernelFile {
        name: "rope.cu",
        source: include_str!("../../../kernels/rope.cu"),
        functions: &["rope_f16", "rope_bf16"],
    },
    KernelFile {
        name: "gather_scatter.cu",
        source: include_str!("../../../kernels/gather_scatter.cu"),
        functions: &["gather_rows", "scatter_rows"],
    },
    KernelFile {
        name: "a3_score.cu",
        source: include_str!("../../../kernels/a3_score.cu"),
        functions: &[
            "a3_logits_f16",
            "a3_logits_bf16",
            "a3_row_stats",
            "a3_column_scores",
            "moving_average",
            "topk_rows",
        ],
    },
    KernelFile {
        name: "attention.cu",
        source: include_str!("../../../kernels/attention.cu"),
        functions: &["attention_f16", "attention_bf16"],
    },
];

/// GPU architecture the PTX is compiled for (`compute_90`: H100/H200). PTX runs on this
/// architecture and newer ones (the driver JIT-compiles it).
pub const ARCH: &str = "compute_90";

/// The file defining `function`.
pub fn file_of(function: &str) -> Option<&'static KernelFile> {
    FILES.iter().find(|f| f.functions.contains(&function))
}

/// Names of the `extern "C" __global__` functions defined in a source text.
pub fn defined_functions(source: &str) -> Vec<String> {
    let marker = "extern \"C\" __global__ void ";
    source
        .match_indices(marker)
        .filter_map(|(at, _)| {
            let rest = &source[at + marker.len()..];
            rest.split('(').next().map(|s| s.trim().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_lists_match_the_sources() {
        for f in &FILES {
            let mut defined = defined_functions(f.source);
            defined.sort();
            let mut listed: Vec<String> = f.functions.iter().map(|s| s.to_string()).collect();
            listed.sort();
            assert_eq!(defined, listed, "{}", f.name);
        }
        assert_eq!(file_of("topk_rows").map(|f| f.name), Some("a3_score.cu"));
        assert!(file_of("nope").is_none());
    }

    #[test]
    fn every_kernel_file_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".cu"))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = FILES.iter().map(|f| f.name.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
        assert!(FILES[0].nvrtc_source().contains("#line 1 \"rope.cu\""));
    }
}
