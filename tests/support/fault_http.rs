//! A fault-injecting TCP proxy for the end-to-end tests, between the agent
//! and a real HTTP server (osmem-server): it forwards connections untouched,
//! or, while a fault is set, answers each request itself with an error
//! status, drops each connection as soon as it is accepted (a cluster that
//! cannot be reached), or reads requests and never answers (a hung node).
//!
//! A fault answer closes its connection, so the fault set when a connection
//! is accepted is the one it meets; once the proxy forwards again, the
//! client's next connection reaches the server. Included with
//! `#[path = "support/fault_http.rs"] mod fault_http;` by the tests that
//! need it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does with the next connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass them through to the server.
    Forward,
    /// Answer every request with this status and close the connection.
    Status(u16),
    /// Close each connection at once, reading nothing.
    Drop,
    /// Read requests and never answer.
    Hang,
}

struct Shared {
    upstream: SocketAddr,
    fault: Mutex<Fault>,
    /// Requests or connections met by a fault.
    faulted: AtomicUsize,
    /// Connections passed through.
    forwarded: AtomicUsize,
}

/// A running proxy on 127.0.0.1; stops when dropped.
pub struct FaultHttpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl FaultHttpProxy {
    /// Starts a proxy in front of `upstream_url` (`http://IP:PORT`) with
    /// `fault` set; must be called inside a tokio runtime.
    pub async fn start(upstream_url: &str, fault: Fault) -> FaultHttpProxy {
        let upstream = upstream_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("upstream {upstream_url} is not http://IP:PORT: {e}"));
        let shared = Arc::new(Shared {
            upstream,
            fault: Mutex::new(fault),
            faulted: AtomicUsize::new(0),
            forwarded: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        FaultHttpProxy {
            addr,
            shared,
            accept_task,
        }
    }

    /// The proxy's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the fault the next connections meet.
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
    }

    /// Requests (or, with [`Fault::Drop`], connections) met by a fault.
    pub fn faulted(&self) -> usize {
        self.shared.faulted.load(Ordering::Relaxed)
    }

    /// Connections passed through to the server.
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for FaultHttpProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Aborted with the loop, so dropping the proxy closes every connection.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let fault = *shared.fault.lock().unwrap();
                connections.spawn(serve(stream, fault, Arc::clone(&shared)));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(mut stream: TcpStream, fault: Fault, shared: Arc<Shared>) {
    match fault {
        Fault::Forward => {
            shared.forwarded.fetch_add(1, Ordering::Relaxed);
            let Ok(mut upstream) = TcpStream::connect(shared.upstream).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
        }
        Fault::Drop => {
            shared.faulted.fetch_add(1, Ordering::Relaxed);
        }
        Fault::Status(status) => {
            if read_request(&mut stream).await {
                shared.faulted.fetch_add(1, Ordering::Relaxed);
                let body = format!(
                    r#"{{"error":{{"type":"injected_fault","reason":"injected {status}"}},"status":{status}}}"#
                );
                let response = format!(
                    "HTTP/1.1 {status} Injected\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        }
        Fault::Hang => {
            while read_request(&mut stream).await {
                shared.faulted.fetch_add(1, Ordering::Relaxed);
            }
            std::future::pending::<()>().await;
        }
    }
}

/// Reads one HTTP/1.1 request (head and a `content-length` or chunked
/// body); false when the connection ends first.
async fn read_request(stream: &mut TcpStream) -> bool {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at + 4;
        }
        if !read_more(stream, &mut buffer).await {
            return false;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok());
    match length {
        Some(length) => {
            while buffer.len() < head_end + length {
                if !read_more(stream, &mut buffer).await {
                    return false;
                }
            }
        }
        None if head.contains("transfer-encoding: chunked") => {
            while find(&buffer[head_end..], b"0\r\n\r\n").is_none() {
                if !read_more(stream, &mut buffer).await {
                    return false;
                }
            }
        }
        None => {}
    }
    true
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}
