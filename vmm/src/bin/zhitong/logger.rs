//! A minimal `log` backend: warnings and errors on stderr by default, more with
//! ZHITONG_LOG=info|debug|trace.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }
    fn log(&self, record: &Record) {
        // vfio-ioctls warns about optional IRQ indexes a device lacks (ERR, REQ); that is
        // normal, so its chatter only shows at debug level.
        if record.target().starts_with("vfio_ioctls") && log::max_level() < LevelFilter::Debug {
            return;
        }
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        // Never panic on a closed stderr (eprintln! would): logging happens on vCPU threads.
        let _ = writeln!(std::io::stderr(), "zhitong: {level}: {}", record.args());
    }
    fn flush(&self) {}
}

pub fn init() {
    let level = match std::env::var("ZHITONG_LOG").as_deref() {
        Ok("trace") => LevelFilter::Trace,
        Ok("debug") => LevelFilter::Debug,
        Ok("info") => LevelFilter::Info,
        Ok("error") => LevelFilter::Error,
        Ok("off") => LevelFilter::Off,
        _ => LevelFilter::Warn,
    };
    if log::set_logger(&StderrLogger).is_ok() {
        log::set_max_level(level);
    }
}
