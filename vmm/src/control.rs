//! The VMM's control loop: an event-manager loop on the main thread that waits for the VM
//! to end (an exit request from a vCPU, a device or the caller), feeds console input into
//! COM1, and enforces the boot timeout.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::serial::SerialDevice;
use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use crate::device_manager::PlatformDevices;
use crate::error::{Error, Result};
use crate::exit::{ExitChannel, VmExit};

type Subscriber = Box<dyn MutEventSubscriber + Send>;

/// Wakes the loop when an exit is requested.
struct ExitWatcher {
    exit: Arc<ExitChannel>,
}

impl MutEventSubscriber for ExitWatcher {
    fn process(&mut self, _: Events, _: &mut EventOps) {
        let _ = self.exit.event_fd().read();
    }
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.exit.event_fd(), EventSet::IN)) {
            log::error!("cannot watch the exit event: {e:?}");
        }
    }
}

/// Console input: reads only what the UART's receive FIFO can take, pauses while it is
/// full and resumes when the guest drains it.
struct ConsoleInput {
    input: File,
    serial: Arc<Mutex<SerialDevice>>,
    drained: EventFd,
    paused: bool,
}

impl ConsoleInput {
    fn input_events(&self) -> Events {
        Events::new(&self.input, EventSet::IN)
    }

    fn on_input(&mut self, ops: &mut EventOps) {
        let mut serial = self.serial.lock().unwrap();
        let space = serial.input_space();
        if space == 0 {
            let _ = ops.remove(self.input_events());
            self.paused = true;
            return;
        }
        let mut buf = [0u8; 64];
        let want = space.min(buf.len());
        match self.input.read(&mut buf[..want]) {
            Ok(0) => {
                // End of input: the guest keeps running, it just gets no more.
                let _ = ops.remove(self.input_events());
            }
            Ok(n) => {
                if let Err(e) = serial.enqueue_input(&buf[..n]) {
                    log::warn!("console input dropped: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("console input closed: {e}");
                let _ = ops.remove(self.input_events());
            }
        }
    }
}

impl MutEventSubscriber for ConsoleInput {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.drained.as_raw_fd() {
            let _ = self.drained.read();
            if self.paused {
                self.paused = false;
                let _ = ops.add(self.input_events());
            }
        } else if events
            .event_set()
            .intersects(EventSet::IN | EventSet::HANG_UP)
        {
            self.on_input(ops);
        }
    }
    fn init(&mut self, ops: &mut EventOps) {
        // Regular files and /dev/null cannot be polled: then there is simply no input.
        if ops.add(self.input_events()).is_err() {
            log::debug!("console input is not pollable; the guest gets no input");
        }
        let _ = ops.add(Events::new(&self.drained, EventSet::IN));
    }
}

/// Ends the run if the guest has not shown a sign of life when the timer fires.
struct BootWatchdog {
    timer: TimerFd,
    limit: Duration,
    alive: Arc<AtomicBool>,
    exit: Arc<ExitChannel>,
}

impl MutEventSubscriber for BootWatchdog {
    fn process(&mut self, _: Events, ops: &mut EventOps) {
        let _ = self.timer.wait();
        let _ = ops.remove(Events::new(&self.timer, EventSet::IN));
        if !self.alive.load(Ordering::Relaxed) {
            self.exit.request(VmExit::BootTimeout(self.limit));
        }
    }
    fn init(&mut self, ops: &mut EventOps) {
        let armed = self.timer.reset(self.limit, None);
        if armed.is_err() || ops.add(Events::new(&self.timer, EventSet::IN)).is_err() {
            log::warn!("boot watchdog unavailable");
        }
    }
}

/// What the control loop watches besides the exit channel.
pub struct ControlInputs {
    pub console_in: Option<File>,
    pub serial: Arc<Mutex<SerialDevice>>,
    pub input_drained: EventFd,
    pub boot_timeout: Option<Duration>,
    pub guest_alive: Arc<AtomicBool>,
}

impl ControlInputs {
    /// Console input for COM1 of `platform`, and the boot watchdog's limit.
    pub fn new(
        console_in: Option<File>,
        platform: &PlatformDevices,
        boot_timeout: Option<Duration>,
    ) -> Result<Self> {
        Ok(Self {
            console_in,
            serial: platform.serial.clone(),
            input_drained: platform
                .serial_signals
                .input_drained
                .try_clone()
                .map_err(Error::io("the COM1 input"))?,
            boot_timeout,
            guest_alive: platform.guest_alive.clone(),
        })
    }
}

/// Run the loop until an exit is requested; returns why.
pub fn run_until_exit(exit: &Arc<ExitChannel>, inputs: ControlInputs) -> Result<VmExit> {
    let mut manager = EventManager::<Subscriber>::new().map_err(Error::EventLoop)?;
    manager.add_subscriber(Box::new(ExitWatcher { exit: exit.clone() }));
    if let Some(input) = inputs.console_in {
        manager.add_subscriber(Box::new(ConsoleInput {
            input,
            serial: inputs.serial,
            drained: inputs.input_drained,
            paused: false,
        }));
    }
    if let Some(limit) = inputs.boot_timeout {
        let timer = TimerFd::new().map_err(Error::errno("the boot watchdog"))?;
        manager.add_subscriber(Box::new(BootWatchdog {
            timer,
            limit,
            alive: inputs.guest_alive,
            exit: exit.clone(),
        }));
    }
    loop {
        if let Some(reason) = exit.reason() {
            return Ok(reason);
        }
        manager.run_with_timeout(1000).map_err(Error::EventLoop)?;
    }
}
