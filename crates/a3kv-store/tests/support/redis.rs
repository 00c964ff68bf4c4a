//! A real `redis-server` for tests: started on a free 127.0.0.1 port with no persistence, in
//! a temporary directory, killed on drop. Shared by the store's and the server's tests
//! (`#[path]`-included).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child on a free loopback port, killed on drop.
pub struct Redis {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts one on `port` (e.g. where a client already failed to connect).
    pub fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server; scripts/setup.sh does)");
        let r = Self {
            child,
            port,
            _dir: dir,
        };
        let t0 = Instant::now();
        while r.con().is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A fresh connection that answered PING.
    pub fn con(&self) -> redis::RedisResult<redis::Connection> {
        let mut c = redis::Client::open(self.url())?.get_connection()?;
        redis::cmd("PING").query::<String>(&mut c)?;
        Ok(c)
    }

    /// Every a3kv key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut c = self.con().unwrap();
        let mut k: Vec<String> = redis::cmd("KEYS").arg("a3kv:*").query(&mut c).unwrap();
        k.sort();
        k
    }

    /// Kills the server now (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on (free a moment ago).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
