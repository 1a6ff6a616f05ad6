//! `security.user`: after /dev/kvm, the VFIO devices and the images are open, and before the
//! guest runs, the process becomes an unprivileged user: no supplementary groups, that gid
//! and uid, no new privileges, no capabilities. Guest RAM's DMA mapping goes on beside the
//! boot as that user, without CAP_IPC_LOCK: the locked-memory limit is raised first by what
//! that mapping pins (the IOMMU drivers account pinned pages against RLIMIT_MEMLOCK).
//!
//! The kernel keeps credentials per thread; glibc's setgroups/setgid/setuid apply them to
//! every thread of the process (from a signal handler on each), which is why every seccomp
//! filter allows those three calls.

use crate::config::security::User;
use crate::error::{Error, Result};

/// Drop to `user`, then check from /proc/self/status that it took: the uid and gid in every
/// slot, and no capability left. `pinned_bytes` (guest RAM, when devices DMA into it) is
/// added to the locked-memory limit before the drop.
pub fn drop_to(user: User, pinned_bytes: u64) -> Result<()> {
    let failed = |step| Error::DropUser {
        user,
        step,
        source: std::io::Error::last_os_error(),
    };
    if pinned_bytes > 0 {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit read and write the one struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) != 0 {
                return Err(failed("getrlimit(RLIMIT_MEMLOCK)"));
            }
            let wanted = limit.rlim_cur.saturating_add(pinned_bytes);
            limit.rlim_cur = wanted;
            limit.rlim_max = limit.rlim_max.max(wanted);
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) != 0 {
                return Err(failed("setrlimit(RLIMIT_MEMLOCK)"));
            }
        }
    }
    // SAFETY: these calls take integers (and a null, empty group list); none touches memory
    // of ours.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(failed("setgroups([])"));
        }
        if libc::setgid(user.gid) != 0 {
            return Err(failed("setgid"));
        }
        if libc::setuid(user.uid) != 0 {
            return Err(failed("setuid"));
        }
    }
    forbid_new_privileges(user)?;
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|source| Error::DropUser {
            user,
            step: "reading /proc/self/status",
            source,
        })?;
    match check_status(&status, user) {
        Ok(()) => {
            log::debug!("now running as {user}");
            Ok(())
        }
        Err(what) => Err(Error::DropUser {
            user,
            step: "checking the result",
            source: std::io::Error::other(what),
        }),
    }
}

/// PR_SET_NO_NEW_PRIVS on the calling thread, and so on every thread it starts from now on:
/// no exec can give privileges back (setuid binaries, file capabilities). The flag is per
/// thread, so `Vm::start` sets it on its caller too, before the VM's threads exist.
pub fn forbid_new_privileges(user: User) -> Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Error::DropUser {
            user,
            step: "PR_SET_NO_NEW_PRIVS",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Whether a /proc/<pid>/status shows `user` in every uid and gid slot, no supplementary
/// group and no effective or permitted capability.
fn check_status(status: &str, user: User) -> std::result::Result<(), String> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .unwrap_or_default()
    };
    let all_are = |name: &str, want: u32| {
        let got = field(name);
        let ok = got.split_whitespace().count() == 4
            && got.split_whitespace().all(|id| id == want.to_string());
        if ok {
            Ok(())
        } else {
            Err(format!("{name} is {got:?}, not {want} throughout"))
        }
    };
    all_are("Uid", user.uid)?;
    all_are("Gid", user.gid)?;
    if !field("Groups").is_empty() {
        return Err(format!(
            "supplementary groups {:?} are left",
            field("Groups")
        ));
    }
    for caps in ["CapEff", "CapPrm"] {
        if u64::from_str_radix(field(caps), 16) != Ok(0) {
            return Err(format!("{caps} is {:?}, not 0", field(caps)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DROPPED: &str = "Name:\tzhitong\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\nGroups:\t\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\n";

    #[test]
    fn status_after_a_drop() {
        let user = User {
            uid: 1000,
            gid: 100,
        };
        assert_eq!(check_status(DROPPED, user), Ok(()));
        let other = User {
            uid: 1001,
            gid: 100,
        };
        assert!(check_status(DROPPED, other).unwrap_err().contains("Uid"));
        let saved_root =
            DROPPED.replace("Uid:\t1000\t1000\t1000\t1000", "Uid:\t1000\t1000\t0\t1000");
        assert!(check_status(&saved_root, user).is_err());
        let caps = DROPPED.replace("CapEff:\t0000000000000000", "CapEff:\t0000000000000400");
        assert!(check_status(&caps, user).unwrap_err().contains("CapEff"));
        let groups = DROPPED.replace("Groups:\t", "Groups:\t0 27");
        assert!(check_status(&groups, user).unwrap_err().contains("groups"));
    }
}
