//! The VM config file parser (`vmm::config::file::parse`, TOML and JSON) and the
//! `zhitong test` matrix parser (`vmm::matrix::parse`).
//!
//! Input: byte 0 chooses (`% 3`) a TOML config, a JSON config or a matrix; the rest is the
//! text (inputs that are not UTF-8 are skipped: the file loaders read strings).
//!
//! Checked: an error is one line; a config that parses serializes (to JSON, as GET /vm
//! shows it, and to TOML) and parses back to the same value; a matrix's cases have valid,
//! distinct names, kernels under the matrix's directory, and configs that round-trip too.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vmm::config::file::parse;
use vmm::VmConfig;

fn round_trips(cfg: &VmConfig) {
    let json = serde_json::to_string(cfg).unwrap();
    assert_eq!(&parse(&json, false).unwrap(), cfg, "through JSON {json}");
    let toml = toml::to_string(cfg).unwrap();
    assert_eq!(&parse(&toml, true).unwrap(), cfg, "through TOML {toml}");
    // The checks Vm::new makes without KVM never panic, whatever the numbers.
    let _ = cfg.machine.validate(Some(u64::MAX));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    match mode % 3 {
        0 | 1 => match parse(text, mode % 3 == 0) {
            Ok(cfg) => round_trips(&cfg),
            Err(e) => assert!(!e.contains('\n'), "not one line: {e:?}"),
        },
        _ => match vmm::matrix::parse(text, Path::new("/m")) {
            Ok(cases) => {
                assert!(!cases.is_empty());
                for (i, case) in cases.iter().enumerate() {
                    let name = &case.name;
                    assert!(!name.is_empty() && !name.starts_with('.') && !name.contains('/'));
                    assert!(cases[..i].iter().all(|c| c.name != *name), "{name} twice");
                    assert!(case.config.kernel.path.starts_with("/"));
                    round_trips(&case.config);
                }
            }
            Err(e) => assert!(!e.contains('\n'), "not one line: {e:?}"),
        },
    }
});
