//! The control API's HTTP request reader (`vmm::api::http`) and router (`vmm::api::respond`)
//! against a fake VM, as `ApiServer` drives them for one connection.
//!
//! Input: byte 0 the VM's state (`% 5`: starting, running, paused, stopping, stopped);
//! byte 1 how many bytes each `read` returns (0: all); byte 2 after how many 64-byte units
//! the client stalls (reads time out; 0: never); the rest is what the client sends.
//!
//! Checked: the reader never reads past its limits; a request that parses renders back to
//! the same request; every response (to a request or to garbage) has a status line with a
//! known status, a correct Content-Length, header values without line breaks, and a JSON
//! body, an error's being one line "cause; fix"; the status follows from the route table and
//! the VM's state, and a refused request leaves the VM as it was; GET /vm's config reads
//! back.

#![no_main]

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vmm::api::http::{self, parse_response, read_request, ReadError, MAX_BODY, MAX_HEAD};
use vmm::api::{respond, Request, Response, Route, VmControl, ROUTES};
use vmm::{ControlError, Timeline, VmConfig, VmState};

const STATES: [VmState; 5] = [
    VmState::Starting,
    VmState::Running,
    VmState::Paused,
    VmState::Stopping,
    VmState::Stopped,
];

/// A VM with `VmHandle`'s state rules, recording what it was asked.
struct FakeVm {
    state: Mutex<VmState>,
    calls: Mutex<Vec<String>>,
}

impl FakeVm {
    fn running_or_paused(&self, next: VmState) -> Result<(), ControlError> {
        let mut s = self.state.lock().unwrap();
        match *s {
            VmState::Running | VmState::Paused => {
                *s = next;
                Ok(())
            }
            other => Err(ControlError::NotRunning(other)),
        }
    }
}

impl VmControl for FakeVm {
    fn state(&self) -> VmState {
        *self.state.lock().unwrap()
    }
    fn pause(&self) -> Result<(), ControlError> {
        self.running_or_paused(VmState::Paused)
    }
    fn resume(&self) -> Result<(), ControlError> {
        self.running_or_paused(VmState::Running)
    }
    fn shutdown(&self, timeout: Duration) -> Result<(), ControlError> {
        match self.state() {
            s @ (VmState::Stopping | VmState::Stopped) => Err(ControlError::NotRunning(s)),
            _ => {
                let call = format!("shutdown {}", timeout.as_secs());
                self.calls.lock().unwrap().push(call);
                Ok(())
            }
        }
    }
    fn reset(&self) {
        self.calls.lock().unwrap().push("reset".into());
        *self.state.lock().unwrap() = VmState::Stopping;
    }
    fn timeline(&self) -> Arc<Timeline> {
        Arc::new(Timeline::new(Instant::now()))
    }
}

/// The client's bytes, `chunk` at a time, timing out after `stall_at`.
struct Client<'a> {
    bytes: &'a [u8],
    chunk: usize,
    stall_at: Option<usize>,
    taken: usize,
}

impl Read for Client<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stall_at.is_some_and(|at| self.taken >= at) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = buf.len().min(self.bytes.len()).min(self.chunk);
        if let Some(at) = self.stall_at {
            n = n.min(at - self.taken);
        }
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        self.taken += n;
        Ok(n)
    }
}

/// The response as the client gets it, checked.
fn check_response(r: &Response) {
    assert_ne!(http::reason(r.status), "Unknown", "status {}", r.status);
    let mut out = Vec::new();
    r.write_to(&mut out).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    let status_line = format!("HTTP/1.1 {} {}\r\n", r.status, http::reason(r.status));
    assert!(text.starts_with(&status_line), "{text:?}");
    assert!(text.contains(&format!("\r\nContent-Length: {}\r\n", r.body.len())));
    for (name, value) in &r.headers {
        assert!(!name.contains(['\r', '\n', ':']) && !value.contains(['\r', '\n']));
    }
    let parsed = parse_response(&out).unwrap();
    assert_eq!(
        (parsed.status, parsed.body.as_str()),
        (r.status, r.body.as_str())
    );
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    if r.status >= 400 {
        let line = body["error"].as_str().expect("an error line");
        assert!(!line.contains('\n') && line.contains("; "), "{line:?}");
    }
}

/// What the router must answer `req` with, when its body is acceptable.
fn expected_status(req: &Request, state: VmState) -> u16 {
    let on_path: Vec<_> = ROUTES.iter().filter(|(_, p, _)| *p == req.path).collect();
    let Some(&&(_, _, route)) = on_path.iter().find(|(m, _, _)| *m == req.method) else {
        return if on_path.is_empty() { 404 } else { 405 };
    };
    let live = !matches!(state, VmState::Stopping | VmState::Stopped);
    match route {
        Route::GetVm => 200,
        Route::Pause | Route::Resume if matches!(state, VmState::Running | VmState::Paused) => 200,
        Route::Pause | Route::Resume => 409,
        Route::Shutdown | Route::Reboot if live => 202,
        Route::Shutdown | Route::Reboot => 409,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&[state, chunk, stall], bytes)) = data.split_first_chunk::<3>() else {
        return;
    };
    let mut client = Client {
        bytes,
        chunk: if chunk == 0 {
            usize::MAX
        } else {
            usize::from(chunk)
        },
        stall_at: (stall != 0).then(|| usize::from(stall) * 64),
        taken: 0,
    };
    let result = read_request(&mut client);
    // The head's blank line is not part of MAX_HEAD.
    assert!(
        client.taken <= MAX_HEAD + 4 + MAX_BODY,
        "read {}",
        client.taken
    );
    let req = match result {
        Ok(req) => req,
        Err(ReadError::Reply(r)) => return check_response(&r),
        Err(ReadError::Io(_)) => return,
    };

    // What the server understood, sent again, is understood the same way.
    let mut again = format!(
        "{} {} HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        req.method,
        req.path,
        req.body.len()
    )
    .into_bytes();
    again.extend_from_slice(&req.body);
    assert_eq!(read_request(&mut &again[..]).unwrap(), req);

    let state = STATES[usize::from(state) % STATES.len()];
    let vm = FakeVm {
        state: Mutex::new(state),
        calls: Mutex::new(Vec::new()),
    };
    let config = VmConfig::new("/boot/vmlinuz").device("0000:01:00.0".parse::<vmm::Bdf>().unwrap());
    let r = respond(&req, &vm, &config);
    check_response(&r);
    assert_eq!(
        r.status == 405,
        r.headers.iter().any(|(n, _)| *n == "Allow")
    );
    if r.status == 400 {
        assert_eq!(vm.state(), state, "a refused request changes nothing");
        assert!(vm.calls.lock().unwrap().is_empty());
    } else {
        assert_eq!(
            r.status,
            expected_status(&req, state),
            "{req:?} when {state}"
        );
    }
    if r.status >= 400 {
        assert_eq!(vm.state(), state);
    }
    if r.status == 200 && req.path == "/vm" {
        // GET /vm shows the config as a config file has it: it reads back.
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let shown: VmConfig = serde_json::from_value(body["config"].clone()).unwrap();
        assert_eq!(shown, config);
    }
});
