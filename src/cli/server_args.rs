//! The flags that put a stage on an OpenAI-compatible inference server instead of the
//! in-process engine (`--server URL` and the client's options).
use serde_json::{json, Value};

use crate::backend::server::{ServerOptions, ServerTarget};

/// Server flags of `gen-prompts`, `gen-responses`, `judge`, `eval-judge`, `head2head` (its
/// judge) and `import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Run on an OpenAI-compatible server at this base URL (ending in `/v1`, e.g.
    /// `http://127.0.0.1:8080/v1`) instead of in process. The key, if the server wants one,
    /// comes from SRLM_API_KEY (else OPENAI_API_KEY) and is never recorded.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// The served model (default: the only one `GET /v1/models` lists).
    #[arg(long, value_name = "NAME", requires = "server")]
    pub server_model: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Seconds one request may take.
    #[arg(long, value_name = "SECS", default_value_t = 600.0)]
    pub timeout: f64,
    /// Retries on connection errors, 429 and 5xx (exponential backoff with jitter).
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// The first backoff wait in milliseconds.
    #[arg(long, default_value_t = 500, hide = true)]
    pub retry_base_ms: u64,
}

impl ServerArgs {
    /// The server to run on, if one is named.
    pub fn target(&self) -> anyhow::Result<Option<ServerTarget>> {
        match &self.server {
            Some(url) => Ok(Some(ServerTarget::new(url, self.server_model.clone())?)),
            None => Ok(None),
        }
    }

    /// The engine choices to record (`{}` for the in-process engine: it describes itself).
    pub fn engine(&self) -> Value {
        match self.server {
            Some(_) => json!({
                "backend": "server",
                "client": ServerOptions {
                    concurrency: self.concurrency as usize,
                    timeout_s: self.timeout,
                    retries: self.retries,
                    backoff_ms: self.retry_base_ms,
                },
            }),
            None => json!({}),
        }
    }
}
