//! One result of a host check: what was found and, when it is a problem, the one-line fix.
//! `zhitong check` prints findings; `zhitong run` stops on the first failing one with the
//! same text (one source for every message).

use std::fmt;

use devices::pci::Bdf;
use serde::Serialize;

/// In JSON: "ok", "warn", "fail".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but something deserves attention (or could not be verified).
    Warn,
    /// Passthrough cannot work until this is fixed.
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// In JSON (`zhitong check --json`) the fields in this order, `device` and `fix` null when
/// absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Which check: "kvm", "iommu", "vfio-modules", "interrupt-remapping", "memlock",
    /// "device", "driver", "iommu-group", "group-viable", "group-node", "bars".
    pub check: &'static str,
    pub status: Status,
    /// The device the finding is about, for per-device checks.
    #[serde(serialize_with = "crate::serde_bdf::option")]
    pub device: Option<Bdf>,
    /// What was found: the cause, when it is a problem.
    pub message: String,
    /// The command or step that fixes it (problems only).
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(check: &'static str, message: impl Into<String>) -> Self {
        Self {
            check,
            status: Status::Ok,
            device: None,
            message: message.into(),
            fix: None,
        }
    }

    pub fn fail(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            status: Status::Fail,
            fix: Some(fix.into()),
            ..Self::ok(check, message)
        }
    }

    pub fn warn(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            status: Status::Warn,
            ..Self::fail(check, message, fix)
        }
    }

    pub fn on(mut self, device: Bdf) -> Self {
        self.device = Some(device);
        self
    }

    pub fn is_fail(&self) -> bool {
        self.status == Status::Fail
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a finding is plain data")
    }
}

/// `zhitong check --json`: the verdict, then every finding in order.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub ready: bool,
    pub findings: &'a [Finding],
}

impl Report<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report is plain data")
    }
}

/// "cause; fix" on one line: what `zhitong run` prints when it stops.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.fix {
            Some(fix) => write!(f, "{}; {fix}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_json() {
        let f = Finding::fail("iommu", "the IOMMU is off", "boot with intel_iommu=on")
            .on("01:00.0".parse().unwrap());
        assert_eq!(f.to_string(), "the IOMMU is off; boot with intel_iommu=on");
        assert_eq!(
            f.to_json(),
            r#"{"check":"iommu","status":"fail","device":"0000:01:00.0","message":"the IOMMU is off","fix":"boot with intel_iommu=on"}"#
        );
        let ok = Finding::ok("kvm", "KVM \"works\"");
        assert_eq!(
            ok.to_json(),
            r#"{"check":"kvm","status":"ok","device":null,"message":"KVM \"works\"","fix":null}"#
        );
        let warn = Finding::warn("memlock", "line\nbreak\u{1}", "raise it");
        assert_eq!(
            warn.to_json(),
            r#"{"check":"memlock","status":"warn","device":null,"message":"line\nbreak\u0001","fix":"raise it"}"#
        );
    }

    #[test]
    fn check_report_json() {
        let findings = [
            Finding::ok("kvm", "/dev/kvm works"),
            Finding::fail("driver", "bound to nvme", "zhitong bind 0000:02:00.0")
                .on("02:00.0".parse().unwrap()),
        ];
        let report = Report {
            ready: false,
            findings: &findings,
        };
        assert_eq!(
            report.to_json(),
            r#"{"ready":false,"findings":[{"check":"kvm","status":"ok","device":null,"message":"/dev/kvm works","fix":null},{"check":"driver","status":"fail","device":"0000:02:00.0","message":"bound to nvme","fix":"zhitong bind 0000:02:00.0"}]}"#
        );
        for s in [Status::Ok, Status::Warn, Status::Fail] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
