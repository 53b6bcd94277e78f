//! The server backend: a client of the OpenAI-compatible API (`/v1/chat/completions`,
//! `/v1/models`) that vLLM, TGI, SGLang, Ollama and llama.cpp's server speak. The server
//! applies its model's chat template; srlm sends the paper's prompts as the user turn, with
//! `n`, the sampling parameters and the seed. Up to `concurrency` requests are in flight, each
//! on its own thread; results are handed back as they arrive.
//!
//! A reply with fewer choices than asked (llama.cpp's server answers one whatever `n` says) is
//! topped up with further requests for the missing candidates, each with the seed moved on by
//! the candidates already had, so the same server gives the same candidates every time. A
//! server that refuses `n` > 1 with a 400 (llama.cpp's own `llama-server`) is asked for one
//! candidate per request from then on.
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use self::http::Http;
use self::wire::{ChatCompletion, ChatCompletionRequest, Message, ModelList};
use super::{Backend, BackendError, ChatRequest, DigitVerdict, JudgeRequest, Sink};
use crate::engine::generate::{Finish, Generation, SamplingParams};
use crate::engine::judge::{judge_prompt, DigitScore};

mod digits;
pub mod http;
pub mod wire;

/// What the server backend talks to; recorded in the stage's parameters (a run against
/// another server or model is another run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerTarget {
    /// The base URL, ending in `/v1`.
    pub url: String,
    /// The served model; `None`: the only one the server lists.
    #[serde(default)]
    pub model: Option<String>,
}

impl ServerTarget {
    /// A checked target: an http(s) URL without credentials (the API key travels in
    /// `SRLM_API_KEY`, never in a URL that would be recorded), without a trailing `/`.
    pub fn new(url: &str, model: Option<String>) -> Result<Self, ServerError> {
        endpoint(url)?;
        let u = url::Url::parse(url).expect("checked by endpoint");
        if !u.username().is_empty() || u.password().is_some() {
            return Err(ServerError::BadUrl {
                url: strip_credentials(url),
                reason: "credentials in the URL would be recorded; put the key in SRLM_API_KEY"
                    .into(),
            });
        }
        Ok(ServerTarget {
            url: url.trim_end_matches('/').to_string(),
            model,
        })
    }
}

/// How the client talks (recorded in the run's `engine`; none of it changes the replies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerOptions {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Seconds one request may take, reply included.
    pub timeout_s: f64,
    /// Tries after the first on connection errors, 429 and 5xx.
    pub retries: u32,
    /// The first backoff wait in milliseconds (doubled each retry, with jitter).
    pub backoff_ms: u64,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            concurrency: 8,
            timeout_s: 600.0,
            retries: 5,
            backoff_ms: 500,
        }
    }
}

/// The API key: `SRLM_API_KEY`, else `OPENAI_API_KEY` (never recorded or shown).
pub fn api_key_from_env() -> Option<String> {
    ["SRLM_API_KEY", "OPENAI_API_KEY"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{url}: not a base URL ({reason}); give e.g. http://127.0.0.1:8080/v1")]
    BadUrl { url: String, reason: String },
    #[error("{url}: https needs srlm built with the `https` feature")]
    Scheme { url: String },
    #[error("{what}: {reason}")]
    Transport { what: String, reason: String },
    #[error("{what}: HTTP {status}: {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
    },
    #[error("{what}: malformed reply: {reason}")]
    Malformed { what: String, reason: String },
    #[error("{what}: the reply is not UTF-8")]
    NotUtf8 { what: String },
    #[error("gave up after {tries} tries: {last}")]
    GaveUp { tries: u32, last: Box<ServerError> },
    #[error("the server lists no model at {url}/models")]
    NoModels { url: String },
    #[error("the server serves several models; name one ({})", .available.join(", "))]
    Ambiguous { available: Vec<String> },
    #[error("the server does not serve model `{name}` (it serves: {})", .available.join(", "))]
    UnknownModel {
        name: String,
        available: Vec<String>,
    },
    #[error("the reply has no choices")]
    NoChoices,
    #[error("the reply holds {got} of {want} candidates and a request for the rest returned none")]
    ShortN { got: usize, want: usize },
    #[error(
        "the server returned no log-probabilities (the digit judge needs `logprobs`; vLLM: \
         raise --max-logprobs; Ollama has none: use the sampled judge)"
    )]
    NoLogprobs,
}

/// The endpoint without credentials or query: scheme, host, port, path.
pub fn endpoint(url: &str) -> Result<Value, ServerError> {
    let bad = |reason: String| ServerError::BadUrl {
        url: strip_credentials(url),
        reason,
    };
    let u = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad(format!("scheme {} is not http or https", u.scheme())));
    }
    Ok(json!({
        "scheme": u.scheme(),
        "host": u.host_str().unwrap_or_default(),
        "port": u.port_or_known_default(),
        "path": u.path(),
    }))
}

/// `url` with any `user:password@` and query removed (what error messages may show).
pub fn strip_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => "(unparseable URL)".to_string(),
    }
}

/// A connected server: its chosen model and identity.
pub struct Server {
    http: Http,
    model: String,
    identity: Value,
    options: ServerOptions,
    started: Instant,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    short_replies: AtomicU64,
    /// Set when the server refused `n` > 1.
    one_choice: AtomicBool,
    fingerprints: Mutex<Vec<String>>,
}

impl Server {
    /// Connects: lists the models (`GET /models`), chooses one, and asks for llama.cpp's
    /// `/props` (other servers have none).
    pub fn connect(target: &ServerTarget, options: &ServerOptions) -> Result<Self, ServerError> {
        let target = ServerTarget::new(&target.url, target.model.clone())?;
        let base = target.url.clone();
        let key = api_key_from_env();
        let http = Http::new(
            &base,
            key,
            Duration::from_secs_f64(options.timeout_s.max(0.001)),
            options.retries,
            Duration::from_millis(options.backoff_ms),
        );
        let reply = http.get("models")?;
        let list: ModelList =
            serde_json::from_value(reply.json).map_err(|e| ServerError::Malformed {
                what: format!("{}/models", http.base),
                reason: e.to_string(),
            })?;
        let available: Vec<String> = list.data.iter().map(|m| m.id.clone()).collect();
        let model = match &target.model {
            Some(name) if available.iter().any(|a| a == name) => name.clone(),
            // a server that lists nothing may still serve the name it is given
            Some(name) if available.is_empty() => name.clone(),
            Some(name) => {
                return Err(ServerError::UnknownModel {
                    name: name.clone(),
                    available,
                })
            }
            None => match available.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(ServerError::NoModels {
                        url: strip_credentials(&base),
                    })
                }
                _ => return Err(ServerError::Ambiguous { available }),
            },
        };
        let info = list.data.iter().find(|m| m.id == model);
        let root = base
            .trim_end_matches('/')
            .trim_end_matches("/v1")
            .to_string();
        let props = http.get_optional(&format!("{root}/props"));
        let identity = json!({
            "models_entry": info.map(|m| Value::Object(m.rest.clone())),
            "server_header": reply.server_header,
            "props": props.map(|p| slim_props(&p)),
        });
        Ok(Server {
            http,
            model,
            identity,
            options: options.clone(),
            started: Instant::now(),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            short_replies: AtomicU64::new(0),
            one_choice: AtomicBool::new(false),
            fingerprints: Mutex::new(Vec::new()),
        })
    }

    /// The served model's id.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// One chat completion request; returns its choices (possibly fewer than `n`).
    fn complete(
        &self,
        user: &str,
        n: usize,
        sampling: &SamplingParams,
        top_logprobs: Option<u32>,
    ) -> Result<ChatCompletion, ServerError> {
        let body = ChatCompletionRequest {
            model: &self.model,
            messages: vec![Message {
                role: "user",
                content: user,
            }],
            n,
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            top_k: (sampling.top_k > 0).then_some(sampling.top_k),
            max_tokens: sampling.max_tokens,
            seed: sampling.seed,
            stream: false,
            logprobs: top_logprobs.map(|_| true),
            top_logprobs,
        };
        let body = serde_json::to_value(&body).expect("a request serialises");
        let reply = self.http.post("chat/completions", &body)?;
        let what = format!("{}/chat/completions", strip_credentials(&self.http.base));
        let c: ChatCompletion =
            serde_json::from_value(reply.json).map_err(|e| ServerError::Malformed {
                what,
                reason: e.to_string(),
            })?;
        if let Some(u) = c.usage {
            self.prompt_tokens
                .fetch_add(u.prompt_tokens, Ordering::Relaxed);
            self.completion_tokens
                .fetch_add(u.completion_tokens, Ordering::Relaxed);
        }
        if let Some(f) = &c.system_fingerprint {
            let mut fp = self.fingerprints.lock().expect("not poisoned");
            if !fp.contains(f) {
                fp.push(f.clone());
            }
        }
        if c.choices.is_empty() {
            return Err(ServerError::NoChoices);
        }
        Ok(c)
    }

    /// `n` candidates for `user`, topping up a short reply.
    fn candidates(
        &self,
        user: &str,
        n: usize,
        sampling: &SamplingParams,
    ) -> Result<Vec<Generation>, ServerError> {
        let mut out: Vec<Generation> = Vec::with_capacity(n);
        while out.len() < n {
            let mut s = sampling.clone();
            s.seed = sampling.seed.wrapping_add(out.len() as u64);
            let want = if self.one_choice.load(Ordering::Relaxed) {
                1
            } else {
                n - out.len()
            };
            let c = match self.complete(user, want, &s, None) {
                Ok(c) => c,
                // llama.cpp's own server refuses `n` > 1 outright: ask one at a time from now on
                Err(e) if want > 1 && refuses_n(&e) => {
                    self.one_choice.store(true, Ordering::Relaxed);
                    continue;
                }
                Err(ServerError::NoChoices) if !out.is_empty() => {
                    return Err(ServerError::ShortN {
                        got: out.len(),
                        want: n,
                    })
                }
                Err(e) => return Err(e),
            };
            if c.choices.len() < want {
                self.short_replies.fetch_add(1, Ordering::Relaxed);
            }
            let mut choices = c.choices;
            choices.sort_by_key(|ch| ch.index.unwrap_or(0));
            let k = choices.len().min(want);
            let tokens = c.usage.map(|u| u.completion_tokens as usize).unwrap_or(0);
            for (j, ch) in choices.into_iter().take(k).enumerate() {
                // usage counts the whole reply; a single choice's tokens are exact
                let share = tokens / k + usize::from(j < tokens % k);
                out.push(Generation {
                    text: ch.message.content.unwrap_or_default(),
                    tokens: share,
                    finish: match ch.finish_reason.as_deref() {
                        Some("length") => Finish::Length,
                        _ => Finish::Stop,
                    },
                });
            }
        }
        Ok(out)
    }

    /// Runs `work(i)` for i in 0..n on up to `concurrency` threads, handing each result to
    /// `done` on this thread as it arrives; after a failure no new request is sent.
    fn pool<T: Send>(
        &self,
        n: usize,
        work: impl Fn(usize) -> Result<T, ServerError> + Sync,
        done: &mut Sink<T>,
    ) {
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (tx, rx) = mpsc::channel::<(usize, Result<T, ServerError>)>();
        std::thread::scope(|s| {
            for _ in 0..self.options.concurrency.clamp(1, n.max(1)) {
                let (tx, next, stop, work) = (tx.clone(), &next, &stop, &work);
                s.spawn(move || loop {
                    // checked before taking an index, so every index taken is answered
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    let r = work(i);
                    if r.is_err() {
                        stop.store(true, Ordering::SeqCst);
                    }
                    if tx.send((i, r)).is_err() {
                        break;
                    }
                });
            }
            drop(tx);
            for (i, r) in rx {
                done(i, r.map_err(BackendError::from));
            }
        });
        let sent = next.load(Ordering::SeqCst).min(n);
        for i in sent..n {
            if stop.load(Ordering::SeqCst) {
                done(i, Err(BackendError::Cancelled { request: i }));
            }
        }
    }
}

/// Whether `e` is a server refusing more than one choice per request: a 400, or any status
/// whose message says so (llama.cpp's "Only one completion choice is allowed", sent as a 500).
fn refuses_n(e: &ServerError) -> bool {
    match e {
        ServerError::Status {
            status, message, ..
        } => *status == 400 || http::refuses_choices(message),
        ServerError::GaveUp { last, .. } => refuses_n(last),
        _ => false,
    }
}

/// The identity fields of llama.cpp's `/props` (not its whole chat template).
fn slim_props(p: &Value) -> Value {
    let mut o = serde_json::Map::new();
    for k in ["build_info", "model_path", "total_slots", "n_ctx"] {
        if let Some(v) = p.get(k) {
            o.insert(k.to_string(), v.clone());
        }
    }
    if let Some(v) = p.pointer("/default_generation_settings/n_ctx") {
        o.insert("n_ctx".into(), v.clone());
    }
    Value::Object(o)
}

impl Backend for Server {
    fn describe(&self) -> Value {
        json!({
            "backend": "server",
            "api": "openai-chat-completions",
            "endpoint": endpoint(&self.http.base).unwrap_or(Value::Null),
            "model": self.model,
            "identity": self.identity,
            "client": self.options,
            "system_fingerprints": *self.fingerprints.lock().expect("not poisoned"),
            "one_choice_per_request": self.one_choice.load(Ordering::Relaxed),
        })
    }

    fn usage(&self) -> Value {
        json!({
            "http_requests": self.http.sent.load(Ordering::Relaxed),
            "retries": self.http.retried.load(Ordering::Relaxed),
            "short_replies": self.short_replies.load(Ordering::Relaxed),
            "prompt_tokens": self.prompt_tokens.load(Ordering::Relaxed),
            "completion_tokens": self.completion_tokens.load(Ordering::Relaxed),
            "wall_s": self.started.elapsed().as_secs_f64(),
        })
    }

    fn chat(&self, requests: &[ChatRequest], done: &mut Sink<Vec<Generation>>) {
        self.pool(
            requests.len(),
            |i| {
                let r = &requests[i];
                self.candidates(&r.user, r.n, &r.sampling)
            },
            done,
        )
    }

    fn judge(
        &self,
        requests: &[JudgeRequest],
        samples: usize,
        sampling: &SamplingParams,
        done: &mut Sink<Vec<Generation>>,
    ) {
        self.pool(
            requests.len(),
            |i| {
                let r = &requests[i];
                self.candidates(
                    &judge_prompt(&r.instruction, &r.response),
                    samples,
                    sampling,
                )
            },
            done,
        )
    }

    fn digits(
        &self,
        requests: &[JudgeRequest],
        sampling: &SamplingParams,
        done: &mut Sink<DigitVerdict>,
    ) {
        self.pool(
            requests.len(),
            |i| {
                let r = &requests[i];
                // greedy: the digit judge reads a distribution, it does not sample one
                let s = SamplingParams {
                    temperature: 0.0,
                    ..sampling.clone()
                };
                let c = self.complete(
                    &judge_prompt(&r.instruction, &r.response),
                    1,
                    &s,
                    Some(digits::TOP_LOGPROBS),
                )?;
                let ch = c.choices.into_iter().next().ok_or(ServerError::NoChoices)?;
                let tokens = ch
                    .logprobs
                    .and_then(|l| l.content)
                    .ok_or(ServerError::NoLogprobs)?;
                let score: Option<DigitScore> = digits::score_after_colon(&tokens);
                Ok(DigitVerdict {
                    score,
                    text: ch.message.content,
                })
            },
            done,
        )
    }
}
