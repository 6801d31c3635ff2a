//! The examples in README.md and docs/*.md, run as a reader runs them.
//!
//! A checked example is a ```sh block followed, with only blank lines between, by a block
//! showing what it prints: ```http for one `curl -si` answer (the status line, the headers
//! worth showing, a blank line, the body) or ```text for plain output. In either, a line
//! `...` stands for any number of lines, so a long body can be cut; a line ending in `...`
//! for any line that starts with what comes before it; and in an http block a header value
//! `...` means "present, any value" (request ids, dates). Every ```sh block that
//! runs `curl` must be checked this way: an example nobody runs is how the README's first curl
//! came to answer 401.
//!
//! Each page gets its own gateway, started as the README starts it: the binary with no
//! arguments (`cargo run --release` runs exactly that) in the repository's root, so the
//! default `config/gateway.yaml` is read relative to the current directory, with the vendors'
//! variables unset so the built-in mock answers. Only the two ports differ: `127.0.0.1:0`, and
//! the page's `localhost:8080` / `localhost:9901` are rewritten to the ports it got. A
//! `cargo run --release` block's output is compared with the lines the gateway prints on
//! start, with the ports written back. Every other block runs in `sh` with the binary on
//! `PATH`, in the repository's root, and real curl (which `./test.sh` installs when missing).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::VENDOR_VARS;

const BIN: &str = env!("CARGO_BIN_EXE_schemagate");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// How long one example may take before it counts as hung.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A fenced block of a page: its info string, first content line (1-based) and content.
#[derive(Debug)]
struct Block {
    info: String,
    line: usize,
    text: String,
    /// The line after the closing fence.
    end: usize,
}

/// A command and the output the page shows for it.
#[derive(Debug)]
struct Example {
    line: usize,
    script: String,
    /// `http` or `text`.
    kind: String,
    expected: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(info) = lines[i].strip_prefix("```") {
            let start = i + 1;
            let mut j = start;
            while j < lines.len() && !lines[j].starts_with("```") {
                j += 1;
            }
            out.push(Block {
                info: info.trim().to_string(),
                line: start + 1,
                text: lines[start..j.min(lines.len())].join("\n"),
                end: j + 1,
            });
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

/// The page's checked examples, and the `curl` blocks that are not checked (an error).
fn examples(markdown: &str) -> (Vec<Example>, Vec<usize>) {
    let lines: Vec<&str> = markdown.lines().collect();
    let blocks = blocks(markdown);
    let mut examples = Vec::new();
    let mut unchecked = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        if block.info != "sh" {
            continue;
        }
        let shown = blocks.get(i + 1).filter(|next| {
            (next.info == "http" || next.info == "text")
                && lines[block.end..next.line - 2]
                    .iter()
                    .all(|l| l.trim().is_empty())
        });
        match shown {
            Some(next) => examples.push(Example {
                line: block.line,
                script: block.text.clone(),
                kind: next.info.clone(),
                expected: next.text.clone(),
            }),
            None if block.text.contains("curl ") => unchecked.push(block.line),
            None => {}
        }
    }
    (examples, unchecked)
}

/// Whether an actual line is the shown one: equal, or, when the shown line ends in `...`,
/// starting with what comes before it (a long JSON line cut short).
fn line_matches(shown: &str, actual: &str) -> bool {
    match shown.strip_suffix("...") {
        Some(prefix) if !prefix.trim().is_empty() => actual.starts_with(prefix),
        _ => shown == actual,
    }
}

/// Whether the lines of `actual` are `shown` line for line ([`line_matches`]).
fn lines_match(shown: &[&str], actual: &[&str]) -> bool {
    shown.len() == actual.len() && shown.iter().zip(actual).all(|(s, a)| line_matches(s, a))
}

/// Whether `actual` is `expected`, where a line `...` in `expected` stands for any lines.
fn matches_elided(expected: &str, actual: &str) -> bool {
    let expected: Vec<&str> = expected.trim_end().lines().collect();
    let actual: Vec<&str> = actual.trim_end().lines().collect();
    let parts: Vec<&[&str]> = expected.split(|l| l.trim() == "...").collect();
    if parts.len() == 1 {
        return lines_match(&expected, &actual);
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if actual.len() < first.len() + last.len() {
        return false;
    }
    let end = actual.len() - last.len();
    if !lines_match(first, &actual[..first.len()]) || !lines_match(last, &actual[end..]) {
        return false;
    }
    // Each middle part in order, within what the first and last parts left.
    let mut at = first.len();
    for part in &parts[1..parts.len() - 1] {
        match (at..end)
            .find(|&k| k + part.len() <= end && lines_match(part, &actual[k..k + part.len()]))
        {
            Some(k) => at = k + part.len(),
            None => return false,
        }
    }
    true
}

/// Compares a `curl -si` answer with an ```http block; `Err` says what differs.
fn check_http(expected: &str, actual: &str) -> Result<(), String> {
    let actual = actual.replace("\r\n", "\n");
    let (head, body) = actual.split_once("\n\n").unwrap_or((&actual, ""));
    let mut head_lines = head.lines();
    let status = head_lines.next().unwrap_or("");
    let headers: Vec<(String, &str)> = head_lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim()))
        .collect();
    let (want_head, want_body) = expected.split_once("\n\n").unwrap_or((expected, ""));
    let mut want_lines = want_head.lines();
    let want_status = want_lines.next().unwrap_or("");
    if status != want_status {
        return Err(format!("status line {status:?}, shown {want_status:?}"));
    }
    for line in want_lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("shown header line {line:?} has no colon"))?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match headers.iter().find(|(n, _)| *n == name) {
            None => return Err(format!("no {name} header in the answer")),
            Some((_, got)) if value != "..." && *got != value => {
                return Err(format!("{name}: {got:?}, shown {value:?}"))
            }
            Some(_) => {}
        }
    }
    if !matches_elided(want_body, body) {
        return Err(format!("body differs:\n{body}"));
    }
    Ok(())
}

/// The gateway of one page, started as the README says.
struct Gateway {
    child: Child,
    /// The lines it printed on start, with its ports written back to the defaults.
    started: Vec<String>,
    listen: String,
    admin: String,
}

impl Gateway {
    fn start() -> Gateway {
        let mut command = Command::new(BIN);
        command
            .current_dir(ROOT)
            .env("SCHEMAGATE_LISTEN", "127.0.0.1:0")
            .env("SCHEMAGATE_ADMIN", "127.0.0.1:0")
            .env("NO_COLOR", "1")
            // The access lines (stdout) are not read here; the start-up lines come on stderr,
            // with the other diagnostics.
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for var in VENDOR_VARS {
            command.env_remove(var);
        }
        let mut child = command.spawn().unwrap();
        // Lines arrive through a thread, so that a gateway that never prints its addresses
        // fails the test after a bound instead of hanging it. It keeps reading afterwards, so
        // the diagnostics never meet a full or closed pipe.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (lines, printed) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let address = |line: &str| -> String {
            line.split("http://")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("no address in {line:?}"))
                .to_string()
        };
        let (mut listen, mut admin, mut started) = (None, None, Vec::new());
        while admin.is_none() {
            let line = printed
                .recv_timeout(EXAMPLE_TIMEOUT)
                .unwrap_or_else(|e| panic!("no admin address on stderr ({e}) after {started:?}"));
            if line.contains("schemagate listening on") {
                listen = Some(address(&line));
            } else if line.contains("schemagate admin on") {
                admin = Some(address(&line));
            } else {
                continue;
            }
            started.push(line.trim_end().to_string());
        }
        let (listen, admin) = (listen.unwrap(), admin.unwrap());
        let started = started
            .iter()
            .map(|l| {
                l.replace(&listen, "127.0.0.1:8080")
                    .replace(&admin, "127.0.0.1:9901")
            })
            .collect();
        Gateway {
            child,
            started,
            listen,
            admin,
        }
    }

    /// Runs `script` in `sh` against this gateway; its stdout.
    fn run(&self, script: &str) -> Result<String, String> {
        let script = script
            .replace("localhost:8080", &self.listen)
            .replace("localhost:9901", &self.admin);
        let bin_dir = Path::new(BIN).parent().unwrap();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![bin_dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        let mut command = Command::new("sh");
        command
            .args(["-c", &script])
            .current_dir(ROOT)
            .env("PATH", std::env::join_paths(dirs).unwrap())
            .env_remove("SCHEMAGATE_LISTEN")
            .env_remove("SCHEMAGATE_ADMIN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in VENDOR_VARS {
            command.env_remove(var);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start sh: {e}"))?;
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        });
        let deadline = Instant::now() + EXAMPLE_TIMEOUT;
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {EXAMPLE_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = reader.join().unwrap();
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// README.md and every page under docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| p.strip_prefix(ROOT).unwrap().to_path_buf())
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// Runs one page's examples; each failure as `page:line: what differs`. Returns the bodies
/// the http examples answered, too.
fn run_page(page: &Path, examples: &[Example]) -> (Vec<String>, Vec<String>) {
    let (mut failures, mut bodies) = (Vec::new(), Vec::new());
    let gateway = Gateway::start();
    for example in examples {
        let at = format!("{}:{}", page.display(), example.line);
        let result = if example.script.trim_start().starts_with("cargo run") {
            // The gateway above is this command; compare what it printed on start.
            let started = gateway.started.join("\n");
            if matches_elided(&example.expected, &started) {
                Ok(())
            } else {
                Err(format!("printed on start:\n{started}"))
            }
        } else {
            gateway.run(&example.script).and_then(|out| {
                if example.kind == "http" {
                    let body = out.replace("\r\n", "\n");
                    if let Some((_, body)) = body.split_once("\n\n") {
                        bodies.push(body.trim_end().to_string());
                    }
                    check_http(&example.expected, &out)
                } else if matches_elided(&example.expected, &out) {
                    bodies.push(out.trim_end().to_string());
                    Ok(())
                } else {
                    Err(format!("printed:\n{out}"))
                }
            })
        };
        if let Err(why) = result {
            failures.push(format!(
                "{at}: {}\n  shown:\n{}\n  {why}",
                example.script, example.expected
            ));
        }
    }
    (failures, bodies)
}

#[test]
#[ignore = "runs real curl, which ./test.sh installs when missing"]
fn every_example_answers_as_shown() {
    let mut failures = Vec::new();
    let mut counted = 0;
    let mut readme_bodies = Vec::new();
    for page in pages() {
        let markdown = std::fs::read_to_string(Path::new(ROOT).join(&page)).unwrap();
        let (examples, unchecked) = examples(&markdown);
        for line in unchecked {
            failures.push(format!(
                "{}:{line}: a curl example with no answer shown under it",
                page.display()
            ));
        }
        if examples.is_empty() {
            continue;
        }
        counted += examples.len();
        let (failed, bodies) = run_page(&page, &examples);
        failures.extend(failed);
        if page == Path::new("README.md") {
            readme_bodies = bodies;
        }
    }
    // The envelope shown at the top of the README is one the tour's gateway answered.
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let top = blocks(&readme)
        .into_iter()
        .find(|b| b.info == "json")
        .map(|b| b.text.trim().to_string())
        .unwrap_or_default();
    if !readme_bodies.contains(&top) {
        failures.push(format!(
            "README.md: the envelope at the top is no answer of the tour: {top}"
        ));
    }
    assert!(counted >= 10, "only {counted} examples found");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn shown_answers_are_compared_line_for_line() {
    let answer = "HTTP/1.1 422 Unprocessable Entity\r\ncontent-type: application/json\r\n\
                  x-request-id: abc-1\r\n\r\n{\"a\":1,\n\"b\":2}";
    let shown = "HTTP/1.1 422 Unprocessable Entity\ncontent-type: application/json\n\
                 x-request-id: ...\n\n{\"a\":1,\n\"b\":2}";
    assert_eq!(check_http(shown, answer), Ok(()));
    // An elided body, a wrong status, a wrong header value, a missing header, another body.
    assert_eq!(
        check_http(&shown.replace("\"b\":2}", "..."), answer),
        Ok(())
    );
    for wrong in [
        shown.replace("422 Unprocessable Entity", "401 Unauthorized"),
        shown.replace("application/json", "text/plain"),
        shown.replace("x-request-id: ...", "allow: GET"),
        shown.replace("\"b\":2", "\"b\":3"),
        shown.replace("{\"a\":1,\n", ""),
    ] {
        assert!(check_http(&wrong, answer).is_err(), "{wrong}");
    }
    assert!(matches_elided("a\n...\nc\n...\ne", "a\nb\nc\nd\ne"));
    assert!(!matches_elided("a\n...\nx\n...\ne", "a\nb\nc\nd\ne"));
    assert!(!matches_elided("a\n...\na", "a"));
    assert!(matches_elided("{\"a\":1,...\nz", "{\"a\":1,\"b\":2}\nz"));
    assert!(!matches_elided("{\"a\":2,...", "{\"a\":1,\"b\":2}"));
    assert!(!matches_elided("...x", "x"));
}

#[test]
fn every_curl_on_the_pages_has_its_answer_shown() {
    for page in pages() {
        let markdown = std::fs::read_to_string(Path::new(ROOT).join(&page)).unwrap();
        let (_, unchecked) = examples(&markdown);
        assert!(
            unchecked.is_empty(),
            "{}: curl examples at lines {unchecked:?} show no answer under them",
            page.display()
        );
    }
    let (examples, _) = examples("```sh\ncurl -s x\n```\n\n```text\nok\n```\n```sh\ncurl y\n```\n");
    assert_eq!(examples.len(), 1);
    assert_eq!(examples[0].expected, "ok");
}

/// The vendors' variables the README names are the ones the shipped config reads, all five.
#[test]
fn the_readme_names_the_shipped_configs_upstream_variables() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let config = std::fs::read_to_string(Path::new(ROOT).join("config/gateway.yaml")).unwrap();
    let named = |text: &str| {
        let mut names: Vec<String> = text
            .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .filter(|w| w.len() > "_UPSTREAM".len() && w.ends_with("_UPSTREAM"))
            .map(str::to_string)
            .collect();
        names.sort();
        names.dedup();
        names
    };
    assert_eq!(named(&readme), named(&config));
    let mut vendors = VENDOR_VARS.map(String::from).to_vec();
    vendors.sort();
    assert_eq!(named(&config), vendors);
}
