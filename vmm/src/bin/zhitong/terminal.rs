//! Raw mode for an interactive console: keys go to the guest as typed (Ctrl-C included);
//! the terminal is restored when the guard drops.

use vmm_sys_util::terminal::Terminal;

pub struct RawMode;

impl RawMode {
    pub fn enter_if_tty() -> Option<RawMode> {
        let stdin = std::io::stdin();
        if !std::io::IsTerminal::is_terminal(&stdin) {
            return None;
        }
        stdin.lock().set_raw_mode().ok().map(|()| RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = std::io::stdin().lock().set_canon_mode();
    }
}
