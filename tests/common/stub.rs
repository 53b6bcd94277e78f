//! A tiny HTTP stub of the OpenAI-compatible API on 127.0.0.1, for fault injection only (500s,
//! 429 bursts, slow, cut-off, malformed or non-UTF-8 replies, no choices, short `n`). The real
//! server tests run against llama.cpp's server; this only says how the client copes.
#![allow(dead_code)]
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A request as the stub saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: serde_json::Value,
}

/// What the stub sends back: status, headers, body bytes, and how.
pub enum Reply {
    Json(u16, serde_json::Value),
    Raw(u16, Vec<u8>),
    /// Announces more bytes than it sends, then closes.
    CutOff(Vec<u8>),
    /// Waits this long, then answers.
    Slow(Duration, Box<Reply>),
}

pub type Handler = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

pub struct Stub {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    port: u16,
    thread: Option<JoinHandle<()>>,
}

impl Stub {
    /// Starts a stub whose chat completions `handler(request, k)` answers (k counts chat
    /// requests from 0); `GET /v1/models` lists `models`.
    pub fn start(models: &[&str], handler: Box<Handler>) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let models: Vec<String> = models.iter().map(|s| s.to_string()).collect();
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let handler: Arc<Handler> = Arc::from(handler);
        let thread = std::thread::spawn(move || {
            let mut chats = 0usize;
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let Some(req) = read_request(&conn) else {
                    continue;
                };
                seen2.lock().unwrap().push(req.clone());
                let reply = if req.path.ends_with("/models") {
                    let data: Vec<_> = models
                        .iter()
                        .map(
                            |m| serde_json::json!({"id": m, "object": "model", "owned_by": "stub"}),
                        )
                        .collect();
                    Reply::Json(200, serde_json::json!({"object": "list", "data": data}))
                } else if req.path.ends_with("/chat/completions") {
                    chats += 1;
                    handler(&req, chats - 1)
                } else {
                    Reply::Json(404, serde_json::json!({"error": "not found"}))
                };
                // one thread answers one connection at a time: slow replies block the rest,
                // which is what a slow server does too
                send(conn, reply);
            }
        });
        Stub {
            url: format!("http://127.0.0.1:{port}/v1"),
            seen,
            stop,
            port,
            thread: Some(thread),
        }
    }

    /// Chat completion requests received.
    pub fn chats(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.ends_with("/chat/completions"))
            .cloned()
            .collect()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_request(conn: &TcpStream) -> Option<Seen> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut len = 0usize;
    let mut authorization = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        path,
        authorization,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    })
}

fn send(mut conn: TcpStream, reply: Reply) {
    let (status, body, announced) = match reply {
        Reply::Json(s, v) => {
            let b = v.to_string().into_bytes();
            let n = b.len();
            (s, b, n)
        }
        Reply::Raw(s, b) => {
            let n = b.len();
            (s, b, n)
        }
        Reply::CutOff(b) => {
            let n = b.len() + 100;
            (200, b, n)
        }
        Reply::Slow(d, inner) => {
            std::thread::sleep(d);
            return send(conn, *inner);
        }
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n"
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body);
    let _ = conn.flush();
}

/// A well-formed completion with `k` choices, each saying `text` and its index.
pub fn completion(k: usize, text: &str) -> serde_json::Value {
    let choices: Vec<_> = (0..k)
        .map(|i| {
            serde_json::json!({
                "index": i,
                "message": {"role": "assistant", "content": format!("{text} {i}")},
                "finish_reason": "stop",
            })
        })
        .collect();
    serde_json::json!({
        "model": "stub-model",
        "choices": choices,
        "usage": {"prompt_tokens": 10, "completion_tokens": 3 * k},
    })
}

/// The `n` a chat request asked for.
pub fn n_of(s: &Seen) -> usize {
    s.body["n"].as_u64().unwrap_or(1) as usize
}
