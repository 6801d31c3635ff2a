//! A `redis-server` of the tests' own on a free loopback port, shared by the test binaries
//! that need one (`tests/redis_limits.rs`, `tests/gateway/redis.rs`): included with
//! `#[path]`, so it is not a test target of its own.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of our own, killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    /// The TLS port, for a server started with [`RedisServer::start_tls`].
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
}

/// A free loopback port: bound to `127.0.0.1:0` and released (`--port 0` would disable TCP).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// On a free port.
    pub fn start() -> RedisServer {
        RedisServer::start_on(free_port())
    }

    pub fn start_on(port: u16) -> RedisServer {
        RedisServer::start_with(port, None, &[])
    }

    /// With TLS on a second free port (`tls_port`), serving the PEM `cert` and `key`, clients
    /// not asked for certificates; the plain port stays open for [`RedisServer::commands`].
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> RedisServer {
        let tls_port = free_port();
        let args = [
            "--tls-port".to_string(),
            tls_port.to_string(),
            "--tls-cert-file".to_string(),
            cert.display().to_string(),
            "--tls-key-file".to_string(),
            key.display().to_string(),
            "--tls-auth-clients".to_string(),
            "no".to_string(),
        ];
        RedisServer::start_with(free_port(), Some(tls_port), &args)
    }

    /// `n` cluster-enabled servers joined into one Redis Cluster (no replicas) with
    /// `redis-cli --cluster create`; returns once every node says `cluster_state:ok`.
    pub fn cluster(n: usize) -> Vec<RedisServer> {
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ]
        .map(String::from);
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| RedisServer::start_with(free_port(), None, &args))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli (Debian's redis-tools, installed with redis-server)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !nodes.iter().all(|node| node.cluster_ok()) {
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach cluster_state:ok within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        nodes
    }

    fn cluster_ok(&self) -> bool {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reply = [0u8; 512];
        stream.write_all(b"CLUSTER INFO\r\n").is_ok()
            && stream
                .read(&mut reply)
                .is_ok_and(|n| String::from_utf8_lossy(&reply[..n]).contains("cluster_state:ok"))
    }

    /// On `port`, with `args` added to the command line.
    pub fn start_with(port: u16, tls_port: Option<u16>, args: &[String]) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start redis-server ({error}): these tests need Debian's \
                     redis-server package; ./test.sh installs it"
                )
            });
        let mut server = RedisServer {
            child,
            port,
            tls_port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.pings() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server on port {port} exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not answer PING within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn pings(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// Sends inline commands (words without spaces) on one connection and returns the first
    /// line of each reply, e.g. `+OK`.
    pub fn commands(&self, commands: &[&[&str]]) -> Vec<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut replies = Vec::new();
        for words in commands {
            stream
                .write_all(format!("{}\r\n", words.join(" ")).as_bytes())
                .unwrap();
            let mut reply = Vec::new();
            let mut byte = [0u8; 1];
            while stream.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
                reply.push(byte[0]);
            }
            replies.push(String::from_utf8_lossy(&reply).trim_end().to_string());
        }
        replies
    }

    /// Sends one inline command and returns its reply: a status, error or integer line as
    /// sent (`+OK`, `:1`), or a bulk string's content.
    pub fn query(&self, words: &[&str]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(format!("{}\r\n", words.join(" ")).as_bytes())
            .unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        let line = line.trim_end().to_string();
        match line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            Some(len) => {
                let mut bulk = vec![0u8; len + 2];
                reader.read_exact(&mut bulk).unwrap();
                String::from_utf8_lossy(&bulk[..len]).into_owned()
            }
            None => line,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The `rediss://` URL of a server started with [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("started with start_tls");
        format!("rediss://127.0.0.1:{port}/0")
    }

    /// A directory that lives as long as the server, for files a test writes.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
