//! Hot reload as users meet it: the `schemagate` binary on real layouts (the shipped one, a
//! schema directory anywhere, a Kubernetes ConfigMap mount, a symlinked config), files
//! changed the ways editors and deploy tools change them, under steady traffic from the test.
//! Each change must be live within 1 s, raise the generation by exactly one and fail no
//! request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::support::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A change must answer within this long of the write that made it.
const LIVE_WITHIN: Duration = Duration::from_secs(1);
/// Traffic runs this long at most, whatever happens (a bounded loop).
const TRAFFIC_CAP: Duration = Duration::from_secs(60);
/// Each traffic worker sends one request per this interval: two workers, ~400 requests/s.
const PACE: Duration = Duration::from_millis(5);

/// The matrix cases run one at a time: each starts a gateway and keeps it busy, and their
/// latency bound should not depend on how many of them share two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MIN_1: &str =
    r#"{"type":"object","required":["n"],"properties":{"n":{"type":"integer","minimum":1}}}"#;
const MIN_5: &str =
    r#"{"type":"object","required":["n"],"properties":{"n":{"type":"integer","minimum":5}}}"#;

/// A config with one route, `POST /x`, whose body schema is `s.json` in `schema_dir`.
fn config(upstream: &str, schema_dir: &str, extra_routes: &str) -> String {
    format!(
        r#"listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
schema_dir: {schema_dir}
upstreams:
  backend: {{ url: "{upstream}" }}
routes:
  - name: r.x
    method: POST
    path: /x
    upstream: backend
    schemas: {{ body: s.json }}
{extra_routes}"#
    )
}

fn post_x() -> Request<Full<Bytes>> {
    request(
        "POST",
        "/x",
        &[("content-type", "application/json")],
        br#"{"n":2}"#,
    )
}

/// Flextell's `POST /v1/conversations` with a 10-character address.
fn post_flextell() -> Request<Full<Bytes>> {
    post_conversation(br#"{"channel_id":1,"address":"0123456789"}"#)
}

/// One answer the traffic saw: when its request left, when the answer came, what it was.
#[derive(Debug, Clone)]
struct Seen {
    sent: Instant,
    answered: Instant,
    outcome: Result<u16, String>,
}

/// Steady traffic from two keep-alive connections until stopped (or `TRAFFIC_CAP`).
struct Traffic {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(addr: SocketAddr, make: fn() -> Request<Full<Bytes>>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..2)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let started = Instant::now();
                    let mut sender = None;
                    let mut pace = tokio::time::interval(PACE);
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < TRAFFIC_CAP {
                        pace.tick().await;
                        let sent = Instant::now();
                        let outcome = one(addr, &mut sender, make()).await;
                        seen.lock().unwrap().push(Seen {
                            sent,
                            answered: Instant::now(),
                            outcome,
                        });
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            seen,
            workers,
        }
    }

    /// The first answer to a request sent at or after `since` with `status`, if any yet.
    fn first_since(&self, since: Instant, status: u16) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.sent >= since && s.outcome == Ok(status))
            .map(|s| s.answered)
            .min()
    }

    async fn stop(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.unwrap();
        }
        let seen = self.seen.lock().unwrap().clone();
        seen
    }
}

/// Sends one request on the worker's connection, opening one when it has none.
async fn one(
    addr: SocketAddr,
    sender: &mut Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    request: Request<Full<Bytes>>,
) -> Result<u16, String> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (new, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        *sender = Some(new);
    }
    let Some(open) = sender.as_mut() else {
        return Err("no connection".into());
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        open.ready().await?;
        let response = open.send_request(request).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok::<u16, hyper::Error>(status)
    })
    .await;
    match answer {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => {
            *sender = None;
            Err(e.to_string())
        }
        Err(_) => {
            *sender = None;
            Err("no answer within 5 s".into())
        }
    }
}

/// One change to the files and the status the traffic's request gets once it is live.
struct Step {
    what: &'static str,
    change: Box<dyn FnOnce()>,
    then: u16,
}

fn step(what: &'static str, then: u16, change: impl FnOnce() + 'static) -> Step {
    Step {
        what,
        change: Box::new(change),
        then,
    }
}

/// Runs `steps` against a started gateway under traffic: before the first, `make()` answers
/// `before`; each step must be live within `LIVE_WITHIN`, add exactly one generation, and
/// every request must get the old or the new answer, never an error, never the old after the
/// new was seen.
async fn under_traffic(
    served: &Served,
    make: fn() -> Request<Full<Bytes>>,
    before: u16,
    steps: Vec<Step>,
) {
    assert_eq!(served.generation().await, 1);
    let traffic = Traffic::start(served.addr, make);
    let started = Instant::now();
    let mut windows = Vec::new(); // (change made, change seen live, old status, new status)
    let mut status = before;
    // The first answers, waited for with a bound: on a loaded machine the traffic's first
    // connection can take longer than a fixed pause.
    let deadline = Instant::now() + Duration::from_secs(5);
    while traffic.first_since(started, before).is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        traffic.first_since(started, before).is_some(),
        "the traffic gets {before} before any change: {:?}",
        traffic.seen.lock().unwrap().last()
    );
    for (i, step) in steps.into_iter().enumerate() {
        let generation = i as u64 + 2;
        let changed = Instant::now();
        (step.change)();
        let live = loop {
            if let Some(at) = traffic.first_since(changed, step.then) {
                break at;
            }
            assert!(
                changed.elapsed() < Duration::from_secs(10),
                "{}: the change never went live",
                step.what
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let took = live.saturating_duration_since(changed);
        assert!(
            took <= LIVE_WITHIN,
            "{}: live after {took:?}, more than {LIVE_WITHIN:?}",
            step.what
        );
        eprintln!("{}: live after {took:?}", step.what);
        // Long enough for a second, spurious reload to have happened (debounce 250 ms).
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            served.generation().await,
            generation,
            "{}: exactly one new generation",
            step.what
        );
        windows.push((changed, live, status, step.then));
        status = step.then;
    }
    let seen = traffic.stop().await;
    let elapsed = started.elapsed().as_secs_f64();
    let rate = seen.len() as f64 / elapsed;
    eprintln!("traffic: {rate:.0} requests/s over {elapsed:.1} s");
    assert!(
        rate >= 150.0,
        "steady traffic: {rate:.0} requests/s over {elapsed:.1} s"
    );
    for s in &seen {
        let status = match &s.outcome {
            Ok(status) => *status,
            Err(e) => panic!("a request failed during reload: {e}"),
        };
        // The window the request was sent in decides which answers are right.
        let mut allowed = vec![before];
        for (changed, live, old, new) in &windows {
            if s.sent >= *live {
                allowed = vec![*new];
            } else if s.sent >= *changed {
                allowed = vec![*old, *new];
            }
        }
        assert!(
            allowed.contains(&status),
            "a request sent {:?} into the run got {status}, expected one of {allowed:?}",
            s.sent.duration_since(started)
        );
    }
}

/// Writes `text` to `path` the way most editors do: a temp file beside it, renamed over it.
fn write_by_rename(path: &Path, text: &str) {
    let temp = path.with_extension("tmp-write");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// Truncates `path` and writes `text` into the same inode.
fn write_in_place(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// A copy of the shipped `config/` and `schemas/`, side by side as in the repository.
fn shipped_copy() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for dir in ["config", "schemas"] {
        copy_tree(&Path::new(REPO).join(dir), &root.path().join(dir));
    }
    root
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Flextell's body schema with `address.maxLength` set to `max`.
fn flextell_schema(root: &Path, max: u32) -> (PathBuf, String) {
    let path = root.join("schemas/flextell/create_conversation.body.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    schema["properties"]["address"]["maxLength"] = max.into();
    (path, serde_json::to_string_pretty(&schema).unwrap())
}

#[tokio::test]
async fn shipped_layout_relative_config_picks_up_a_schema_edit() {
    let _one = ONE_AT_A_TIME.lock().await;
    let root = shipped_copy();
    let served = Served::start(root.path(), "config/gateway.yaml", &[]);
    let (path, tight) = flextell_schema(root.path(), 5);
    let (_, loose) = flextell_schema(root.path(), 255);
    let (again, back) = (path.clone(), loose.clone());
    let steps = vec![
        step("rename over", 422, move || write_by_rename(&path, &tight)),
        step("in place", 200, move || write_in_place(&again, &back)),
    ];
    under_traffic(&served, post_flextell, 200, steps).await;

    // `/status` says what a change to which file will do.
    let status = served.status().await;
    let watching = status["watching"].as_array().unwrap();
    let schemas = std::fs::canonicalize(root.path().join("schemas")).unwrap();
    assert!(
        watching
            .iter()
            .any(|w| w["path"] == schemas.to_str().unwrap()
                && w["recursive"] == true
                && w["for"][0] == "schema directory"),
        "{watching:?}"
    );
    let mock = std::fs::canonicalize(root.path().join("config/mock")).unwrap();
    assert!(
        watching
            .iter()
            .any(|w| w["path"] == mock.to_str().unwrap() && w["recursive"] == false),
        "{watching:?}"
    );
}

#[tokio::test]
async fn shipped_layout_absolute_config_picks_up_a_schema_edit() {
    let _one = ONE_AT_A_TIME.lock().await;
    let root = shipped_copy();
    let config = root.path().join("config/gateway.yaml");
    let served = Served::start(Path::new("/"), config.to_str().unwrap(), &[]);
    let (path, tight) = flextell_schema(root.path(), 5);
    let steps = vec![step("cp over", 422, move || {
        let source = path.with_extension("new");
        std::fs::write(&source, &tight).unwrap();
        std::fs::copy(&source, &path).unwrap();
    })];
    under_traffic(&served, post_flextell, 200, steps).await;
}

/// A gateway on `config(…)`, started from a new directory: the config at `config_at`, and
/// `s.json` (minimum 1) in `schemas_at`, which the config names `named`.
struct Custom {
    root: tempfile::TempDir,
    upstream: Upstream,
    served: Served,
    config: PathBuf,
    schemas: PathBuf,
}

impl Custom {
    async fn start(config_at: &str, schemas_at: &str, named: &str) -> Custom {
        let root = tempfile::tempdir().unwrap();
        let upstream = Upstream::start(Answer::default()).await;
        let schemas = root.path().join(schemas_at);
        std::fs::create_dir_all(&schemas).unwrap();
        std::fs::write(schemas.join("s.json"), MIN_1).unwrap();
        let config_path = root.path().join(config_at);
        std::fs::create_dir_all(config_path.parent().unwrap()).unwrap();
        let named = named.replace("{root}", root.path().to_str().unwrap());
        std::fs::write(&config_path, config(&upstream.url(), &named, "")).unwrap();
        let served = Served::start(root.path(), config_path.to_str().unwrap(), &[]);
        Custom {
            root,
            upstream,
            served,
            config: config_path,
            schemas,
        }
    }
}

#[tokio::test]
async fn schema_dir_outside_the_config_tree() {
    let _one = ONE_AT_A_TIME.lock().await;
    let gw = Custom::start(
        "etc/gateway/gateway.yaml",
        "srv/schemas",
        "{root}/srv/schemas",
    )
    .await;
    let file = gw.schemas.join("s.json");
    let steps = vec![step("rename over", 422, move || {
        write_by_rename(&file, MIN_5)
    })];
    under_traffic(&gw.served, post_x, 200, steps).await;
}

#[tokio::test]
async fn schema_dir_inside_the_config_directory() {
    let _one = ONE_AT_A_TIME.lock().await;
    let gw = Custom::start("gateway.yaml", "schemas", "schemas").await;
    let file = gw.schemas.join("s.json");
    let steps = vec![step("in place", 422, move || write_in_place(&file, MIN_5))];
    under_traffic(&gw.served, post_x, 200, steps).await;
}

#[tokio::test]
async fn editors_write_patterns() {
    let _one = ONE_AT_A_TIME.lock().await;
    let gw = Custom::start("config/gateway.yaml", "schemas", "../schemas").await;
    let file = gw.schemas.join("s.json");
    let outside = gw.root.path().join("incoming.json");
    let (f1, f2, f3, f4) = (file.clone(), file.clone(), file.clone(), file.clone());
    let steps = vec![
        step("cp over", 422, move || {
            let source = f1.with_extension("src");
            std::fs::write(&source, MIN_5).unwrap();
            std::fs::copy(&source, &f1).unwrap();
        }),
        step("mv in", 200, move || {
            std::fs::write(&outside, MIN_1).unwrap();
            std::fs::rename(&outside, &f2).unwrap();
        }),
        // vim's default: the original renamed to a backup, a new file written, backup removed.
        step("vim backup-and-write", 422, move || {
            let backup = PathBuf::from(format!("{}~", f3.display()));
            std::fs::rename(&f3, &backup).unwrap();
            std::fs::write(&f3, MIN_5).unwrap();
            std::fs::remove_file(&backup).unwrap();
        }),
        step("truncate and write", 200, move || {
            write_in_place(&f4, MIN_1)
        }),
    ];
    under_traffic(&gw.served, post_x, 200, steps).await;
}

#[tokio::test]
async fn schema_directory_deleted_and_recreated_or_renamed_away_and_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let gw = Custom::start("config/gateway.yaml", "schemas", "../schemas").await;
    let schemas = &gw.schemas;
    let (s1, s2, s3) = (schemas.clone(), schemas.clone(), schemas.clone());
    let steps = vec![
        step("deleted and recreated", 422, move || {
            std::fs::remove_dir_all(&s1).unwrap();
            std::fs::create_dir(&s1).unwrap();
            std::fs::write(s1.join("s.json"), MIN_5).unwrap();
        }),
        step("renamed away, edited, renamed back", 200, move || {
            let away = s2.with_extension("away");
            std::fs::rename(&s2, &away).unwrap();
            std::fs::write(away.join("s.json"), MIN_1).unwrap();
            std::fs::rename(&away, &s2).unwrap();
        }),
        // The watch on the recreated directory works: an ordinary edit is seen.
        step("edited after both", 422, move || {
            write_by_rename(&s3.join("s.json"), MIN_5)
        }),
    ];
    under_traffic(&gw.served, post_x, 200, steps).await;
}

/// Lays out a Kubernetes ConfigMap volume at `mount`: the files in a timestamped directory,
/// `..data` a symlink to it, and each top-level name a symlink into `..data`.
fn configmap_generation(mount: &Path, stamp: &str, files: &[(&str, &str)]) {
    let dir = mount.join(stamp);
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    // The kubelet's swap: a new `..data_tmp` link renamed over `..data`.
    let temp = mount.join("..data_tmp");
    std::os::unix::fs::symlink(stamp, &temp).unwrap();
    std::fs::rename(&temp, mount.join("..data")).unwrap();
    for top in ["gateway.yaml", "schemas"] {
        let link = mount.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{top}"), &link).unwrap();
        }
    }
}

#[tokio::test]
async fn kubernetes_configmap_symlink_swap() {
    let _one = ONE_AT_A_TIME.lock().await;
    let upstream = Upstream::start(Answer::default()).await;
    let root = tempfile::tempdir().unwrap();
    let mount = root.path().join("etc/schemagate");
    std::fs::create_dir_all(&mount).unwrap();
    let yaml = config(&upstream.url(), "schemas", "");
    configmap_generation(
        &mount,
        "..2026_12_04_10_00_00.1",
        &[("gateway.yaml", &yaml), ("schemas/s.json", MIN_1)],
    );
    let served = Served::start(
        root.path(),
        mount.join("gateway.yaml").to_str().unwrap(),
        &[],
    );
    let (m1, m2) = (mount.clone(), mount.clone());
    let (y1, y2) = (yaml.clone(), yaml);
    let steps = vec![
        step("..data swapped", 422, move || {
            configmap_generation(
                &m1,
                "..2026_12_04_10_01_00.2",
                &[("gateway.yaml", &y1), ("schemas/s.json", MIN_5)],
            );
            std::fs::remove_dir_all(m1.join("..2026_12_04_10_00_00.1")).unwrap();
        }),
        step("..data swapped again", 200, move || {
            configmap_generation(
                &m2,
                "..2026_12_04_10_02_00.3",
                &[("gateway.yaml", &y2), ("schemas/s.json", MIN_1)],
            );
            std::fs::remove_dir_all(m2.join("..2026_12_04_10_01_00.2")).unwrap();
        }),
    ];
    under_traffic(&served, post_x, 200, steps).await;
}

#[tokio::test]
async fn config_file_a_symlink_to_a_file_elsewhere() {
    let _one = ONE_AT_A_TIME.lock().await;
    let upstream = Upstream::start(Answer::default()).await;
    let root = tempfile::tempdir().unwrap();
    let real = root.path().join("deploy/real/gateway.yaml");
    let schemas = root.path().join("deploy/real/schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    std::fs::write(schemas.join("s.json"), MIN_1).unwrap();
    std::fs::write(schemas.join("s5.json"), MIN_5).unwrap();
    let yaml = config(&upstream.url(), "schemas", "");
    std::fs::write(&real, &yaml).unwrap();
    let link = root.path().join("etc/gateway.yaml");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // Relative paths in the config resolve against the link's directory, as the loader
    // opens them: give it the schemas there too.
    std::os::unix::fs::symlink(&schemas, root.path().join("etc/schemas")).unwrap();
    let served = Served::start(root.path(), link.to_str().unwrap(), &[]);
    let edited = yaml.replace("body: s.json", "body: s5.json");
    let steps = vec![step("target edited", 422, move || {
        write_by_rename(&real, &edited)
    })];
    under_traffic(&served, post_x, 200, steps).await;
}

#[tokio::test]
async fn a_new_route_and_its_new_schema_in_one_change() {
    let _one = ONE_AT_A_TIME.lock().await;
    let gw = Custom::start("config/gateway.yaml", "schemas/v2", "../schemas/v2").await;
    let schemas = gw.schemas.clone();
    let config_path = gw.config.clone();
    let yaml = config(
        &gw.upstream.url(),
        "../schemas/v2",
        "  - { name: r.y, method: POST, path: /y, upstream: backend, schemas: { body: new/y.json } }\n",
    );
    fn post_y() -> Request<Full<Bytes>> {
        request(
            "POST",
            "/y",
            &[("content-type", "application/json")],
            br#"{"n":2}"#,
        )
    }
    // The config first, then the schema it names, in a new directory: the order that makes a
    // reload in between fail.
    let steps = vec![step("config and schema", 422, move || {
        write_by_rename(&config_path, &yaml);
        std::fs::create_dir_all(schemas.join("new")).unwrap();
        std::fs::write(schemas.join("new/y.json"), MIN_5).unwrap();
    })];
    under_traffic(&gw.served, post_y, 404, steps).await;
}

#[tokio::test]
async fn a_broken_schema_is_refused_and_its_fix_goes_live() {
    let _one = ONE_AT_A_TIME.lock().await;
    let gw = Custom::start("config/gateway.yaml", "schemas", "../schemas").await;
    let file = gw.schemas.join("s.json");

    let served = &gw.served;
    let traffic = Traffic::start(served.addr, post_x);
    write_by_rename(&file, "{\n  \"type\": \"object\",\n  \"properties\": {\n}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let errors = loop {
        let status = served.status().await;
        let errors = status["last_reload"]["errors"].clone();
        if errors.as_array().is_some_and(|e| !e.is_empty()) {
            break errors;
        }
        assert!(
            Instant::now() < deadline,
            "the broken schema was not reported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = errors.to_string();
    assert!(
        text.contains("schemas/s.json") && text.contains("line 4"),
        "the error names the file and line: {text}"
    );
    assert_eq!(served.generation().await, 1, "the broken schema is refused");
    let seen = traffic.stop().await;
    assert!(
        seen.iter().all(|s| s.outcome == Ok(200)),
        "the old schema keeps serving"
    );

    // The fix goes live as any change does.
    let fixed = file.clone();
    let steps = vec![step("fixed", 422, move || write_by_rename(&fixed, MIN_5))];
    under_traffic(&gw.served, post_x, 200, steps).await;
    let status = served.status().await;
    assert_eq!(status["last_reload"]["ok"], true, "{status}");
}
