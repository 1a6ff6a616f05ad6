//! `zhitong run --config` and `zhitong test` on files that are not small regular files: the
//! process exits 2 at once with one line naming the file, instead of reading /dev/zero until
//! memory runs out or waiting forever on a FIFO.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run zhitong with `args`; its exit status and stderr, or a failure after 10 s.
fn zhitong(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zhitong"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("zhitong {args:?} still runs after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code().unwrap_or(-1), stderr)
}

fn one_line_naming(stderr: &str, path: &Path) {
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
}

#[test]
fn dev_zero_a_fifo_and_a_directory_are_refused_at_once() {
    let dir: PathBuf = std::env::temp_dir().join(format!("zhitong-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("vm.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for path in [Path::new("/dev/zero"), &fifo, &dir] {
        let p = path.to_str().unwrap();
        let (status, stderr) = zhitong(&["run", "--config", p]);
        assert_eq!(status, 2, "{stderr}");
        one_line_naming(&stderr, path);
        assert!(
            stderr.contains("not a regular file; check the path given to --config"),
            "{stderr}"
        );
        let (status, stderr) = zhitong(&["test", p]);
        assert_eq!(status, 2, "{stderr}");
        one_line_naming(&stderr, path);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
