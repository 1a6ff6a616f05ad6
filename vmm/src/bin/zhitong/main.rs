//! The `zhitong` command. Exit status: 0 when the guest powers off or reboots, the byte the
//! guest wrote to the guest exit port (0x4f4), 124 when `--timeout` stopped it, 1 when the
//! host or the guest fails, 2 for bad usage, 128+N when stopped by signal N. `devices`,
//! `check`, `bind` and `unbind` exit 0 on success (check: ready), 1 otherwise, 2 for bad usage.
//! `api` exits 0 when the server answers 2xx, 1 otherwise, 2 for bad usage. `test` exits 0
//! when every case met its expected status, 1 otherwise, 2 for a bad matrix, 128+N on signal N.

// The std print macros panic when their stream is a closed pipe (`zhitong run ... | head -1`
// with the reader gone). zhitong must still tear the VM down and exit with its status, so in
// this binary they write and ignore the error. Defined before the modules: they see these.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

mod api;
mod bind;
mod check;
mod cli;
mod devices;
mod flag_errors;
mod junit;
mod logger;
mod matrix;
mod signals;
mod terminal;
mod test_cmd;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cli::{Command, Parsed, RunArgs};
use vmm::api::ApiServer;
use vmm::seccomp::ThreadKind;
use vmm::{Console, Vm, VmConfig, VmExit, VmHandle, VmState};

fn main() {
    let start = Instant::now();
    logger::init();
    // A panic on a VM thread is reported once, as how the VM ended (VmExit::Panicked); the
    // default hook's lines would only repeat it. Elsewhere: one line, never a panic in turn.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        if name == "vm" || name.starts_with("vcpu") {
            log::debug!("{name}: {info}");
        } else {
            eprintln!("zhitong: the {name} thread panicked: {info}");
        }
    }));
    let code = match cli::parse(std::env::args_os()) {
        Parsed::Info(text) => {
            print!("{text}");
            0
        }
        Parsed::Usage(line) => {
            eprintln!("zhitong: {line}");
            2
        }
        Parsed::Run(parsed) => match parsed.command {
            Command::Run(args) => run(&args, start),
            Command::Devices(args) => devices::main(&args),
            Command::Check(args) => check::main(&args),
            Command::Bind(args) => bind::bind_main(&args),
            Command::Unbind(args) => bind::unbind_main(&args),
            Command::Api(args) => api::main(&args),
            Command::Test(args) => test_cmd::main(&args),
        },
    };
    std::process::exit(code);
}

fn run(args: &RunArgs, start: Instant) -> i32 {
    // Block SIGINT/SIGTERM before any thread exists so that only the signal thread sees them.
    let signals = match signals::block_stop_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("zhitong: cannot set up signal handling: {e}");
            return 1;
        }
    };
    let config = match args.to_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("zhitong: {}", flag_errors::message(&e.into()));
            return 2;
        }
    };
    // The socket exists before the VM does, so a control plane can connect as soon as
    // zhitong runs; a live socket at the path is refused before anything starts.
    let api_server = match &args.api_socket {
        Some(path) => match ApiServer::bind(path) {
            Ok(server) => Some((server, config.clone())),
            Err(e) => {
                eprintln!("zhitong: {e}");
                return 2;
            }
        },
        None => None,
    };
    let mut console = Console {
        output: Box::new(std::io::stdout()),
        input: stdin_for_console(),
    };
    if let Some(path) = &args.console_log {
        let file = match File::create(path) {
            Ok(file) => file,
            Err(e) => {
                eprintln!(
                    "zhitong: cannot create the console log {}: {e}; check the path given to --console-log",
                    path.display()
                );
                return 2;
            }
        };
        console = if args.console_timestamps {
            console.tee(vmm::Timestamped::new(file, start))
        } else {
            console.tee(file)
        };
    }
    let vm = match Vm::new(config, console, start) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("zhitong: {}", flag_errors::message(&e));
            return e.exit_code();
        }
    };
    let timeline = vm.timeline();

    let raw_terminal = terminal::RawMode::enter_if_tty();
    let result = vm.start().map(Arc::new).and_then(|handle| {
        // A signal that came before this is still pending (blocked): the signal thread gets it.
        let (for_signals, confine) = (handle.clone(), handle.clone());
        signals::forward_to(
            signals,
            move || drop(confine.confine(ThreadKind::Signals)),
            move |signal| for_signals.stop_for_signal(signal),
        );
        match &api_server {
            None => handle.wait(),
            Some((server, config)) => run_with_api(&handle, server, config),
        }
    });
    drop(raw_terminal);

    let code = match &result {
        Ok(exit) => report_exit(exit),
        Err(e) => {
            eprintln!("zhitong: {}", flag_errors::message(e));
            e.exit_code()
        }
    };
    if args.timings {
        eprintln!("{}", timeline.to_json());
    }
    let _ = std::io::stdout().flush();
    code
}

/// Run the VM while serving the API on a thread of its own; the socket file is removed when
/// `server` is dropped.
fn run_with_api(handle: &VmHandle, server: &ApiServer, config: &VmConfig) -> vmm::Result<VmExit> {
    std::thread::scope(|s| {
        let serving = std::thread::Builder::new()
            .name("api".into())
            .spawn_scoped(s, || {
                if handle.confine(ThreadKind::Api).is_ok() {
                    server.serve(handle, config)
                }
            });
        if let Err(e) = serving {
            log::warn!(
                "no API thread ({e}); {} is not served",
                server.path().display()
            );
            return;
        }
        while handle.state() != VmState::Stopped {
            std::thread::sleep(Duration::from_millis(20));
        }
        server.stop();
    });
    handle.wait()
}

/// The stderr line for an exit that is not a clean end, and the exit status.
fn report_exit(exit: &VmExit) -> i32 {
    match exit {
        VmExit::Poweroff | VmExit::Reset | VmExit::GuestStatus(_) => {}
        VmExit::Timeout(limit) => eprintln!(
            "zhitong: the guest was stopped after running for the --timeout of {}; let it power off sooner or raise --timeout",
            arch::units::format_duration(*limit)
        ),
        VmExit::Stopped { reason } => eprintln!("zhitong: guest stopped by {reason}"),
        VmExit::Signal { signal } => {
            eprintln!("zhitong: guest stopped by {}", signals::name(*signal))
        }
        VmExit::BootTimeout(limit) => eprintln!(
            "zhitong: the guest showed no sign of life within {}s (it never touched its serial port); check that --kernel boots on x86_64, or raise --boot-timeout (0 disables the check)",
            limit.as_secs()
        ),
        VmExit::Crashed { vcpu, reason } => {
            eprintln!("zhitong: guest crashed on vCPU {vcpu}: {reason}")
        }
        VmExit::Panicked { thread, message } => eprintln!(
            "zhitong: the {thread} thread panicked: {message}; the VM was stopped and its devices released (a zhitong bug: please report it)"
        ),
        VmExit::Seccomp(violation) => eprintln!("zhitong: {violation}"),
    }
    exit.exit_status()
}

/// A duplicate of stdin for the console (so the VM never closes fd 0).
fn stdin_for_console() -> Option<File> {
    let fd: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    Some(File::from(fd))
}
