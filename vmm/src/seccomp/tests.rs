use super::*;

/// Syscalls no zhitong thread has any business making once it runs.
const NEVER: &[i64] = &[
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_ptrace,
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_kill,
    libc::SYS_mount,
    libc::SYS_bpf,
    libc::SYS_process_vm_writev,
];

#[test]
fn every_kind_compiles_in_both_modes() {
    for mode in [SeccompMode::On, SeccompMode::Log] {
        let policy = Policy::new(mode).unwrap();
        assert_eq!(policy.filters.len(), ThreadKind::ALL.len());
        assert!(policy.filters.iter().all(|(_, p)| !p.is_empty()));
    }
    assert!(Policy::off().filters.is_empty());
}

#[test]
fn lists_are_sane() {
    for kind in ThreadKind::ALL {
        let rules = rules::allowed(kind).unwrap();
        for nr in rules.keys() {
            assert!(syscall_name(*nr).is_some(), "{kind:?}: {nr} has no name");
        }
        // The vsock worker (and so its launcher) connects to the host's Unix sockets.
        let vsock = matches!(kind, ThreadKind::VirtioVsock | ThreadKind::Launcher);
        for nr in NEVER {
            if vsock && [libc::SYS_socket, libc::SYS_connect].contains(nr) {
                let socket = rules.get(&libc::SYS_socket);
                assert!(socket.is_some_and(|r| r.len() == 1), "socket: AF_UNIX only");
                continue;
            }
            assert!(
                !rules.contains_key(nr),
                "{kind:?} allows {}",
                syscall_name(*nr).unwrap()
            );
        }
        // Every thread ends, and may be asked to drop privileges with the others.
        for nr in [libc::SYS_exit, libc::SYS_munmap, libc::SYS_setuid] {
            assert!(rules.contains_key(&nr), "{kind:?} lacks {nr}");
        }
        let ioctl = rules.contains_key(&libc::SYS_ioctl);
        assert_eq!(
            ioctl,
            matches!(
                kind,
                ThreadKind::Vm | ThreadKind::Vcpu | ThreadKind::Api | ThreadKind::DmaMap
            ),
            "{kind:?}"
        );
    }
    let vcpu = rules::allowed(ThreadKind::Vcpu).unwrap();
    assert!(vcpu.contains_key(&libc::SYS_pwrite64));
    assert!(!rules::allowed(ThreadKind::Timer)
        .unwrap()
        .contains_key(&libc::SYS_ioctl));
}

#[test]
fn modes_parse_and_print() {
    for mode in [SeccompMode::On, SeccompMode::Off, SeccompMode::Log] {
        assert_eq!(mode.to_string().parse::<SeccompMode>(), Ok(mode));
    }
    assert!("yes"
        .parse::<SeccompMode>()
        .unwrap_err()
        .contains("on, off or log"));
    assert_eq!(SeccompMode::default(), SeccompMode::On);
}

/// The real thing, on a thread of its own: the timer filter lets the thread run and end,
/// and refuses socket(2), which fails with EPERM and is recorded with the thread's name.
#[test]
fn a_forbidden_syscall_is_refused_and_recorded() {
    let wake = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let policy = Arc::new(
        Policy::new(SeccompMode::On)
            .unwrap()
            .wake_with(wake.try_clone().unwrap()),
    );
    let for_thread = policy.clone();
    let errno = std::thread::Builder::new()
        .name("test-timer".into())
        .spawn(move || {
            apply(ThreadKind::Timer, &for_thread).unwrap();
            // SAFETY: socket(2) takes no pointers.
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            assert_eq!(fd, -1);
            std::io::Error::last_os_error().raw_os_error()
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(errno, Some(libc::EPERM));
    let violation = policy.violation().unwrap();
    assert_eq!(violation.thread, "test-timer");
    assert_eq!(violation.cause, Cause::Syscall(libc::SYS_socket));
    assert_eq!(wake.read().unwrap(), 1);
    let line = violation.to_string();
    assert!(
        line.starts_with(
            "the test-timer thread made a syscall its seccomp filter forbids: socket (41); "
        ),
        "{line}"
    );
    assert!(!line.contains('\n'));
}

#[test]
fn an_off_policy_installs_nothing() {
    let policy = Arc::new(Policy::off());
    std::thread::spawn(move || {
        apply(ThreadKind::Vcpu, &policy).unwrap();
        // SAFETY: as above; the fd is closed at once.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0);
        unsafe { libc::close(fd) };
        assert_eq!(policy.violation(), None);
    })
    .join()
    .unwrap();
}
