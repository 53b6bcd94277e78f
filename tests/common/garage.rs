//! A real 3-node Garage cluster on 127.0.0.1 for the remote tests: one config, metadata and
//! data directory per node, distinct RPC / S3 / admin ports, replication factor 3; the nodes
//! are connected, given a layout, and a key and a bucket are made with the `garage` CLI. The
//! servers are stopped by their pid when the [`Cluster`] drops.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub s3_endpoint: String,
    pub key_id: String,
    pub secret: String,
    pub bucket: String,
    configs: Vec<PathBuf>,
    servers: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `garage` binary, or `None` with a message (a failure when `SRLM_REQUIRE_GARAGE=1`).
pub fn garage_bin() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut cands: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("garage"))
                .collect()
        })
        .unwrap_or_default();
    cands.push(home.join(".cargo/bin/garage"));
    if let Some(p) = cands.into_iter().find(|p| p.is_file()) {
        return Some(p);
    }
    if std::env::var("SRLM_REQUIRE_GARAGE").as_deref() == Ok("1") {
        panic!("SRLM_REQUIRE_GARAGE=1 but `garage` is not on PATH (cargo install --locked garage)");
    }
    eprintln!(
        "SKIP: `garage` is not on PATH (cargo install --locked garage); Garage tests skipped"
    );
    None
}

fn garage(bin: &Path, config: &Path, args: &[&str]) -> Result<String, String> {
    let o = Command::new(bin)
        .arg("-c")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "garage {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// Retry `f` until it succeeds or `secs` pass.
fn until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let t0 = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if t0.elapsed() > Duration::from_secs(secs) => {
                panic!("garage cluster: {what} did not succeed within {secs}s: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

impl Cluster {
    /// Start the cluster and make bucket `bucket`; `None` when garage is absent.
    pub fn start(bucket: &str) -> Option<Cluster> {
        let bin = garage_bin()?;
        let dir = tempfile::tempdir().unwrap();
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + 11) as u8))
            .collect();
        let mut configs = Vec::new();
        let mut servers = Vec::new();
        let mut s3_endpoint = String::new();
        for n in 0..3 {
            let nd = dir.path().join(format!("node{n}"));
            std::fs::create_dir_all(nd.join("meta")).unwrap();
            std::fs::create_dir_all(nd.join("data")).unwrap();
            let (rpc, s3, admin) = (free_port(), free_port(), free_port());
            if n == 0 {
                s3_endpoint = format!("http://127.0.0.1:{s3}");
            }
            let cfg = format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"lmdb\"\n\
                 replication_factor = 3\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 metadata_fsync = false\ndata_fsync = false\n\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                meta = nd.join("meta").display(),
                data = nd.join("data").display(),
            );
            let cp = nd.join("garage.toml");
            std::fs::write(&cp, cfg).unwrap();
            let log = std::fs::File::create(nd.join("server.log")).unwrap();
            let child = Command::new(&bin)
                .arg("-c")
                .arg(&cp)
                .arg("server")
                .env("RUST_LOG", "garage=warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("garage server starts");
            servers.push(child);
            configs.push(cp);
        }
        let mut c = Cluster {
            dir,
            s3_endpoint,
            key_id: String::new(),
            secret: String::new(),
            bucket: bucket.into(),
            configs,
            servers,
        };
        let ids: Vec<String> = c
            .configs
            .iter()
            .map(|cp| {
                until(30, "node id", || {
                    garage(&bin, cp, &["node", "id", "-q"]).map(|s| s.trim().to_string())
                })
            })
            .collect();
        let c0 = c.configs[0].clone();
        for id in &ids[1..] {
            until(30, "node connect", || {
                garage(&bin, &c0, &["node", "connect", id])
            });
        }
        for id in &ids {
            let short = id.split('@').next().unwrap();
            until(30, "layout assign", || {
                garage(
                    &bin,
                    &c0,
                    &["layout", "assign", "-z", "dc1", "-c", "1G", short],
                )
            });
        }
        until(30, "layout apply", || {
            garage(&bin, &c0, &["layout", "apply", "--version", "1"])
        });
        let out = until(60, "key create", || {
            garage(&bin, &c0, &["key", "create", "srlm-test"])
        });
        for line in out.lines() {
            let l = line.trim();
            if let Some(v) = l.strip_prefix("Key ID:") {
                c.key_id = v.trim().to_string();
            } else if let Some(v) = l.strip_prefix("Secret key:") {
                c.secret = v.trim().to_string();
            }
        }
        assert!(
            !c.key_id.is_empty() && !c.secret.is_empty(),
            "garage key create printed no key:\n{out}"
        );
        until(60, "bucket create", || {
            garage(&bin, &c0, &["bucket", "create", bucket])
        });
        until(30, "bucket allow", || {
            garage(
                &bin,
                &c0,
                &[
                    "bucket",
                    "allow",
                    "--read",
                    "--write",
                    "--owner",
                    bucket,
                    "--key",
                    "srlm-test",
                ],
            )
        });
        Some(c)
    }

    /// The environment a client needs (credentials only here, never in a URL).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
            ("AWS_REGION".into(), "garage".into()),
            ("AWS_ENDPOINT_URL".into(), self.s3_endpoint.clone()),
        ]
    }

    /// Kill one node (by pid).
    pub fn stop_node(&mut self, n: usize) {
        let _ = self.servers[n].kill();
        let _ = self.servers[n].wait();
    }
}
