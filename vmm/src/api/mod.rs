//! The control API: HTTP/1.1 + JSON on a Unix socket (`zhitong run --api-socket PATH`).
//!
//! [`ROUTES`] is the route table (docs/api.md and docs/openapi.json describe the same routes;
//! a test keeps the OpenAPI file in sync with it). [`respond`] maps a request to a response
//! for any [`VmControl`]; [`ApiServer`] serves it on a socket; [`client::request`] talks to
//! it.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let reply = vmm::api::client::request("/run/vm0.sock".as_ref(), "GET", "/vm", None)?;
//! println!("{} {}", reply.status, reply.body);
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod http;
mod server;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::VmConfig;
use crate::handle::{ControlError, VmHandle, VmState};
use crate::timeline::Timeline;
pub use http::{Request, Response};
pub use server::{ApiServer, BindError, MAX_CONNECTIONS, REQUEST_DEADLINE, SOCKET_MODE};

/// What the API can do to a VM. Implemented by [`VmHandle`]; tests use a fake.
pub trait VmControl: Sync {
    fn state(&self) -> VmState;
    fn pause(&self) -> Result<(), ControlError>;
    fn resume(&self) -> Result<(), ControlError>;
    fn shutdown(&self, timeout: Duration) -> Result<(), ControlError>;
    /// End the VM now as a guest reboot would (`VmExit::Reset`).
    fn reset(&self);
    /// The boot timeline.
    fn timeline(&self) -> Arc<Timeline>;
}

impl VmControl for VmHandle {
    fn state(&self) -> VmState {
        VmHandle::state(self)
    }
    fn pause(&self) -> Result<(), ControlError> {
        VmHandle::pause(self)
    }
    fn resume(&self) -> Result<(), ControlError> {
        VmHandle::resume(self)
    }
    fn shutdown(&self, timeout: Duration) -> Result<(), ControlError> {
        VmHandle::shutdown(self, timeout)
    }
    fn reset(&self) {
        VmHandle::reset(self)
    }
    fn timeline(&self) -> Arc<Timeline> {
        VmHandle::timeline(self)
    }
}

/// The routes, one source of truth: the router dispatches on it, the 405 `Allow` header
/// comes from it, and a test checks docs/openapi.json against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    GetVm,
    Pause,
    Resume,
    Shutdown,
    Reboot,
}

/// (method, path, route).
pub const ROUTES: &[(&str, &str, Route)] = &[
    ("GET", "/vm", Route::GetVm),
    ("PUT", "/vm/pause", Route::Pause),
    ("PUT", "/vm/resume", Route::Resume),
    ("PUT", "/vm/shutdown", Route::Shutdown),
    ("PUT", "/vm/reboot", Route::Reboot),
];

/// How long the guest gets to power off after PUT /vm/shutdown without a body.
pub const DEFAULT_SHUTDOWN_TIMEOUT_S: u64 = 30;

/// The body of GET /vm; the fields serialize in the documented order.
#[derive(Serialize)]
struct VmInfo<'a> {
    state: String,
    /// As in a `--config` JSON file.
    config: &'a VmConfig,
    /// Milestones in boot order, as `--timings` prints them.
    timeline: &'a Timeline,
    devices: Vec<String>,
    /// The virtio disks in guest order (vda first), in `--disk`'s form; absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    disks: Vec<String>,
    /// The virtio network interfaces in guest order (eth0 first), in `--net`'s form.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    nets: Vec<String>,
    /// The vsock device, in `--vsock`'s form; absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    vsock: Option<String>,
}

/// The body of the replies that only show the state (pause, resume, reboot).
#[derive(Serialize)]
struct StateReply {
    state: String,
}

/// The body of the PUT /vm/shutdown reply.
#[derive(Serialize)]
struct ShutdownReply {
    state: String,
    timeout_s: u64,
}

/// The body of PUT /vm/shutdown.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShutdownBody {
    timeout_s: Option<u64>,
}

/// Answer one request. Never panics, whatever the request.
pub fn respond(req: &Request, vm: &dyn VmControl, config: &VmConfig) -> Response {
    let on_path: Vec<&(&str, &str, Route)> =
        ROUTES.iter().filter(|(_, p, _)| *p == req.path).collect();
    if on_path.is_empty() {
        let known: Vec<String> = ROUTES.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
        return Response::error(
            404,
            format!(
                "no route {}; the routes are {}",
                printable(&req.path),
                known.join(", ")
            ),
        );
    }
    let Some(&&(_, _, route)) = on_path.iter().find(|(m, _, _)| *m == req.method) else {
        let allow: Vec<&str> = on_path.iter().map(|(m, _, _)| *m).collect();
        let allow = allow.join(", ");
        return Response::error(
            405,
            format!(
                "{} does not take {}; use {allow}",
                req.path,
                printable(&req.method)
            ),
        )
        .with_header("Allow", allow);
    };
    match route {
        Route::GetVm => {
            if let Err(e) = body_json(req) {
                return e;
            }
            let timeline = vm.timeline();
            Response::json(
                200,
                &VmInfo {
                    state: vm.state().to_string(),
                    config,
                    timeline: &timeline,
                    devices: config.devices.iter().map(|d| d.to_string()).collect(),
                    disks: config.disks.iter().map(|d| d.to_string()).collect(),
                    nets: config.nets.iter().map(|n| n.to_string()).collect(),
                    vsock: config.vsock.as_ref().map(|v| v.to_string()),
                },
            )
        }
        Route::Pause | Route::Resume => {
            if let Err(e) = body_json(req) {
                return e;
            }
            let (result, verb) = if route == Route::Pause {
                (vm.pause(), "pause")
            } else {
                (vm.resume(), "resume")
            };
            match result {
                Ok(()) => state_reply(200, vm),
                Err(e) => conflict(&e, verb),
            }
        }
        Route::Shutdown => {
            let body: ShutdownBody = match body_json(req) {
                Ok(None) => ShutdownBody::default(),
                Ok(Some(v)) => match serde_json::from_value(v.clone())
                    .map_err(|e| e.to_string())
                    .and_then(|b| {
                        if v.is_object() {
                            Ok(b)
                        } else {
                            Err("not an object".into())
                        }
                    }) {
                    Ok(b) => b,
                    Err(e) => {
                        return Response::error(
                            400,
                            format!(
                            "bad shutdown body ({}); send {{\"timeout_s\": SECONDS}} or no body",
                            one_line(&e.to_string())
                        ),
                        )
                    }
                },
                Err(e) => return e,
            };
            let timeout_s = body.timeout_s.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_S);
            match vm.shutdown(Duration::from_secs(timeout_s)) {
                Ok(()) => Response::json(
                    202,
                    &ShutdownReply {
                        state: vm.state().to_string(),
                        timeout_s,
                    },
                ),
                Err(e) => conflict(&e, "shut down"),
            }
        }
        Route::Reboot => {
            if let Err(e) = body_json(req) {
                return e;
            }
            match vm.state() {
                s @ (VmState::Stopping | VmState::Stopped) => {
                    conflict(&ControlError::NotRunning(s), "reboot")
                }
                _ => {
                    vm.reset();
                    state_reply(202, vm)
                }
            }
        }
    }
}

fn state_reply(status: u16, vm: &dyn VmControl) -> Response {
    Response::json(
        status,
        &StateReply {
            state: vm.state().to_string(),
        },
    )
}

fn conflict(e: &ControlError, verb: &str) -> Response {
    let ControlError::NotRunning(state) = e;
    let fix = match state {
        VmState::Starting => "retry once GET /vm shows it running",
        _ => "GET /vm shows the state; a stopped VM cannot be controlled",
    };
    Response::error(
        409,
        format!("the VM is {state}, so it cannot {verb} now; {fix}"),
    )
}

/// The request body as JSON: `None` when empty, a 400 response when it is not JSON.
fn body_json(req: &Request) -> Result<Option<serde_json::Value>, Response> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&req.body).map(Some).map_err(|e| {
        Response::error(
            400,
            format!(
                "the body is not JSON ({}); send a JSON object or no body",
                one_line(&e.to_string())
            ),
        )
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A client-supplied string, shortened and stripped of control characters for an error line.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 64 {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use std::sync::Mutex;

    /// A VM that obeys the same state rules as `VmHandle`.
    pub(crate) struct FakeVm {
        pub state: Mutex<VmState>,
        pub calls: Mutex<Vec<String>>,
    }

    impl FakeVm {
        pub fn new(state: VmState) -> Self {
            Self {
                state: Mutex::new(state),
                calls: Mutex::new(Vec::new()),
            }
        }
    }

    impl VmControl for FakeVm {
        fn state(&self) -> VmState {
            *self.state.lock().unwrap()
        }
        fn pause(&self) -> Result<(), ControlError> {
            let mut s = self.state.lock().unwrap();
            match *s {
                VmState::Running | VmState::Paused => {
                    *s = VmState::Paused;
                    Ok(())
                }
                other => Err(ControlError::NotRunning(other)),
            }
        }
        fn resume(&self) -> Result<(), ControlError> {
            let mut s = self.state.lock().unwrap();
            match *s {
                VmState::Running | VmState::Paused => {
                    *s = VmState::Running;
                    Ok(())
                }
                other => Err(ControlError::NotRunning(other)),
            }
        }
        fn shutdown(&self, timeout: Duration) -> Result<(), ControlError> {
            match self.state() {
                s @ (VmState::Stopping | VmState::Stopped) => Err(ControlError::NotRunning(s)),
                _ => {
                    self.calls
                        .lock()
                        .unwrap()
                        .push(format!("shutdown {}", timeout.as_secs()));
                    Ok(())
                }
            }
        }
        fn reset(&self) {
            self.calls.lock().unwrap().push("reset".into());
            *self.state.lock().unwrap() = VmState::Stopping;
        }
        fn timeline(&self) -> Arc<Timeline> {
            Arc::new(Timeline::new(std::time::Instant::now()))
        }
    }

    pub(crate) fn config() -> VmConfig {
        let mut c = VmConfig::new("/boot/vmlinuz");
        c.devices = vec!["0000:01:00.0".parse().unwrap()];
        c
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::{config, FakeVm};
    use super::*;

    fn call(
        vm: &FakeVm,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, serde_json::Value, Response) {
        let req = Request {
            method: method.into(),
            path: path.into(),
            body: body.as_bytes().to_vec(),
        };
        let r = respond(&req, vm, &config());
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("the body is JSON");
        if r.status >= 400 {
            let line = v["error"].as_str().expect("an error line");
            assert!(!line.contains('\n') && line.contains("; "), "{line}");
        }
        (r.status, v, r)
    }

    #[test]
    fn get_vm_shows_state_config_timeline_devices() {
        let vm = FakeVm::new(VmState::Running);
        let (status, v, _) = call(&vm, "GET", "/vm", "");
        assert_eq!(status, 200);
        assert_eq!(v["state"], "running");
        assert_eq!(v["config"]["kernel"]["path"], "/boot/vmlinuz");
        assert_eq!(v["devices"], serde_json::json!(["0000:01:00.0"]));
        assert!(v["timeline"]["vm_created_ms"].is_null());
        assert!(v["timeline"].as_object().unwrap().contains_key("exit_ms"));
        let (_, _, r) = call(&vm, "GET", "/vm", "");
        assert!(
            r.body.starts_with("{\"state\":\"running\",\"config\":"),
            "{}",
            r.body
        );
        assert!(
            r.body.find("vm_created_ms") < r.body.find("exit_ms"),
            "{}",
            r.body
        );
        // The exact text: documented key order, the timeline as --timings prints it.
        let config_json = serde_json::to_string(&config()).unwrap();
        let want = String::from("{\"state\":\"running\",\"config\":")
            + &config_json
            + ",\"timeline\":{\"vm_created_ms\":null,\"memory_ready_ms\":null,\
               \"kernel_loaded_ms\":null,\"devices_ready_ms\":null,\"first_vcpu_entry_ms\":null,\
               \"dma_mapped_ms\":null,\"guest_marker_ms\":null,\"exit_ms\":null},\"devices\":[\"0000:01:00.0\"]}";
        assert_eq!(r.body, want);
        // Disks, when there are, follow the devices.
        let with_disk = config().disk("path=/img/root.ext4,serial=r".parse().unwrap());
        let r = respond(
            &Request {
                method: "GET".into(),
                path: "/vm".into(),
                body: Vec::new(),
            },
            &vm,
            &with_disk,
        );
        assert!(
            r.body.ends_with(
                r#""devices":["0000:01:00.0"],"disks":["path=/img/root.ext4,serial=r"]}"#
            ),
            "{}",
            r.body
        );
        // The config in GET /vm is the VmConfig JSON: it reads back.
        let back: VmConfig = serde_json::from_value(v["config"].clone()).unwrap();
        assert_eq!(back, config());
    }

    #[test]
    fn pause_resume_and_conflicts() {
        let vm = FakeVm::new(VmState::Running);
        let (s, v, _) = call(&vm, "PUT", "/vm/pause", "");
        assert_eq!((s, v["state"].as_str()), (200, Some("paused")));
        let (s, v, _) = call(&vm, "PUT", "/vm/resume", "{}");
        assert_eq!((s, v["state"].as_str()), (200, Some("running")));
        *vm.state.lock().unwrap() = VmState::Stopped;
        for path in ["/vm/pause", "/vm/resume", "/vm/shutdown", "/vm/reboot"] {
            let (s, v, _) = call(&vm, "PUT", path, "");
            assert_eq!(s, 409, "{path}");
            assert!(v["error"].as_str().unwrap().contains("stopped"), "{v}");
        }
        *vm.state.lock().unwrap() = VmState::Starting;
        let (s, v, _) = call(&vm, "PUT", "/vm/pause", "");
        assert_eq!(s, 409);
        assert!(v["error"].as_str().unwrap().contains("retry"), "{v}");
    }

    #[test]
    fn shutdown_takes_an_optional_timeout() {
        let vm = FakeVm::new(VmState::Running);
        let (s, v, _) = call(&vm, "PUT", "/vm/shutdown", "");
        assert_eq!((s, v["timeout_s"].as_u64()), (202, Some(30)));
        let (s, v, _) = call(&vm, "PUT", "/vm/shutdown", "{\"timeout_s\": 5}");
        assert_eq!((s, v["timeout_s"].as_u64()), (202, Some(5)));
        assert_eq!(*vm.calls.lock().unwrap(), ["shutdown 30", "shutdown 5"]);
        let (_, _, r) = call(&vm, "PUT", "/vm/shutdown", "");
        assert_eq!(r.body, "{\"state\":\"running\",\"timeout_s\":30}");
        vm.calls.lock().unwrap().clear();
        for bad in [
            "{\"timeout_s\": -1}",
            "{\"timeout_s\": \"5\"}",
            "{\"timeout\": 5}",
            "[1]",
            "{",
            "\u{0}",
        ] {
            let (s, _, _) = call(&vm, "PUT", "/vm/shutdown", bad);
            assert_eq!(s, 400, "{bad}");
        }
        assert!(vm.calls.lock().unwrap().is_empty());
    }

    #[test]
    fn reboot_stops_the_vm_as_a_reset() {
        let vm = FakeVm::new(VmState::Running);
        let (s, v, _) = call(&vm, "PUT", "/vm/reboot", "");
        assert_eq!((s, v["state"].as_str()), (202, Some("stopping")));
        assert_eq!(*vm.calls.lock().unwrap(), ["reset"]);
        let (_, _, r) = call(&FakeVm::new(VmState::Paused), "PUT", "/vm/pause", "");
        assert_eq!(r.body, "{\"state\":\"paused\"}");
    }

    #[test]
    fn unknown_routes_wrong_methods_bad_json() {
        let vm = FakeVm::new(VmState::Running);
        let (s, v, _) = call(&vm, "GET", "/nope", "");
        assert_eq!(s, 404);
        assert!(v["error"].as_str().unwrap().contains("PUT /vm/pause"));
        let (s, _, _) = call(&vm, "GET", "/vm/", "");
        assert_eq!(s, 404);
        let (s, _, r) = call(&vm, "GET", "/vm/pause", "");
        assert_eq!(s, 405);
        assert_eq!(r.headers, [("Allow", "PUT".to_string())]);
        let (s, _, r) = call(&vm, "DELETE", "/vm", "");
        assert_eq!(s, 405);
        assert_eq!(r.headers, [("Allow", "GET".to_string())]);
        let (s, _, _) = call(&vm, "PUT", "/vm/pause", "not json");
        assert_eq!(s, 400);
        assert_eq!(
            vm.state(),
            VmState::Running,
            "a bad request changes nothing"
        );
        let (s, v, _) = call(&vm, "GET", "/\u{1b}[31m", "");
        assert_eq!(s, 404);
        assert!(!v["error"].as_str().unwrap().contains('\u{1b}'));
    }

    /// docs/openapi.json describes exactly the routes in `ROUTES`.
    #[test]
    fn openapi_file_matches_the_route_table() {
        let spec: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/openapi.json")).unwrap();
        assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "put", "post", "delete", "patch", "head", "options"]
                    .contains(&method.as_str())
                {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut routed: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed);
        // And docs/api.md mentions every route.
        let md = include_str!("../../../docs/api.md");
        for (m, p, _) in ROUTES {
            assert!(
                md.contains(&format!("{m} {p}")),
                "docs/api.md lacks {m} {p}"
            );
        }
    }
}
