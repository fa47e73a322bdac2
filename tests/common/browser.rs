//! A real browser for tests: headless Chromium driven through chromedriver with the W3C
//! WebDriver protocol (JSON over plain HTTP on loopback), or a loud skip when either is not
//! installed. CI installs Debian's `chromium` and `chromium-driver` and sets
//! `LOTTERY_REQUIRE_CHROMIUM=1`, which turns the skip into a failure.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::within;

/// Chromium's flags: headless, no network of its own, a profile of its own.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

/// One browser session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

/// The first of `names` found on `PATH`.
fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

impl Browser {
    /// Starts chromedriver and a Chromium session, or says why not and returns `None`.
    pub async fn start(test: &str) -> Option<Self> {
        let chromium = find(&["chromium", "chromium-browser", "google-chrome"]);
        let driver = find(&["chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            assert!(
                std::env::var_os("LOTTERY_REQUIRE_CHROMIUM").is_none(),
                "LOTTERY_REQUIRE_CHROMIUM is set but chromium or chromedriver is not on PATH: \
                 apt-get install -y chromium chromium-driver"
            );
            let message = format!(
                "\n!!! SKIPPED {test}: chromium or chromedriver is not installed.\n!!! Install them \
                 (Debian: apt-get install -y chromium chromium-driver) to run the browser tests.\n"
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
            return None;
        };
        let mut command = Command::new(driver);
        command
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("chromedriver starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = within("chromedriver's port", async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(port) = line.split("started successfully on port ").nth(1) {
                    return port.trim_end_matches('.').trim().parse::<u16>().ok();
                }
            }
            None
        })
        .await
        .expect("chromedriver says its port");
        // Keep reading its output, so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push("--window-size=1280,1000".into());
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let created = request(port, "POST", "/session", Some(&capabilities)).await;
        let session = created["sessionId"].as_str().expect("a session id").to_owned();
        Some(Self { driver: child, port, session, _profile: profile })
    }

    async fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        request(self.port, method, &format!("/session/{}{path}", self.session), body).await
    }

    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({"url": url}))).await;
    }

    /// Sets the window's outer size.
    pub async fn resize(&self, width: u32, height: u32) {
        let rect = json!({"width": width, "height": height});
        self.command("POST", "/window/rect", Some(&rect)).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        let body = json!({"script": script, "args": args});
        self.command("POST", "/execute/sync", Some(&body)).await
    }

    /// Waits, in the page, until `condition` (a JavaScript expression) holds, re-checking it
    /// each time the page's DOM changes; fails the test after 50 s.
    pub async fn wait_until(&self, condition: &str) {
        let timeouts = json!({"script": 55_000});
        self.command("POST", "/timeouts", Some(&timeouts)).await;
        let script = format!(
            "const done = arguments[arguments.length - 1];
             const holds = () => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }};
             if (holds()) return done(true);
             const timer = setTimeout(() => {{ observer.disconnect(); done(false); }}, 50000);
             const observer = new MutationObserver(() => {{
                 if (holds()) {{ clearTimeout(timer); observer.disconnect(); done(true); }}
             }});
             observer.observe(document.documentElement,
                 {{ subtree: true, childList: true, attributes: true, characterData: true }});"
        );
        let body = json!({"script": script, "args": []});
        let held = self.command("POST", "/execute/async", Some(&body)).await;
        let state = self.execute("return JSON.stringify(document.body.dataset)", json!([])).await;
        assert_eq!(held, json!(true), "the page never showed {condition}; its state: {state}");
    }

    /// A PNG of the viewport, saved at `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.command("GET", "/screenshot", None).await;
        let png = decode_base64(png.as_str().expect("a base64 screenshot"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// The page's visible text and its whole HTML, for what must not appear in either.
    pub async fn text_and_html(&self) -> String {
        let script = "return document.body.innerText + '\\n' + document.documentElement.outerHTML";
        self.execute(script, json!([])).await.as_str().unwrap_or_default().to_owned()
    }

    /// Ends the session (the browser) and the driver.
    pub async fn quit(self) {
        drop(self);
    }
}

impl Drop for Browser {
    /// Also when a test fails: the session's end closes Chromium, which the driver's end alone
    /// would leave running.
    fn drop(&mut self) {
        use std::io::Write as _;
        let deleted = std::net::TcpStream::connect(("127.0.0.1", self.port)).and_then(|mut s| {
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n",
                self.session, self.port
            );
            s.write_all(request.as_bytes())?;
            std::io::Read::read(&mut s, &mut [0; 512])
        });
        if let Err(e) = deleted {
            eprintln!("could not end the browser session: {e}");
        }
        let _ = self.driver.start_kill();
    }
}

/// One WebDriver request; its `value`, or the test fails naming the error.
async fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let answer = within(&format!("WebDriver {method} {path}"), async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        read_answer(&mut stream).await
    })
    .await;
    let answer = String::from_utf8(answer).expect("WebDriver answers UTF-8");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let value: Value = serde_json::from_str(&body).expect("a JSON answer");
    assert!(head.starts_with("HTTP/1.1 200"), "WebDriver {method} {path}: {head}\n{value}");
    value["value"].clone()
}

/// One HTTP answer: up to its `Content-Length` when it has one (chromedriver may keep the
/// connection open after it), else to the end of the stream.
async fn read_answer(stream: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    let mut chunk = [0; 16 * 1024];
    loop {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse::<usize>().ok());
            if let Some(length) = length
                && answer.len() >= end + 4 + length
            {
                return answer;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return answer,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0);
    for byte in text.bytes().filter(|b| !b.is_ascii_whitespace() && *b != b'=') {
        let value = ALPHABET.iter().position(|&a| a == byte).expect("base64") as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

/// `GET path` on the central's HTTP listener: the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let answer = within(&format!("GET {path}"), async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        answer
    })
    .await;
    let answer = String::from_utf8(answer).expect("UTF-8");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    (status, body.to_owned())
}
