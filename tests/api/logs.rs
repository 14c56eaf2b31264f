//! What `posd serve` writes: one access line per request at INFO, and no
//! warning for a normal start or for requests it refuses. Runs the real
//! binary, since logging is set up by `main`.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use crate::common::{API, JWT_SECRET, Server, TestDb, api};

/// Sends one HTTP/1.1 request and returns the status code.
fn request(port: u16, head: &str, body: &str) -> u16 {
    exchange(port, head, body).0
}

/// Sends one HTTP/1.1 request; answers the status code and the whole
/// answer as text (head and body).
pub(crate) fn exchange(port: u16, head: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{head}\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    (status, answer)
}

/// A `posd serve` over a test database, its stdout and stderr read line
/// by line.
pub(crate) struct Serving {
    pub child: Child,
    pub port: u16,
    /// The lines written up to its announcement.
    pub lines: Vec<String>,
    rx: mpsc::Receiver<String>,
}

impl Serving {
    /// Starts posd on database `db` with `POSD_LOG` set to `log` (unset
    /// when `None`), and waits for it to announce itself.
    pub(crate) fn start(db: &str, log: Option<&str>) -> Serving {
        Self::start_with(db, log, &[])
    }

    /// [`Serving::start`] with more environment variables.
    pub(crate) fn start_with(db: &str, log: Option<&str>, env: &[(&str, &str)]) -> Serving {
        Self::spawn(db, log, env, true)
    }

    /// Starts posd without waiting for it ([`Serving::announced`] does).
    pub(crate) fn spawn(
        db: &str,
        log: Option<&str>,
        env: &[(&str, &str)],
        announce: bool,
    ) -> Serving {
        let server = Server::get();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_posd"));
        cmd.arg("serve").env_remove("ROCKET_LOG_LEVEL");
        match log {
            Some(filter) => cmd.env("POSD_LOG", filter),
            None => cmd.env_remove("POSD_LOG"),
        };
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .env("POSD_BENCH_SUITE", "1") // for a build with --features bench-control
            .env("POSD_DATABASE_URL", server.owner_url(db))
            .env("POSD_APP_DATABASE_URL", server.app_url(db))
            .env("POSD_JWT_SECRET", JWT_SECRET)
            .env("POSD_ENCRYPTION_KEYS", server.keys())
            .env("ROCKET_ADDRESS", "127.0.0.1")
            .env("ROCKET_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start posd serve");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let streams: [Box<dyn Read + Send>; 2] = [Box::new(stdout), Box::new(stderr)];
        for stream in streams {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);

        let mut serving = Serving {
            child,
            port,
            lines: Vec::new(),
            rx,
        };
        if announce {
            serving.announced();
        }
        serving
    }

    /// Waits until posd announces itself (once Rocket listens).
    pub(crate) fn announced(&mut self) {
        self.wait_for("posd serving on");
    }

    /// Waits (a minute at most) for a line containing `text`; answers it.
    pub(crate) fn wait_for(&mut self, text: &str) -> String {
        loop {
            match self.rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.lines.push(line.clone());
                    if found {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "posd never wrote {text:?} ({e}):\n{}",
                    self.lines.join("\n")
                ),
            }
        }
    }

    /// Stops posd and answers every line it wrote. Each access line was
    /// written before its answer was sent; stopping posd closes its pipes,
    /// which ends the readers.
    pub(crate) fn stop(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.lines.extend(self.rx.iter());
        self.lines
    }
}

#[test]
fn serve_logs_an_access_line_per_request_and_no_warning() {
    let db = TestDb::new();
    let serving = Serving::start(&db.name, None);
    let port = serving.port;

    let token = "not.a-valid.token-7f3a";
    let body_marker = "body-marker-9c1e";
    let statuses = [
        request(port, "GET /healthz HTTP/1.1", ""),
        request(
            port,
            &format!("GET {API}/products HTTP/1.1\r\nAuthorization: Bearer {token}"),
            "",
        ),
        request(
            port,
            &format!("POST {API}/auth/login HTTP/1.1\r\nContent-Type: application/json"),
            &format!("{{\"merchant\": \"{body_marker}\""),
        ),
        request(port, "GET /no/such/route HTTP/1.1", ""),
    ];
    assert_eq!(statuses, [200, 401, 422, 404]);

    let lines = serving.stop();
    let log = lines.join("\n");

    let warnings: Vec<&String> = lines.iter().filter(|l| l.contains("WARN")).collect();
    assert!(warnings.is_empty(), "warnings logged:\n{log}");
    assert!(!log.contains("Rocket has launched"), "{log}");
    assert!(!log.contains(token), "a token reached the log:\n{log}");
    assert!(!log.contains(body_marker), "a body reached the log:\n{log}");
    let access: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("posd::access"))
        .collect();
    assert_eq!(access.len(), 4, "one access line per request:\n{log}");
    for (line, expected) in access.iter().zip([
        "GET /healthz 200 ",
        concat!("GET ", api!("/products"), " 401 "),
        concat!("POST ", api!("/auth/login"), " 422 "),
        "GET /no/such/route 404 ",
    ]) {
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.contains(expected), "{line} lacks {expected:?}");
        assert!(line.contains(" ms"), "{line}");
    }
    assert!(
        access[1].contains(concat!("route=", api!("/products"))),
        "{}",
        access[1]
    );
}
