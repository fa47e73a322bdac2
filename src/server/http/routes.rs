//! The routes: a request's head in, a [`Response`] out.
//!
//! | path | answer |
//! |---|---|
//! | `/` | the status page (HTML, CSS and script in one file, from the binary) |
//! | `/status.json` | the status the page shows ([`Board`](super::board::Board)) |
//! | `/healthz` | `200`: the process answers |
//! | `/readyz` | `200` when the central can store; `503` during start-up recovery, while the store cannot be reached, and once it is stopping |
//! | `/metrics` | the Prometheus text format |

use std::sync::Arc;

use super::super::metrics;
use super::Served;

/// The status page.
const PAGE: &str = include_str!("page.html");

/// The page loads nothing from anywhere (its style and script are inline); it fetches only
/// `/status.json`, from the central itself.
const PAGE_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
    script-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// One response: always `Connection: close` and never cached.
#[derive(Debug)]
pub(super) struct Response {
    status: u16,
    content_type: &'static str,
    body: Arc<[u8]>,
    policy: Option<&'static str>,
}

impl Response {
    pub(super) fn text(status: u16, body: &str) -> Self {
        let body = Arc::from(body.as_bytes());
        Self { status, content_type: "text/plain; charset=utf-8", body, policy: None }
    }

    /// Every place is taken.
    pub(super) fn busy() -> Self {
        Self::text(503, "busy: too many HTTP connections, try again\n")
    }

    /// The status line, headers and (unless `head_only`) body, as written.
    pub(super) fn head_and_body(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            404 => "Not Found",
            405 => "Method Not Allowed",
            400 => "Bad Request",
            431 => "Request Header Fields Too Large",
            _ => "Service Unavailable",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if let Some(policy) = self.policy {
            out.push_str(&format!("Content-Security-Policy: {policy}\r\n"));
        }
        if self.status == 405 {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

/// The response to the request whose head is `head`.
pub(super) fn respond(head: &[u8], served: &Served) -> Response {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "bad request line\n");
    };
    if !version.starts_with(b"HTTP/1.") {
        return Response::text(400, "HTTP/1.x only\n");
    }
    if method != b"GET" && method != b"HEAD" {
        return Response::text(405, "GET or HEAD only\n");
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match path {
        b"/" | b"/index.html" => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: Arc::from(PAGE.as_bytes()),
            policy: Some(PAGE_POLICY),
        },
        b"/status.json" => Response {
            status: 200,
            content_type: "application/json",
            body: served.board.status_json(),
            policy: None,
        },
        b"/healthz" => Response::text(200, "ok\n"),
        b"/readyz" => match served.board.readiness() {
            Ok(()) => Response::text(200, "ready\n"),
            Err(why) => Response::text(503, &format!("not ready: {why}\n")),
        },
        b"/metrics" => match &served.metrics {
            Some(handle) => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: Arc::from(metrics::render(handle).into_bytes()),
                policy: None,
            },
            None => Response::text(503, "metrics: the recorder is not installed\n"),
        },
        _ => Response::text(404, "not found: try /, /status.json, /healthz, /readyz, /metrics\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::http::board::Board;

    fn get(request: &str) -> (u16, String) {
        let served = Served { board: Board::new("test".into(), 2), metrics: None };
        let response = respond(request.as_bytes(), &served);
        (response.status, String::from_utf8_lossy(&response.head_and_body(false)).into_owned())
    }

    #[test]
    fn routes_answer_by_path_and_method() {
        assert_eq!(get("GET /healthz HTTP/1.1\r\n\r\n").0, 200);
        let (status, text) = get("GET /readyz HTTP/1.1\r\n\r\n");
        assert_eq!(status, 503, "not ready before recovery: {text}");
        assert!(text.contains("start-up recovery"), "{text}");
        let (status, text) = get("GET /?x=1 HTTP/1.1\r\n\r\n");
        assert_eq!(status, 200);
        assert!(text.contains("Content-Security-Policy: default-src 'none'"), "{text}");
        let (status, text) = get("GET /status.json HTTP/1.0\r\n\r\n");
        assert!(status == 200 && text.contains("\"phase\":\"starting\""), "{text}");
        assert_eq!(get("POST / HTTP/1.1\r\n\r\n").0, 405);
        assert_eq!(get("GET /nothing HTTP/1.1\r\n\r\n").0, 404);
        assert_eq!(get("GET\r\n\r\n").0, 400);
        assert_eq!(get("GET / SPDY/3\r\n\r\n").0, 400);
        let served = Served { board: Board::new("test".into(), 2), metrics: None };
        let head = respond(b"HEAD / HTTP/1.1\r\n\r\n", &served).head_and_body(true);
        assert!(head.ends_with(b"\r\n\r\n"), "a HEAD answer has no body");
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        // The SVG namespace is a name, not something fetched.
        let page = PAGE.replace("\"http://www.w3.org/2000/svg\"", "");
        for outside in ["http://", "https://", "//fonts", "@import", "src=", "href=", "url("] {
            assert!(!page.contains(outside), "{outside} in page.html");
        }
    }
}
