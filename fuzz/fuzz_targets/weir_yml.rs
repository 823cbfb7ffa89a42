//! `weir.yml`: any text loads or is reported as problems with positions,
//! never a panic; every problem points inside the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |k: &str| match k {
        "SET" => Some("postgres://u:pw@h/db".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    match weir_config::Project::parse(Path::new("/p"), Path::new("/p/weir.yml"), text, &env) {
        Ok(_) => {}
        Err(weir_config::LoadError::Invalid(problems)) => {
            assert!(!problems.is_empty());
            // YAML breaks lines at LF, CRLF and a lone CR alike.
            // An error at the end of the input may point just past it.
            let lines = text.replace("\r\n", "\n").matches(['\n', '\r']).count() + 2;
            for p in problems {
                assert!(p.location.line >= 1 && p.location.line <= lines, "{p}");
                assert!(!p.to_string().contains("pw@"), "a secret in a message: {p}");
            }
        }
        Err(e) => panic!("parsing text cannot fail to read: {e}"),
    }
});
