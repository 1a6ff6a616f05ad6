//! `zhitong api`: one request to a running VM's API socket.

use crate::cli::{ApiAction, ApiArgs};
use vmm::api::client;

/// The request an action makes: (method, path, JSON body).
pub fn request_for(action: ApiAction) -> (&'static str, &'static str, Option<String>) {
    match action {
        ApiAction::Get => ("GET", "/vm", None),
        ApiAction::Pause => ("PUT", "/vm/pause", None),
        ApiAction::Resume => ("PUT", "/vm/resume", None),
        ApiAction::Shutdown { timeout } => (
            "PUT",
            "/vm/shutdown",
            timeout.map(|t| serde_json::json!({ "timeout_s": t }).to_string()),
        ),
        ApiAction::Reboot => ("PUT", "/vm/reboot", None),
    }
}

/// Exit status: 0 on a 2xx (the JSON on stdout), 1 when the server refuses or is gone (its
/// error line on stderr), 2 when the socket does not exist.
pub fn main(args: &ApiArgs) -> i32 {
    let (method, path, body) = request_for(args.action.unwrap_or(ApiAction::Get));
    match client::request(&args.socket, method, path, body.as_deref()) {
        Ok(r) if (200..300).contains(&r.status) => {
            println!("{}", r.body.trim_end());
            0
        }
        Ok(r) => {
            eprintln!("zhitong: {}", error_line(r.status, &r.body));
            1
        }
        Err(e) => {
            eprintln!("zhitong: {e}");
            if e.is_usage() {
                2
            } else {
                1
            }
        }
    }
}

/// The server's `{"error": ...}` line, or the status and body when it sent something else.
fn error_line(status: u16, body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            let body: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
            format!("the API answered {status}: {body}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_map_to_routes() {
        for action in [
            ApiAction::Get,
            ApiAction::Pause,
            ApiAction::Resume,
            ApiAction::Shutdown { timeout: None },
            ApiAction::Reboot,
        ] {
            let (m, p, _) = request_for(action);
            assert!(
                vmm::api::ROUTES
                    .iter()
                    .any(|(rm, rp, _)| (*rm, *rp) == (m, p)),
                "{m} {p} is not a route"
            );
        }
        assert_eq!(
            request_for(ApiAction::Shutdown { timeout: Some(7) }).2,
            Some("{\"timeout_s\":7}".into())
        );
    }

    #[test]
    fn error_lines() {
        assert_eq!(
            error_line(409, "{\"error\":\"the VM is stopped; start it\"}"),
            "the VM is stopped; start it"
        );
        assert_eq!(
            error_line(500, "oops\nmore"),
            "the API answered 500: oops more"
        );
    }

    #[test]
    fn missing_socket_is_usage() {
        let args = ApiArgs {
            socket: "/nonexistent/zhitong.sock".into(),
            action: None,
        };
        assert_eq!(main(&args), 2);
    }
}
