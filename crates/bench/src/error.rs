//! What can stop a benchmark run.

use std::path::PathBuf;

/// Why the benchmark (or one platform of it) could not run.
///
/// A failing platform inside a suite does not end the run: the suite records it as
/// skipped with this error's text, so that one broken peer never hides the others.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A process baseline could not be compiled.
    #[error(
        "cannot build the process baseline {name} ({detail}); it needs gcc and static glibc: apt-get install build-essential"
    )]
    Baseline {
        /// Which baseline.
        name: &'static str,
        /// The compiler's complaint.
        detail: String,
    },
    /// A platform failed during a run.
    #[error("{platform}: {detail}")]
    Platform {
        /// Which platform.
        platform: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// File-system trouble in the output or work directory.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A plot could not be drawn.
    #[error("plotting {metric}: {detail}")]
    Plot {
        /// The metric's id.
        metric: String,
        /// What went wrong.
        detail: String,
    },
    /// The results could not be serialised.
    #[error("writing results.json: {0}")]
    Json(#[from] serde_json::Error),
}

impl BenchError {
    /// A platform failure.
    pub(crate) fn platform(platform: &'static str, detail: impl Into<String>) -> Self {
        Self::Platform {
            platform,
            detail: detail.into(),
        }
    }

    /// An I/O failure on `path` (for `map_err`).
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
