use super::*;

fn run_args(extra: &[&str]) -> Parsed {
    let mut args = vec!["zhitong", "run", "--kernel", "/k"];
    args.extend_from_slice(extra);
    parse(args)
}

fn usage(p: Parsed) -> String {
    match p {
        Parsed::Usage(msg) => msg,
        other => panic!("expected a usage error, got {other:?}"),
    }
}

#[test]
fn defaults() {
    let Parsed::Run(cli) = run_args(&[]) else {
        panic!()
    };
    let Command::Run(args) = cli.command else {
        panic!("not run")
    };
    let cfg = args.to_config().unwrap();
    assert_eq!(cfg.machine.vcpus, 1);
    assert_eq!(cfg.machine.memory_bytes, 512 << 20);
    assert_eq!(cfg.boot_timeout, Some(Duration::from_secs(60)));
    assert_eq!(cfg.kernel.cmdline, "");
    assert!(!args.timings);
}

#[test]
fn all_flags() {
    let p = run_args(&[
        "--initramfs",
        "/i",
        "--cmdline",
        "console=ttyS0 quiet",
        "--cpus",
        "2",
        "--memory",
        "4G",
        "--timings",
        "--boot-timeout",
        "0",
        "--device",
        "0000:01:00.0",
        "--device",
        "/sys/bus/pci/devices/0000:02:00.1,p2p=on,clique=3",
        "--timeout",
        "90s",
        "--console-log",
        "/tmp/c.log",
        "--console-timestamps",
        "--disk",
        "path=/img/root.ext4",
        "--disk",
        "path=/dev/sdb,readonly=on,serial=data-1",
        "--net",
        "tap=zt0,mac=52:54:00:12:34:56",
        "--vsock",
        "cid=7,socket=/run/v.sock",
    ]);
    let Parsed::Run(cli) = p else { panic!("{p:?}") };
    let Command::Run(args) = cli.command else {
        panic!("not run")
    };
    let cfg = args.to_config().unwrap();
    assert_eq!(cfg.kernel.initramfs, Some(PathBuf::from("/i")));
    assert_eq!(cfg.kernel.cmdline, "console=ttyS0 quiet");
    assert_eq!((cfg.machine.vcpus, cfg.machine.memory_bytes), (2, 4 << 30));
    assert!(args.timings);
    assert_eq!(cfg.boot_timeout, None);
    let devices: Vec<String> = cfg.devices.iter().map(|d| d.to_string()).collect();
    assert_eq!(devices, ["0000:01:00.0", "0000:02:00.1,p2p=on,clique=3"]);
    assert_eq!(cfg.timeout, Some(Duration::from_secs(90)));
    assert_eq!(args.console_log, Some(PathBuf::from("/tmp/c.log")));
    assert!(args.console_timestamps);
    let disks: Vec<String> = cfg.disks.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        disks,
        [
            "path=/img/root.ext4",
            "path=/dev/sdb,readonly=on,serial=data-1"
        ]
    );
}

#[test]
fn errors_are_one_line_with_the_fix() {
    let cases = [
        (
            run_args(&["--cpus", "0"]),
            "--cpus must be between 1 and 254, got 0",
        ),
        (
            run_args(&["--cpus", "300"]),
            "--cpus must be between 1 and 254",
        ),
        (run_args(&["--memory", "lots"]), "512M or 4G"),
        (run_args(&["--frobnicate"]), "--frobnicate"),
        (run_args(&["--device", "gpu0"]), "0000:01:00.0"),
        (
            run_args(&["--device", "01:00.0,rombar=0"]),
            "device option 'rombar' is unknown; the options are p2p=on|off and clique=0-15",
        ),
        (
            run_args(&["--device", "01:00.0,p2p=on,clique=16"]),
            "want clique=0-15",
        ),
        (run_args(&["--device", "01:00.0,clique=2"]), "needs p2p=on"),
        (run_args(&["--timeout", "soon"]), "90s"),
        (
            run_args(&["--disk", "/img/root.ext4"]),
            "disk '/img/root.ext4' has no key; write path=/img/root.ext4",
        ),
        (
            run_args(&["--disk", "path=/a,cache=none"]),
            "disk option 'cache' is unknown; the options are path=FILE, readonly=on|off and serial=STR",
        ),
        (
            run_args(&["--disk", "path=/a,readonly=1"]),
            "want readonly=on|off",
        ),
        (run_args(&["--net", "zt0"]), "write tap=zt0"),
        (run_args(&["--vsock", "cid=2,socket=/s"]), "want 3 to 4294967294"),
        (
            run_args(&["--net", "tap=zt0,mac=01:02:03:04:05:06"]),
            "is a multicast address",
        ),
        (run_args(&["--console-timestamps"]), "--console-log"),
        (parse(["zhitong", "run"]), "--kernel"),
        (parse(["zhitong", "fly"]), "fly"),
        (parse(["zhitong"]), "zhitong run --kernel PATH"),
    ];
    for (parsed, needle) in cases {
        let msg = usage(parsed);
        assert!(!msg.contains('\n'), "not one line: {msg}");
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
}

#[test]
fn security_flags() {
    let config = |extra: &[&str]| match run_args(extra) {
        Parsed::Run(Cli {
            command: Command::Run(args),
        }) => args.to_config(),
        other => panic!("{other:?}"),
    };
    let cfg = config(&["--seccomp", "log", "--user", "1000:100"]).unwrap();
    assert_eq!(cfg.security.seccomp, SeccompMode::Log);
    assert_eq!(cfg.security.user.map(|u| (u.uid, u.gid)), Some((1000, 100)));
    assert_eq!(config(&[]).unwrap().security, Default::default());
    for (user, needle) in [
        ("nobody", "id -u NAME"),
        ("1000:x", "UID:GID"),
        ("0", "root"),
    ] {
        let msg = crate::flag_errors::message(&config(&["--user", user]).unwrap_err().into());
        assert!(msg.starts_with("--user ") && msg.contains(needle), "{msg}");
    }
    assert!(usage(run_args(&["--seccomp", "yes"])).contains("on, off or log"));
}

#[test]
fn memory_with_huge_pages() {
    let config = |extra: &[&str]| match run_args(extra) {
        Parsed::Run(Cli {
            command: Command::Run(args),
        }) => args.to_config().unwrap(),
        other => panic!("{other:?}"),
    };
    let m = config(&["--memory", "4G,hugepages=1G"]).machine;
    assert_eq!(
        (m.memory_bytes, m.hugepages),
        (4 << 30, Some(HugePageSize::Size1G))
    );
    let m = config(&["--memory", "2G"]).machine;
    assert_eq!((m.memory_bytes, m.hugepages), (2 << 30, None));
    assert_eq!(m.dma_map, vmm::DmaMapStart::BesideBoot);
    let m = config(&["--memory", "2G,dma-map=before-boot,hugepages=2M"]).machine;
    assert_eq!(
        (m.memory_bytes, m.hugepages, m.dma_map),
        (
            2 << 30,
            Some(HugePageSize::Size2M),
            vmm::DmaMapStart::BeforeBoot
        )
    );
    for (arg, needle) in [
        (
            "4G,dma-map=early",
            "dma-map='early' (beside-boot or before-boot)",
        ),
        (
            "4G,dma-map=before-boot,dma-map=beside-boot",
            "dma-map is given twice",
        ),
        ("4G,hugepages=4M", "'4M' (2M or 1G)"),
        ("4G,huge=1G", "unknown memory option 'huge=1G'"),
        ("4G,hugepages=2M,hugepages=1G", "twice"),
        ("lots,hugepages=2M", "lots"),
    ] {
        let msg = usage(run_args(&["--memory", arg]));
        assert!(msg.contains(needle), "{arg}: {msg}");
    }
    let Parsed::Run(cli) = parse(["zhitong", "check", "--memory", "16G,hugepages=1G"]) else {
        panic!()
    };
    let Command::Check(args) = cli.command else {
        panic!()
    };
    assert_eq!(args.memory.hugepages, Some(HugePageSize::Size1G));
    // A size that is not a multiple of its pages: worded as the flag.
    let err = match run_args(&["--memory", "1536M,hugepages=1G"]) {
        Parsed::Run(Cli {
            command: Command::Run(args),
        }) => args.to_config().unwrap(),
        other => panic!("{other:?}"),
    }
    .machine
    .validate(None)
    .unwrap_err();
    assert_eq!(
        crate::flag_errors::message(&err.into()),
        "--memory 1536M is not a multiple of its 1G huge pages; round it, e.g. to 2G,hugepages=1G"
    );
}

#[test]
fn vfio_backend_flag() {
    let config = |extra: &[&str]| match run_args(extra) {
        Parsed::Run(Cli {
            command: Command::Run(args),
        }) => args.to_config().unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(config(&[]).vfio_backend, None);
    assert_eq!(
        config(&["--vfio-backend", "iommufd"]).vfio_backend,
        Some(VfioBackend::Iommufd)
    );
    assert_eq!(
        config(&["--vfio-backend", "legacy"]).vfio_backend,
        Some(VfioBackend::Legacy)
    );
    assert_eq!(config(&["--vfio-backend", "auto"]).vfio_backend, None);
    let msg = usage(run_args(&["--vfio-backend", "type1"]));
    assert!(
        msg.contains("'type1'") && msg.contains("legacy, iommufd or auto"),
        "{msg}"
    );
    assert!(!msg.trim_end().contains('\n'), "{msg}");
    let Parsed::Run(cli) = parse(["zhitong", "check", "--vfio-backend", "iommufd"]) else {
        panic!()
    };
    let Command::Check(args) = cli.command else {
        panic!()
    };
    assert_eq!(
        args.vfio_backend,
        Some(BackendChoice(Some(VfioBackend::Iommufd)))
    );
}

#[test]
fn host_commands() {
    let Parsed::Run(cli) = parse(["zhitong", "devices", "--json"]) else {
        panic!()
    };
    assert!(matches!(
        cli.command,
        Command::Devices(DevicesArgs { json: true })
    ));
    let Parsed::Run(cli) = parse([
        "zhitong", "check", "--device", "01:00.0", "--device", "01:00.1", "--memory", "16G",
    ]) else {
        panic!()
    };
    let Command::Check(args) = cli.command else {
        panic!()
    };
    assert_eq!(
        (args.devices.len(), args.memory.bytes, args.json),
        (2, 16 << 30, false)
    );
    let Parsed::Run(cli) = parse(["zhitong", "check"]) else {
        panic!()
    };
    let Command::Check(args) = cli.command else {
        panic!()
    };
    assert_eq!(args.memory.bytes, 512 << 20);
    let Parsed::Run(cli) = parse(["zhitong", "bind", "/sys/bus/pci/devices/0000:01:00.0"]) else {
        panic!()
    };
    let Command::Bind(args) = cli.command else {
        panic!()
    };
    assert_eq!(
        (args.bdf.to_string().as_str(), args.force),
        ("0000:01:00.0", false)
    );
    assert!(matches!(
        parse(["zhitong", "unbind", "01:00.0"]),
        Parsed::Run(Cli {
            command: Command::Unbind(_)
        })
    ));
    let cases = [
        (
            parse(["zhitong", "check", "--memory", "lots"]),
            "zhitong check --help",
        ),
        (parse(["zhitong", "bind"]), "zhitong bind --help"),
        (parse(["zhitong", "unbind", "gpu0"]), "0000:01:00.0"),
        (
            parse(["zhitong", "devices", "--all"]),
            "zhitong devices --help",
        ),
    ];
    for (parsed, needle) in cases {
        let msg = usage(parsed);
        assert!(!msg.contains('\n'), "not one line: {msg}");
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
}

#[test]
fn config_file_with_flags_on_top() {
    let path = std::env::temp_dir().join(format!("zhitong-cli-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[kernel]\npath = \"/file-kernel\"\ncmdline = \"quiet\"\n[machine]\nvcpus = 4\nmemory = \"2G\"\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let Parsed::Run(cli) = parse(["zhitong", "run", "--config", file, "--cpus", "2"]) else {
        panic!()
    };
    let Command::Run(args) = cli.command else {
        panic!()
    };
    let cfg = args.to_config().unwrap();
    assert_eq!(cfg.kernel.path, PathBuf::from("/file-kernel"));
    assert_eq!(cfg.kernel.cmdline, "quiet");
    assert_eq!((cfg.machine.vcpus, cfg.machine.memory_bytes), (2, 2 << 30));
    std::fs::remove_file(&path).unwrap();
    let Parsed::Run(cli) = parse(["zhitong", "run", "--config", "/nonexistent.json"]) else {
        panic!()
    };
    let Command::Run(args) = cli.command else {
        panic!()
    };
    let msg = crate::flag_errors::message(&args.to_config().unwrap_err().into());
    assert!(
        msg.contains("/nonexistent.json") && msg.contains("--config"),
        "{msg}"
    );
}

#[test]
fn api_socket_and_api_command() {
    let Parsed::Run(cli) = run_args(&["--api-socket", "/run/vm0.sock"]) else {
        panic!()
    };
    let Command::Run(args) = cli.command else {
        panic!()
    };
    assert_eq!(args.api_socket, Some(PathBuf::from("/run/vm0.sock")));
    let api = |extra: &[&str]| {
        let mut a = vec!["zhitong", "api", "--socket", "/s"];
        a.extend_from_slice(extra);
        match parse(a) {
            Parsed::Run(Cli {
                command: Command::Api(args),
            }) => args,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(api(&[]).action, None);
    assert_eq!(api(&[]).socket, PathBuf::from("/s"));
    assert_eq!(api(&["pause"]).action, Some(ApiAction::Pause));
    assert_eq!(
        api(&["shutdown", "--timeout", "5"]).action,
        Some(ApiAction::Shutdown { timeout: Some(5) })
    );
    assert_eq!(api(&["reboot"]).action, Some(ApiAction::Reboot));
    for (args, needle) in [
        (vec!["zhitong", "api"], "--socket"),
        (
            vec!["zhitong", "api", "--socket", "/s", "explode"],
            "zhitong api --help",
        ),
        (
            vec![
                "zhitong",
                "api",
                "--socket",
                "/s",
                "shutdown",
                "--timeout",
                "x",
            ],
            "zhitong api --help",
        ),
    ] {
        let msg = usage(parse(args));
        assert!(!msg.contains('\n'), "not one line: {msg}");
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
}

#[test]
fn test_command() {
    let Parsed::Run(Cli {
        command: Command::Test(args),
    }) = parse([
        "zhitong",
        "test",
        "m.toml",
        "--junit",
        "j.xml",
        "--logs",
        "l",
        "--filter",
        "gpu",
        "--fail-fast",
    ])
    else {
        panic!()
    };
    assert_eq!(args.matrix, PathBuf::from("m.toml"));
    assert_eq!(args.junit, Some(PathBuf::from("j.xml")));
    assert_eq!(args.logs, Some(PathBuf::from("l")));
    assert_eq!(args.filter.as_deref(), Some("gpu"));
    assert!(args.fail_fast);
    let msg = usage(parse(["zhitong", "test"]));
    assert!(
        msg.contains("zhitong test --help") && !msg.contains('\n'),
        "{msg}"
    );
}

#[test]
fn help_is_info() {
    assert!(matches!(parse(["zhitong", "--help"]), Parsed::Info(_)));
    assert!(matches!(
        parse(["zhitong", "run", "--help"]),
        Parsed::Info(_)
    ));
    assert!(matches!(parse(["zhitong", "--version"]), Parsed::Info(_)));
}
