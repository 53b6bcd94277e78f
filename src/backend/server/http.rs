//! One HTTP exchange with the server, over ureq: JSON in, JSON out, with retries and
//! exponential backoff (with jitter) on connection errors, timeouts, truncated or malformed
//! replies, 429 and 5xx; any other 4xx fails at once with the server's own message. The API
//! key travels in the `Authorization` header only; it is never in an error or a record.
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use serde_json::Value;

use super::wire::{error_message, truncate};
use super::ServerError;

/// Replies larger than this are refused (a runaway server must not fill memory).
const MAX_BODY: u64 = 64 << 20;

/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// An HTTP client for one base URL.
pub struct Http {
    agent: ureq::Agent,
    /// The base URL, without a trailing `/` (e.g. `http://127.0.0.1:8080/v1`).
    pub base: String,
    key: Option<String>,
    retries: u32,
    backoff: Duration,
    /// Tries sent (first tries and retries), and retries alone.
    pub sent: AtomicU64,
    pub retried: AtomicU64,
}

/// A reply: its JSON and the `Server` header, if any.
pub struct Reply {
    pub json: Value,
    pub server_header: Option<String>,
}

/// Why one try failed, and whether another may succeed.
struct TryError {
    retry: bool,
    /// Seconds the server asked to wait (`Retry-After`).
    after: Option<u64>,
    error: ServerError,
}

impl Http {
    pub fn new(
        base: &str,
        key: Option<String>,
        timeout: Duration,
        retries: u32,
        backoff: Duration,
    ) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .build();
        Http {
            agent,
            base: base.trim_end_matches('/').to_string(),
            key,
            retries,
            backoff,
            sent: AtomicU64::new(0),
            retried: AtomicU64::new(0),
        }
    }

    /// `GET base/path`, with retries.
    pub fn get(&self, path: &str) -> Result<Reply, ServerError> {
        let url = self.url(path);
        self.with_retries(&url, || self.authorised(self.agent.get(&url)).call())
    }

    /// `GET` of an absolute URL, once: optional identity (llama.cpp's `/props`) that most
    /// servers do not have, so any failure is just `None`.
    pub fn get_optional(&self, url: &str) -> Option<Value> {
        let resp = self.authorised(self.agent.get(url)).call().ok()?;
        let body = read_body(resp, url).ok()?;
        serde_json::from_str(&body).ok()
    }

    /// `POST base/path` with a JSON body, with retries.
    pub fn post(&self, path: &str, body: &Value) -> Result<Reply, ServerError> {
        let url = self.url(path);
        let text = body.to_string();
        self.with_retries(&url, || {
            self.authorised(self.agent.post(&url))
                .set("Content-Type", "application/json")
                .send_string(&text)
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    fn authorised(&self, req: ureq::Request) -> ureq::Request {
        match &self.key {
            Some(k) => req.set("Authorization", &format!("Bearer {k}")),
            None => req,
        }
    }

    fn with_retries(
        &self,
        url: &str,
        send: impl Fn() -> Result<ureq::Response, ureq::Error>,
    ) -> Result<Reply, ServerError> {
        let mut attempt = 0u32;
        loop {
            self.sent.fetch_add(1, Ordering::Relaxed);
            let e = match try_once(url, send()) {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            if !e.retry || attempt >= self.retries {
                return Err(if attempt > 0 {
                    ServerError::GaveUp {
                        tries: attempt + 1,
                        last: Box::new(e.error),
                    }
                } else {
                    e.error
                });
            }
            std::thread::sleep(self.wait(attempt, e.after));
            attempt += 1;
            self.retried.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The wait before retry `attempt + 1`: base·2^attempt, times a jitter in [0.5, 1.5),
    /// at least what the server asked, at most [`MAX_BACKOFF`].
    fn wait(&self, attempt: u32, after: Option<u64>) -> Duration {
        let exp = self.backoff.saturating_mul(1u32 << attempt.min(16));
        let jitter = rand::thread_rng().gen_range(0.5..1.5);
        let d = exp
            .mul_f64(jitter)
            .max(Duration::from_secs(after.unwrap_or(0)));
        d.min(MAX_BACKOFF)
    }
}

fn try_once(url: &str, r: Result<ureq::Response, ureq::Error>) -> Result<Reply, TryError> {
    let transport = |reason: String| TryError {
        retry: true,
        after: None,
        error: ServerError::Transport {
            what: url.to_string(),
            reason,
        },
    };
    match r {
        Ok(resp) => {
            let server_header = resp.header("server").map(str::to_string);
            let body = read_body(resp, url).map_err(|error| TryError {
                retry: matches!(error, ServerError::Transport { .. }),
                after: None,
                error,
            })?;
            match serde_json::from_str(&body) {
                Ok(json) => Ok(Reply {
                    json,
                    server_header,
                }),
                // a reply cut short by a proxy or a dying worker may be whole next time
                Err(e) => Err(TryError {
                    retry: true,
                    after: None,
                    error: ServerError::Malformed {
                        what: url.to_string(),
                        reason: format!("{e}; the reply began {:?}", truncate(&body, 120)),
                    },
                }),
            }
        }
        Err(ureq::Error::Status(status, resp)) => {
            let after = resp
                .header("retry-after")
                .and_then(|s| s.trim().parse().ok());
            let message = read_body(resp, url)
                .map(|b| error_message(&b))
                .unwrap_or_default();
            Err(TryError {
                retry: status == 429 || (status >= 500 && !refuses_choices(&message)),
                after,
                error: ServerError::Status {
                    what: url.to_string(),
                    status,
                    message,
                },
            })
        }
        Err(ureq::Error::Transport(t)) => {
            if t.kind() == ureq::ErrorKind::UnknownScheme {
                return Err(TryError {
                    retry: false,
                    after: None,
                    error: ServerError::Scheme {
                        url: url.to_string(),
                    },
                });
            }
            let retry = !matches!(t.kind(), ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::Dns);
            let mut e = transport(describe_transport(&t));
            e.retry = retry;
            Err(e)
        }
    }
}

/// An I/O error in words; a socket timeout says so plainly.
fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            "timed out (see the timeout option)".to_string()
        }
        _ => e.to_string(),
    }
}

/// A transport error in words, without the URL (the caller names it).
fn describe_transport(t: &ureq::Transport) -> String {
    if let Some(io) = std::error::Error::source(t).and_then(|s| s.downcast_ref::<std::io::Error>())
    {
        if matches!(
            io.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ) {
            return describe_io(io);
        }
    }
    let mut s = t.kind().to_string();
    if let Some(m) = t.message() {
        s = format!("{s}: {m}");
    }
    if let Some(src) = std::error::Error::source(t) {
        s = format!("{s}: {src}");
    }
    s
}

fn read_body(resp: ureq::Response, what: &str) -> Result<String, ServerError> {
    let mut buf = Vec::new();
    resp.into_reader()
        .take(MAX_BODY)
        .read_to_end(&mut buf)
        .map_err(|e| ServerError::Transport {
            what: what.to_string(),
            reason: match e.kind() {
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => describe_io(&e),
                _ => format!("the reply was cut off: {e}"),
            },
        })?;
    String::from_utf8(buf).map_err(|_| ServerError::NotUtf8 {
        what: what.to_string(),
    })
}

/// A server's message saying it serves one choice per request (llama.cpp: "Only one
/// completion choice is allowed"); no retry changes that.
pub fn refuses_choices(message: &str) -> bool {
    message
        .to_ascii_lowercase()
        .contains("one completion choice")
}
