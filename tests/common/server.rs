//! A real `kefu serve` child process on a free 127.0.0.1 port, for tests that drive the
//! service the way channels and agents do. The process is killed when the handle drops.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// The admin token of the test configuration.
pub const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// Agents: `a0571` (branch 0571), `a0755` (branch 0755), `head` (all). Each one's token
/// is `{id}-token-0123456789` (see `common::agent`).
pub fn config(extra: &str) -> String {
    let mut c = String::new();
    for (id, groups) in [
        ("a0571", "[\"0571\"]"),
        ("a0755", "[\"0755\"]"),
        ("head", "[]"),
    ] {
        c.push_str(&format!(
            "[[handoff.agents]]\nid = \"{id}\"\nname = \"客服{id}\"\ntoken_sha256 = \"{}\"\ngroups = {groups}\n\n",
            kefu::handoff::hash_token(&format!("{id}-token-0123456789"))
        ));
    }
    format!(
        "{extra}\n[admin]\ntoken_sha256 = \"{}\"\n\n{c}",
        kefu::handoff::hash_token(ADMIN_TOKEN)
    )
}

pub fn token(agent: &str) -> String {
    format!("{agent}-token-0123456789")
}

pub struct Server {
    child: Child,
    pub base: String,
    pub dir: PathBuf,
}

impl Server {
    /// Starts a server with its store and configuration in `dir` (kept across restarts).
    pub fn start(dir: &Path, config: &str) -> Server {
        std::fs::write(dir.join("kefu.toml"), config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kefu"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data",
                "store",
                "--config",
                "kefu.toml",
            ])
            .current_dir(dir)
            .env("KEFU_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kefu serve");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let base = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        Server {
            child,
            base,
            dir: dir.to_owned(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (at most 20 s) for the process to end.
    pub fn terminate(&mut self) -> ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
        self.terminate_or_wait()
    }

    /// Waits (at most 20 s) for a process that was told to stop.
    pub fn terminate_or_wait(&mut self) -> ExitStatus {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("kefu serve did not stop within 20 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads server-sent events from a streaming response.
pub struct Sse {
    res: reqwest::Response,
    buf: String,
}

impl From<reqwest::Response> for Sse {
    fn from(res: reqwest::Response) -> Self {
        Sse {
            res,
            buf: String::new(),
        }
    }
}

impl Sse {
    pub async fn open(client: &reqwest::Client, url: &str, bearer: Option<&str>) -> Sse {
        let mut req = client.get(url);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200, "stream {url}");
        Sse {
            res,
            buf: String::new(),
        }
    }

    /// The next event as (event name, data), waiting at most `secs`.
    pub async fn next(&mut self, secs: u64) -> Option<(String, String)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = "message".to_owned();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() && name == "message" {
                    continue; // keep-alive comment
                }
                return Some((name, data));
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk())
                .await
                .ok()?;
            match chunk {
                Ok(Some(bytes)) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Skips events until one named `name` arrives; returns its data.
    pub async fn until(&mut self, name: &str, secs: u64) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Some((n, d)) = self.next(secs).await {
                if n == name {
                    return d;
                }
            }
        }
        panic!("no `{name}` event within {secs} s");
    }
}

/// An HTTP client for tests (loopback only, generous timeout for a loaded machine).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .unwrap()
}

/// A customer message; asserts 200 and returns the reply JSON.
pub async fn say(c: &reqwest::Client, s: &Server, body: serde_json::Value) -> serde_json::Value {
    let res = c
        .post(s.url("/v1/messages"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{body}");
    res.json().await.unwrap()
}

/// GET with a bearer token: (status, JSON body or null).
pub async fn get(
    c: &reqwest::Client,
    s: &Server,
    path: &str,
    bearer: &str,
) -> (u16, serde_json::Value) {
    let res = c.get(s.url(path)).bearer_auth(bearer).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

/// The Prometheus text of `/metrics`.
pub async fn metrics_text(c: &reqwest::Client, s: &Server) -> String {
    c.get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// POST JSON with a bearer token: (status, JSON body or null).
pub async fn post(
    c: &reqwest::Client,
    s: &Server,
    path: &str,
    bearer: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let res = c
        .post(s.url(path))
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

/// The bundled content as an admin upload (`{"name": "knowledge-base/…", "content"}`).
pub fn bundled_upload() -> Vec<serde_json::Value> {
    let mut files = Vec::new();
    for folder in ["knowledge-base", "intents"] {
        for e in std::fs::read_dir(super::repo(folder)).unwrap() {
            let p = e.unwrap().path();
            files.push(serde_json::json!({
                "name": format!("{folder}/{}", p.file_name().unwrap().to_string_lossy()),
                "content": std::fs::read_to_string(&p).unwrap(),
            }));
        }
    }
    files
}

/// The bundled content plus one new entry (`zz-parrot`, 鹦鹉存单是什么): an upload whose
/// publication is visible in the answers.
pub fn upload_with_parrot() -> Vec<serde_json::Value> {
    let mut files = bundled_upload();
    files.push(serde_json::json!({
        "name": "knowledge-base/new.toml",
        "content": "[[entry]]\nid = \"zz-parrot\"\ncategory = \"测试\"\nquestion = \"鹦鹉存单是什么\"\nsimilar = [\"什么叫鹦鹉存单\", \"鹦鹉存单介绍一下\", \"鹦鹉存单怎么买\"]\nanswer = \"鹦鹉存单是测试用的产品。\"\n",
    }));
    files
}
