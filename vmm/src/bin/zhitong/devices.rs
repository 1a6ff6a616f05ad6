//! `zhitong devices [--json]`.

use host::inventory::{inventory, render_json, render_table};
use host::Host;

use crate::cli::DevicesArgs;

pub fn main(args: &DevicesArgs) -> i32 {
    let host = Host::from_env();
    let devices = inventory(&host);
    if args.json {
        println!("{}", render_json(&devices));
    } else {
        print!("{}", render_table(&devices));
    }
    0
}
